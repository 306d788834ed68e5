"""``join-agent status``: what the node's credentials, kubelet and daemon look like now.

Two sources, one report. While the daemon runs and the files on disk are the ones it
recorded (same inode, size, mtime), ``<state_dir>/status.json`` is read and no PEM is
parsed, so the verb stays fast; otherwise the files are read and parsed here. Reading
is a thin edge (``snapshot``, ``gather``); judging (``judge``, ``overlay``) and
rendering are pure. The JSON keys are an API (docs/status.md): add keys, never rename.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from join_agent.config.model import Config
from join_agent.core import judging
from join_agent.errors import KeyMismatch, StoreError
from join_agent.storage import guard, names, state

CAP = guard.PEM_CAP

if TYPE_CHECKING:
    from cryptography import x509

    from join_agent.storage import store


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


def assess(snap: Snapshot, *, server: str, now: dt.datetime) -> judging.Report:
    """Judge a snapshot of the files at ``now`` (pure but for the conversion)."""
    return judging.judge(facts_of(snap), server=server, now=now)


def gather(cfg: Config, now: dt.datetime, *, probe: bool = True) -> judging.Report:
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
    base = judging.judge(
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
    report = judging.overlay(
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
        report = judging.with_part(
            report, "source", source, [f"{damage}: judged from the files on disk alone"]
        )
    if cfg.signer_kind == "kubernetes" and cfg.kubernetes.serving:
        report = judging.with_serving(report, _serving_facts(cfg, recorded, agent_running))
    recorded_extras = (recorded or {}).get("certificates")
    if agent_running and isinstance(recorded_extras, list):
        report = judging.with_certificates(report, recorded_extras)
    elif cfg.certificates or (cfg.paths.state_dir / names.CERTIFICATES_DIR).is_dir():
        from join_agent.worker import certificate_files

        report = judging.with_certificates(report, certificate_files.facts_on_disk(cfg, now))
    return report


def _serving_facts(
    cfg: Config, recorded: dict[str, Any] | None, agent_running: bool
) -> dict[str, Any]:
    served = (recorded or {}).get("serving")
    if agent_running and isinstance(served, dict):
        return served
    from join_agent.worker import serving

    return serving.facts_on_disk(cfg)


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
