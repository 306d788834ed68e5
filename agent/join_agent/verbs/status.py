"""``join-agent status``: what the node's credentials, kubelet and daemon look like now.

Two sources, one report. While the daemon runs and the files on disk are the ones it
recorded (same inode, size, mtime), ``<state_dir>/status.json`` is read and no PEM is
parsed, so the verb stays fast; otherwise the files are read and parsed here. Reading
is a thin edge (``snapshot``, ``gather``); judging (``judge``, ``overlay``) and
rendering are pure. The JSON keys are an API (docs/status.md): add keys, never rename.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from join_agent.config.model import Config
from join_agent.core import renewal
from join_agent.core.durations import format_duration
from join_agent.errors import KeyMismatch, StoreError
from join_agent.storage import guard, names, state

if TYPE_CHECKING:
    from cryptography import x509

    from join_agent.storage import store

SCHEMA = 1  # the `status --json` report's (status.json has its own: core.protocol.SCHEMA)
CAP = guard.PEM_CAP
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_BROKEN = 0, 1, 2  # and cli.STATUS_UNKNOWN


@dataclass(frozen=True)
class Snapshot:
    """What is on disk, read once."""

    credentials: Path
    pair: store.Pair | None
    pair_error: str | None
    kubeconfig_path: Path
    kubeconfig: dict[str, Any] | None
    kubeconfig_error: str | None
    ca_file: Path
    ca: tuple[x509.Certificate, ...]
    ca_error: str | None
    # What the kubeconfig's CA data must be: cluster.ca_bundle's certificates when set,
    # else ca_file's (None: not checked, e.g. a snapshot built by hand).
    cluster_ca: tuple[x509.Certificate, ...] | None = None
    key_mismatch: bool = False


@dataclass(frozen=True)
class Report:
    state: str  # "valid", "not-joined", "expired", "not-yet-valid", "mismatched", "unreadable"
    exit_code: int
    problems: tuple[str, ...]
    doc: dict[str, Any] = field(repr=False)


def snapshot(cfg: Config, credentials: Path) -> Snapshot:
    """Read and parse the files on disk (loads cryptography: the slow path)."""
    from join_agent.pki import compat
    from join_agent.storage import store
    from join_agent.worker import kubeconfig

    pair, pair_error, mismatch = None, None, False
    try:
        pair = store.PairStore(
            credentials.parent, credentials.name[: -len("-current.pem")]
        ).load_current()
    except StoreError as e:
        pair_error = str(e)
        mismatch = isinstance(e, KeyMismatch)
    kc, kc_error = None, None
    try:
        kc = kubeconfig.parse(guard.read_text(cfg.paths.kubeconfig, "the kubeconfig", cap=CAP))
    except FileNotFoundError:
        pass
    except OSError as e:
        kc_error = f"cannot read the kubeconfig {cfg.paths.kubeconfig}: {e.strerror}"
    except StoreError as e:
        kc_error = str(e)
    except ValueError as e:
        kc_error = f"the kubeconfig {cfg.paths.kubeconfig} is {e}"
    ca: tuple[x509.Certificate, ...] = ()
    ca_error = None
    try:
        ca = tuple(
            compat.load_pem_certificates(guard.read(cfg.paths.ca_file, "the CA file", cap=CAP))
        )
    except FileNotFoundError:
        pass
    except StoreError as e:
        ca_error = str(e)
    except (OSError, ValueError) as e:
        ca_error = f"cannot read the CA file {cfg.paths.ca_file}: {e}"
    # Without a readable ca_file there is nothing to compare the kubeconfig with; the
    # missing file is reported on its own.
    cluster_ca: tuple[x509.Certificate, ...] | None = ca or None
    if cfg.cluster.ca_bundle is not None:
        try:
            bundle = guard.read(cfg.cluster.ca_bundle, "cluster.ca_bundle", cap=CAP)
            cluster_ca = tuple(compat.load_pem_certificates(bundle))
        except (OSError, ValueError, StoreError):
            cluster_ca = None  # config trouble, reported by join; nothing to compare here
    return Snapshot(
        key_mismatch=mismatch,
        cluster_ca=cluster_ca,
        credentials=credentials,
        pair=pair,
        pair_error=pair_error,
        kubeconfig_path=cfg.paths.kubeconfig,
        kubeconfig=kc,
        kubeconfig_error=kc_error,
        ca_file=cfg.paths.ca_file,
        ca=ca,
        ca_error=ca_error,
    )


def facts_of(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as plain facts: the same shape the daemon records in status.json."""
    from join_agent.pki import compat, facts
    from join_agent.worker import kubeconfig

    f: dict[str, Any] = {
        "credentials": str(snap.credentials),
        "present": snap.pair is not None,
        "error": snap.pair_error,
        "key_mismatch": snap.key_mismatch,
        "issued_by_ca_file": None,
    }
    if snap.pair is not None:
        f.update(facts.certificate(snap.pair.certificate))
        if snap.ca:
            leaf = snap.pair.certificate
            f["issued_by_ca_file"] = any(compat.signed_by(leaf, c) for c in snap.ca)
    kc: dict[str, Any] = {
        "path": str(snap.kubeconfig_path),
        "present": snap.kubeconfig is not None,
        "error": snap.kubeconfig_error,
    }
    kc["ca_matches"] = None
    if snap.kubeconfig is not None:
        kc.update(kubeconfig.facts(snap.kubeconfig))
        if snap.cluster_ca is not None:
            embedded = kubeconfig.ca_certificates(snap.kubeconfig)
            kc["ca_matches"] = embedded is not None and set(embedded) == set(snap.cluster_ca)
    f["kubeconfig"] = kc
    f["ca_file"] = {
        "path": str(snap.ca_file),
        "present": bool(snap.ca),
        "subjects": [c.subject.rfc4514_string() for c in snap.ca],
        "error": snap.ca_error,
    }
    f["ca"] = [facts.authority(c) for c in snap.ca]
    return f


def assess(snap: Snapshot, *, server: str, now: dt.datetime) -> Report:
    """Judge a snapshot of the files at ``now`` (pure but for the conversion)."""
    return judge(facts_of(snap), server=server, now=now)


def judge(
    f: dict[str, Any],
    *,
    server: str,
    now: dt.datetime,
    node_name: str | None = None,
    clock_skew: dt.timedelta = dt.timedelta(0),
) -> Report:
    """Judge the credential facts at ``now`` (pure). ``node_name``: who this node should be;
    ``clock_skew``: how early a certificate may start, as ``join`` allowed it."""
    doc: dict[str, Any] = {"schema": SCHEMA, "checked_at": state.iso(now)}
    verdict, problems, doc["certificate"] = _judge_certificate(f, now, node_name, clock_skew)
    doc["node"] = doc["certificate"]["node"]
    kc_verdict, kc_problems, doc["kubeconfig"] = _judge_kubeconfig(f, server)
    verdict = _worse(verdict, kc_verdict)
    problems += kc_problems
    ca_file = f.get("ca_file") or {}
    doc["ca_file"] = {k: ca_file.get(k) for k in ("path", "present", "subjects")}
    doc["ca"] = list(f.get("ca") or [])
    if ca_file.get("error"):
        problems.append(ca_file["error"])
    elif f.get("present") and not ca_file.get("present"):
        problems.append(f"the CA file {ca_file.get('path')} is missing: run `join-agent join`")
    code = EXIT_HEALTHY if verdict == "valid" else EXIT_BROKEN
    if code == EXIT_HEALTHY and problems:
        code = EXIT_DEGRADED
    doc["state"] = verdict
    doc["problems"] = problems
    return Report(state=verdict, exit_code=code, problems=tuple(problems), doc=doc)


def _judge_certificate(  # noqa: PLR0911 - one verdict per rule, checked in order
    f: dict[str, Any], now: dt.datetime, node_name: str | None, clock_skew: dt.timedelta
) -> tuple[str, list[str], dict[str, Any]]:
    creds = f["credentials"]
    # Every key is always there (null when unknown): scripts index without guarding.
    doc: dict[str, Any] = {
        "path": creds,
        "present": bool(f.get("present")),
        **dict.fromkeys(_CERT_KEYS),
    }
    if f.get("error"):
        verdict = "mismatched" if f.get("key_mismatch") else "unreadable"
        return verdict, [f["error"]], doc
    if not f.get("present"):
        return "not-joined", [f"no certificate at {creds}: run `join-agent join`"], doc
    nb, na = state.parse_iso(f["not_before"]), state.parse_iso(f["not_after"])
    doc.update({k: f.get(k) for k in _CERT_KEYS if k != "seconds_left"})
    doc["seconds_left"] = int((na - now).total_seconds())
    if f.get("issued_by_ca_file") is False:
        return (
            "mismatched",
            [
                f"the certificate was not issued by a CA in {f['ca_file']['path']} "
                f"(issuer {f.get('issuer')}): run `join-agent join`"
            ],
            doc,
        )
    if node_name and doc["node"] != node_name:
        return (
            "mismatched",
            [
                f"the certificate is for node {doc['node']!r}, but this node is "
                f"{node_name!r}: run `join-agent join`"
            ],
            doc,
        )
    if now >= na:
        return (
            "expired",
            [
                f"the certificate expired {format_duration(now - na)} ago: run "
                "`join-agent join` (or start the join-agent service)"
            ],
            doc,
        )
    if now + clock_skew < nb:
        return (
            "not-yet-valid",
            [f"the certificate is valid only from {state.iso(nb)}: check this node's clock"],
            doc,
        )
    return "valid", [], doc


def _judge_kubeconfig(f: dict[str, Any], server: str) -> tuple[str, list[str], dict[str, Any]]:
    creds = f["credentials"]
    kc = f.get("kubeconfig") or {}
    doc: dict[str, Any] = {
        "path": kc.get("path"),
        "present": bool(kc.get("present")),
        **{k: kc.get(k) for k in _KUBECONFIG_KEYS},
    }
    if kc.get("error"):
        return "unreadable", [kc["error"]], doc
    if not kc.get("present"):
        return "not-joined", [f"no kubeconfig at {kc.get('path')}: run `join-agent join`"], doc
    problems = []
    if doc["client_certificate"] != creds or doc["client_key"] != creds:
        problems.append(f"the kubeconfig does not point at {creds}")
    if server and doc["server"] != server:
        problems.append(f"the kubeconfig names server {doc['server']}, the config {server}")
    if kc.get("ca_matches") is False:
        problems.append(
            "the kubeconfig's CA data differs from the cluster CA "
            "(ca_file or cluster.ca_bundle): run `join-agent join`"
        )
    return ("mismatched" if problems else "valid"), problems, doc


def renew_at(f: dict[str, Any]) -> dt.datetime | None:
    """The certificate's renewal deadline, as the daemon's renewal policy draws it."""
    cert = renewal.held(f)
    return None if cert is None else renewal.renew_at(cert)


def overlay(
    report: Report,
    *,
    recorded: dict[str, Any] | None,
    agent_running: bool,
    manage_kubelet: bool,
    healthz: str | None,
    overdue_after: dt.timedelta,
    now: dt.datetime,
    facts: dict[str, Any],
) -> Report:
    """Add what the daemon knows (pure); anything it reports wrong makes a healthy node
    "degraded" (exit 1), never better than the files say."""
    doc = dict(report.doc)
    problems = list(report.problems)
    rec = recorded or {}
    agent = rec.get("agent") or {}
    doc["agent"] = {
        "running": agent_running,
        "pid": agent.get("pid") if agent_running else None,
        "version": agent.get("version") if agent_running else None,
        "state": agent.get("state") if agent_running else "not running",
        "started_at": agent.get("started_at") if agent_running else None,
    }
    doc["signer"] = rec.get("signer")
    renewal = dict(rec.get("renewal") or {})
    deadline = renew_at(facts)
    renewal["renew_at"] = None if deadline is None else state.iso(deadline)
    for key in (
        "next_attempt", "failures", "last_attempt", "last_success", "last_ok", "reason",
        "in_progress",
    ):  # fmt: skip
        renewal.setdefault(key, None)
    doc["renewal"] = renewal
    doc["last_error"] = rec.get("last_error")
    kubelet: dict[str, Any] = {"managed": manage_kubelet}
    for key in (
        "state", "pid", "restarts", "consecutive_failures", "since", "last_exit",
        "last_error", "next_start",
    ):  # fmt: skip
        kubelet[key] = (rec.get("kubelet") or {}).get(key) if agent_running else None
    kubelet["healthz"] = healthz
    doc["kubelet"] = kubelet

    degraded: list[str] = []
    if not agent_running:
        degraded.append(
            "join-agent run is not running, so nothing renews the certificate: "
            "start the service (systemctl start join-agent)"
        )
    if report.state == "valid" and deadline is not None and now > deadline + overdue_after:
        degraded.append(f"renewal is overdue (it was due {format_duration(now - deadline)} ago)")
    if rec.get("renewal", {}).get("last_ok") is False and rec.get("last_error"):
        err = rec["last_error"]
        degraded.append(f"the last renewal failed at {err.get('at')}: {err.get('message')}")
    reload = rec.get("reload") or {}
    if agent_running and reload.get("ok") is False:
        # The config on disk is not what runs: on illumos (svcadm refresh cannot fail) this
        # is where an operator sees it.
        degraded.append(
            f"the running agent refused the config on disk at {reload.get('at')} and runs "
            f"the previous one: {reload.get('message')}"
        )
    if manage_kubelet and agent_running and report.state == "valid":
        if kubelet["state"] not in ("starting", "running") or kubelet["consecutive_failures"]:
            degraded.append(_kubelet_trouble(kubelet))
        elif healthz is not None and healthz != "ok":
            degraded.append(f"the kubelet's healthz check failed: {healthz}")
    problems += degraded
    code = report.exit_code
    if code == EXIT_HEALTHY and degraded:
        code = EXIT_DEGRADED
    doc["problems"] = problems
    doc["health"] = {EXIT_HEALTHY: "healthy", EXIT_DEGRADED: "degraded"}.get(code, "broken")
    return Report(state=report.state, exit_code=code, problems=tuple(problems), doc=doc)


def _kubelet_trouble(k: dict[str, Any]) -> str:
    """One sentence for a kubelet that is not steadily up."""
    failures = k.get("consecutive_failures") or 0
    if k.get("state") == "backoff":
        text = f"the kubelet keeps exiting ({failures} time(s) in a row)"
    elif failures:
        text = f"the kubelet exited {failures} time(s) in a row and is {k.get('state')} again"
    else:
        text = f"the kubelet is {k.get('state') or 'not started'}"
    last = k.get("last_error") or (
        None if k.get("last_exit") is None else f"exit status {k['last_exit']}"
    )
    if last:
        text += f"; last: {last}"
    if k.get("state") == "backoff" and k.get("next_start"):
        text += f"; next start at {k['next_start']}"
    return text


def gather(cfg: Config, now: dt.datetime, *, probe: bool = True) -> Report:
    """The whole status: recorded facts when they are fresh, the files otherwise."""
    credentials = cfg.paths.pki_dir / names.CLIENT_CURRENT
    recorded, damage = state.read_checked(cfg.paths.state_dir)
    try:
        agent_running = state.running_agent(cfg.paths.state_dir) is not None
    except StoreError as e:  # a pidfile someone else could write: no daemon to believe
        agent_running, damage = False, str(e)
    if damage is not None:
        recorded = None  # judged from the files on disk alone
    f = _fresh_facts(recorded, credentials, cfg) if agent_running else None
    source = "daemon"
    if f is None:
        f = facts_of(snapshot(cfg, credentials))
        source = "files"
    if cfg.signer_kind == "kubernetes" and f.get("issued_by_ca_file") is False:
        # The CSR API may sign with a per-signer CA (since 1.19) that ca_file, the CA of
        # the API server, does not hold: not a mismatch.
        f = {**f, "issued_by_ca_file": None}
    base = judge(
        f,
        server=cfg.cluster.server,
        now=now,
        node_name=expected_node_name(cfg),
        clock_skew=cfg.renewal.clock_skew,
    )
    healthz = None
    kubelet_state = ((recorded or {}).get("kubelet") or {}).get("state")
    if probe and cfg.kubelet.manage and agent_running and kubelet_state in ("starting", "running"):
        healthz = probe_healthz(cfg.kubelet.healthz_url)
    report = overlay(
        base,
        recorded=recorded,
        agent_running=agent_running,
        manage_kubelet=cfg.kubelet.manage,
        healthz=healthz,
        overdue_after=max(cfg.renewal.retry_max, dt.timedelta(minutes=15)),
        now=now,
        facts=f,
    )
    report.doc["source"] = source
    if damage is not None:
        report = _with_part(
            report, "source", source, [f"{damage}: judged from the files on disk alone"]
        )
    if cfg.signer_kind == "kubernetes" and cfg.kubernetes.serving:
        report = with_serving(report, _serving_facts(cfg, recorded, agent_running))
    recorded_extras = (recorded or {}).get("certificates")
    if agent_running and isinstance(recorded_extras, list):
        report = with_certificates(report, recorded_extras)
    elif cfg.certificates or (cfg.paths.state_dir / names.CERTIFICATES_DIR).is_dir():
        from join_agent.worker import certificates

        report = with_certificates(report, certificates.facts_on_disk(cfg, now))
    return report


def with_certificates(report: Report, extras: list[dict[str, Any]]) -> Report:
    """Add the ``[[certificate]]`` reports (pure): one that is not valid, or whose action
    keeps failing, makes the node degraded."""
    problems = []
    for c in extras:
        name = c.get("name")
        err = (c.get("last_error") or {}).get("message")
        if c.get("state") in ("expired", "failing", "none"):
            problems.append(f"certificate {name} is {c.get('state')}" + (f": {err}" if err else ""))
        action = c.get("action") or {}
        if action.get("pending") and action.get("failures"):
            how = f"exit status {action['exit']}" if action.get("exit") is not None else "no exit"
            problems.append(
                f"certificate {name}: its {action.get('kind')} action failed "
                f"{action.get('failures')} time(s) ({how}): "
                f"{str(action.get('output') or '')[-200:]}"
            )
    return _with_part(report, "certificates", extras, problems)


def _with_part(report: Report, key: str, value: object, problems: list[str]) -> Report:
    """``report`` with ``doc[key] = value``; any of ``problems`` makes a healthy node
    degraded (pure)."""
    doc = {**report.doc, key: value}
    code = report.exit_code
    if problems:
        doc["problems"] = [*report.problems, *problems]
        if code == EXIT_HEALTHY:
            code = EXIT_DEGRADED
            doc["health"] = "degraded"
    return Report(
        state=report.state, exit_code=code, problems=(*report.problems, *problems), doc=doc
    )


def _serving_facts(
    cfg: Config, recorded: dict[str, Any] | None, agent_running: bool
) -> dict[str, Any]:
    served = (recorded or {}).get("serving")
    if agent_running and isinstance(served, dict):
        return served
    from join_agent.worker import serving

    return serving.facts_on_disk(cfg)


def with_serving(report: Report, served: dict[str, Any]) -> Report:
    """Add the serving certificate (pure). Pending approval is normal, not a problem: the
    kubelet serves its self-signed certificate meanwhile; a refusal or an error is."""
    problems = []
    if served.get("state") in ("denied", "error"):
        problems.append(f"serving certificate: {served.get('message')}")
    return _with_part(report, "serving", served, problems)


def expected_node_name(cfg: Config) -> str | None:
    """The name this node would enroll as (config, else the hostname)."""
    if cfg.node.name:
        return cfg.node.name
    import socket

    return socket.gethostname().strip().lower() or None


def _fresh_facts(
    recorded: dict[str, Any] | None, credentials: Path, cfg: Config
) -> dict[str, Any] | None:
    """The daemon's recorded facts if every file is still the one it recorded."""
    f = (recorded or {}).get("credentials")
    if not isinstance(f, dict) or not f.get("present"):
        return None
    ids = f.get("ids") or {}
    for name, path in (
        ("credentials", credentials),
        ("kubeconfig", cfg.paths.kubeconfig),
        ("ca_file", cfg.paths.ca_file),
    ):
        if ids.get(name) != state.file_identity(path):
            return None
    return f


def probe_healthz(url: str, timeout: float = 2.0) -> str | None:
    """GET the kubelet's healthz: "ok", or a short reason; None when not configured.

    A plain HTTP/1.0 request over a socket: http.client would triple the time of a
    fast ``status`` for one loopback GET.
    """
    if not url:
        return None
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path or '/healthz'} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while len(answer) < 4096 and (chunk := sock.recv(4096)):
                answer += chunk
    except OSError as e:
        return f"{url}: {e.strerror or e}"
    head, _, body = answer.partition(b"\r\n\r\n")
    fields = head.split(b"\r\n", 1)[0].split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        return f"{url}: not an HTTP answer"
    code = int(fields[1])
    text = body[:80].decode("ascii", "replace").strip()
    return "ok" if code == 200 else f"{url}: HTTP {code} {text}"


def render_json(report: Report) -> str:
    return json.dumps(report.doc, indent=2, sort_keys=True) + "\n"


def render_text(report: Report) -> str:
    """What a person reads at a glance."""
    d = report.doc
    cert = d["certificate"]
    health = d.get("health")
    lines = [f"State:        {report.state}" + (f", {health}" if health else "")]
    if d.get("node"):
        lines.append(f"Node:         {d['node']}")
    if cert.get("present"):
        renewal = d.get("renewal") or {}
        left = _left(cert["seconds_left"])
        if report.state == "not-yet-valid":  # not "VALID: n days" beside that verdict
            left = f"NOT VALID YET: from {cert['not_before']}"
        expires = f"Expires:      {cert['not_after'][:10]} ({left}"
        if renewal.get("renew_at") and cert["seconds_left"] > 0 and report.state != "not-yet-valid":
            expires += f", {_renews(renewal['renew_at'], d['checked_at'])}"
        lines += [
            expires + ")",
            f"Certificate:  {cert['path']}",
            f"Subject:      {cert['subject']}",
            f"Issuer:       {cert['issuer']}",
            f"SANs:         {', '.join(cert['sans']['dns'] + cert['sans']['ip']) or '(none)'}",
            f"Serial:       {cert['serial']}",
        ]
    for ca in d.get("ca") or []:
        lines.append(f"CA:           {ca['subject']} {ca['pin']} (until {ca['not_after'][:10]})")
    kc = d["kubeconfig"]
    if kc.get("present"):
        lines.append(f"Kubeconfig:   {kc['path']} (server {kc.get('server') or '?'})")
    lines += _extra_lines(d)
    lines += _daemon_lines(d)
    err = d.get("last_error")
    if err and (d.get("renewal") or {}).get("last_ok") is not False:
        # A failure that is not the latest outcome: history, not a problem (those are below).
        lines.append(f"Last error:   {err.get('message')} (at {err.get('at')}, recovered since)")
    lines += [f"Problem:      {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


def _extra_lines(d: dict[str, Any]) -> list[str]:
    """The serving certificate and the [[certificate]] tables."""
    lines: list[str] = []
    served = d.get("serving")
    if served:
        text = str(served.get("state"))
        if served.get("state") == "pending":
            text = f"serving certificate {served.get('message')}"
        elif served.get("present"):
            text += f", valid until {str(served.get('not_after'))[:10]}"
        lines.append(f"Serving:      {text}")
    for c in d.get("certificates") or []:
        text = f"{c.get('name')}: {c.get('state')}"
        if c.get("not_after"):
            text += f", until {str(c['not_after'])[:16]}Z"
        action = c.get("action") or {}
        if action.get("kind"):
            ok = "pending" if action.get("pending") else "ok" if action.get("ok") else "-"
            text += f", {action['kind']} {ok}"
        if c.get("state") == "removed":
            text += f" ({c.get('message')})"
        lines.append(f"Certificate:  {text}")
    return lines


def _daemon_lines(d: dict[str, Any]) -> list[str]:
    lines = []
    kubelet = d.get("kubelet")
    if kubelet and kubelet.get("managed") and not (d.get("agent") or {}).get("running"):
        lines.append("Kubelet:      not supervised (join-agent run is not running)")
    elif kubelet and kubelet.get("managed"):
        parts = [kubelet.get("state") or "unknown"]
        if kubelet.get("pid"):
            parts.append(f"pid {kubelet['pid']}")
        if kubelet.get("restarts") is not None:
            parts.append(f"{kubelet['restarts']} restarts")
        if kubelet.get("since"):
            parts.append(f"since {kubelet['since']}")
        if kubelet.get("healthz"):
            parts.append(f"healthz {kubelet['healthz']}")
        lines.append(f"Kubelet:      {', '.join(parts)}")
    agent = d.get("agent")
    if agent:
        parts = ["running" if agent["running"] else "NOT RUNNING"]
        if agent.get("pid"):
            parts.append(f"pid {agent['pid']}")
        if agent.get("version"):
            parts.append(f"version {agent['version']}")
        lines.append(f"Agent:        {', '.join(parts)}")
    return lines


def _left(seconds: int) -> str:
    if seconds <= 0:
        return f"EXPIRED {format_duration(dt.timedelta(seconds=-seconds))} ago"
    if seconds >= 86400:
        return f"VALID: {seconds // 86400} days"
    return f"VALID: {format_duration(dt.timedelta(seconds=seconds))}"


def _renews(renew_at: str, checked_at: str) -> str:
    delta = state.parse_iso(renew_at) - state.parse_iso(checked_at)
    if delta.total_seconds() <= 0:
        return "renewal due"
    days = int(delta.total_seconds() // 86400)
    return f"renews in {days} days" if days >= 1 else f"renews in {format_duration(delta)}"


_CERT_KEYS = (
    "node", "subject", "issuer", "serial", "sans", "not_before", "not_after", "seconds_left",
)  # fmt: skip
_KUBECONFIG_KEYS = ("current_context", "server", "user", "client_certificate", "client_key")
_ORDER = ("valid", "not-yet-valid", "mismatched", "expired", "not-joined", "unreadable")


def _worse(a: str, b: str) -> str:
    return a if _ORDER.index(a) >= _ORDER.index(b) else b
