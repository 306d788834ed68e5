"""``join-agent status``: what the node's credentials look like now.

Reading the files is a thin edge (``snapshot``); judging and rendering are pure.
The JSON keys are an API: add keys, never rename or remove them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from . import compat, kubeconfig, store
from .config import Config
from .durations import format_duration
from .errors import StoreError

SCHEMA = 1
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_BROKEN = 0, 1, 2


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


@dataclass(frozen=True)
class Report:
    state: str  # "valid", "not-joined", "expired", "not-yet-valid", "mismatched", "unreadable"
    exit_code: int
    problems: tuple[str, ...]
    doc: dict[str, Any] = field(repr=False)


def snapshot(cfg: Config, credentials: Path) -> Snapshot:
    pair, pair_error = None, None
    try:
        pair = store.PairStore(
            credentials.parent, credentials.name[: -len("-current.pem")]
        ).load_current()
    except StoreError as e:
        pair_error = str(e)
    kc, kc_error = None, None
    try:
        kc = kubeconfig.parse(cfg.paths.kubeconfig.read_text())
    except FileNotFoundError:
        pass
    except OSError as e:
        kc_error = f"cannot read the kubeconfig {cfg.paths.kubeconfig}: {e.strerror}"
    except ValueError as e:
        kc_error = f"the kubeconfig {cfg.paths.kubeconfig} is {e}"
    ca: tuple[x509.Certificate, ...] = ()
    ca_error = None
    try:
        ca = tuple(compat.load_pem_certificates(cfg.paths.ca_file.read_bytes()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        ca_error = f"cannot read the CA file {cfg.paths.ca_file}: {e}"
    return Snapshot(
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


def assess(snap: Snapshot, *, server: str, now: dt.datetime) -> Report:
    """Judge a snapshot at ``now`` (pure)."""
    problems: list[str] = []
    doc: dict[str, Any] = {"schema": SCHEMA, "checked_at": _iso(now), "node": None}
    # Every key is always there (null when unknown): scripts index without guarding.
    cert_doc: dict[str, Any] = {
        "path": str(snap.credentials),
        "present": snap.pair is not None,
        **dict.fromkeys(_CERT_KEYS),
    }
    state = "valid"
    if snap.pair_error:
        state = "mismatched" if "does not match" in snap.pair_error else "unreadable"
        problems.append(snap.pair_error)
    elif snap.pair is None:
        state = "not-joined"
        problems.append(f"no certificate at {snap.credentials}: run `join-agent join`")
    else:
        cert = snap.pair.certificate
        nb, na = compat.not_valid_before(cert), compat.not_valid_after(cert)
        cert_doc.update(_describe(cert, now))
        doc["node"] = cert_doc["node"]
        if now >= na:
            state = "expired"
            problems.append(
                f"the certificate expired {format_duration(now - na)} ago: run "
                "`join-agent join` (or start the join-agent service)"
            )
        elif now < nb:
            state = "not-yet-valid"
            problems.append(
                f"the certificate is valid only from {_iso(nb)}: check this node's clock"
            )
    doc["certificate"] = cert_doc

    kc_doc: dict[str, Any] = {
        "path": str(snap.kubeconfig_path),
        "present": snap.kubeconfig is not None,
        **dict.fromkeys(_KUBECONFIG_KEYS),
    }
    if snap.kubeconfig_error:
        problems.append(snap.kubeconfig_error)
        state = _worse(state, "unreadable")
    elif snap.kubeconfig is None:
        problems.append(f"no kubeconfig at {snap.kubeconfig_path}: run `join-agent join`")
        state = _worse(state, "not-joined")
    else:
        kc_doc.update(_kubeconfig_facts(snap.kubeconfig))
        if kc_doc.get("client_certificate") != str(snap.credentials) or kc_doc.get(
            "client_key"
        ) != str(snap.credentials):
            problems.append(f"the kubeconfig does not point at {snap.credentials}")
            state = _worse(state, "mismatched")
        if server and kc_doc.get("server") != server:
            problems.append(
                f"the kubeconfig names server {kc_doc.get('server')}, the config {server}"
            )
            state = _worse(state, "mismatched")
    doc["kubeconfig"] = kc_doc
    doc["ca_file"] = {
        "path": str(snap.ca_file),
        "present": bool(snap.ca),
        "subjects": [c.subject.rfc4514_string() for c in snap.ca],
    }
    if snap.ca_error:
        problems.append(snap.ca_error)
    code = EXIT_HEALTHY if state == "valid" else EXIT_BROKEN
    if code == EXIT_HEALTHY and problems:
        code = EXIT_DEGRADED
    doc["state"] = state
    doc["problems"] = problems
    return Report(state=state, exit_code=code, problems=tuple(problems), doc=doc)


def render_json(report: Report) -> str:
    return json.dumps(report.doc, indent=2, sort_keys=True) + "\n"


def render_text(report: Report) -> str:
    d = report.doc
    cert = d["certificate"]
    lines = [f"state:        {report.state}"]
    if "node" in d:
        lines.append(f"node:         {d['node']}")
    if cert.get("present"):
        lines += [
            f"subject:      {cert['subject']}",
            f"issuer:       {cert['issuer']}",
            f"SANs:         {', '.join(cert['sans']['dns'] + cert['sans']['ip']) or '(none)'}",
            f"valid until:  {cert['not_after']} ({_left(cert['seconds_left'])})",
            f"certificate:  {cert['path']}",
        ]
    kc = d["kubeconfig"]
    if kc.get("present"):
        lines.append(f"kubeconfig:   {kc['path']} (server {kc.get('server', '?')})")
    if d["ca_file"]["present"]:
        lines.append(f"CA file:      {d['ca_file']['path']}")
    lines += [f"problem:      {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


def _left(seconds: int) -> str:
    if seconds <= 0:
        return f"EXPIRED {format_duration(dt.timedelta(seconds=-seconds))} ago"
    return (
        f"{seconds // 86400} days left"
        if seconds >= 86400
        else f"{format_duration(dt.timedelta(seconds=seconds))} left"
    )


def _describe(cert: x509.Certificate, now: dt.datetime) -> dict[str, Any]:
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    name = str(cn[0]) if cn else ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = list(san.get_values_for_type(x509.DNSName))
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    na = compat.not_valid_after(cert)
    return {
        "node": name.removeprefix("system:node:"),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "sans": {"dns": dns, "ip": ips},
        "not_before": _iso(compat.not_valid_before(cert)),
        "not_after": _iso(na),
        "seconds_left": int((na - now).total_seconds()),
    }


def _kubeconfig_facts(doc: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {"current_context": doc.get("current-context")}
    ctx = _named(doc.get("contexts"), facts["current_context"], "context")
    cluster = _named(doc.get("clusters"), ctx.get("cluster"), "cluster")
    user = _named(doc.get("users"), ctx.get("user"), "user")
    facts["server"] = cluster.get("server")
    facts["user"] = ctx.get("user")
    facts["client_certificate"] = user.get("client-certificate")
    facts["client_key"] = user.get("client-key")
    return facts


def _named(items: object, name: object, inner: str) -> dict[str, Any]:
    if isinstance(items, list):
        for item in items:
            if (
                isinstance(item, dict)
                and item.get("name") == name
                and isinstance(item.get(inner), dict)
            ):
                return dict(item[inner])
    return {}


_CERT_KEYS = (
    "node", "subject", "issuer", "serial", "sans", "not_before", "not_after", "seconds_left",
)  # fmt: skip
_KUBECONFIG_KEYS = ("current_context", "server", "user", "client_certificate", "client_key")
_ORDER = ("valid", "not-yet-valid", "mismatched", "expired", "not-joined", "unreadable")


def _worse(a: str, b: str) -> str:
    return a if _ORDER.index(a) >= _ORDER.index(b) else b


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
