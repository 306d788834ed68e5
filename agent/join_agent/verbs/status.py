"""``join-agent status``: what the node's credentials, kubelet and daemon look like now.

Two sources, one report. While the daemon runs and the files on disk are the ones it
recorded (same inode, size, mtime), ``<state_dir>/status.json`` is read and no PEM is
parsed, so the verb stays fast; otherwise the files are read and parsed (worker/
inspection.py, loaded only then). This module reads; core/judging.py judges and
verbs/status_text.py renders, both pure. The JSON keys are an API (docs/status.md).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from join_agent.config.model import Config
from join_agent.core import judging
from join_agent.errors import StoreError
from join_agent.storage import names, state

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts
    from join_agent.core.records import ServingReport, StatusRecord


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
        from join_agent.worker import inspection

        f = inspection.facts_of(inspection.snapshot(cfg, credentials))
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
            report, {"source": source}, [f"{damage}: judged from the files on disk alone"]
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
    cfg: Config, recorded: StatusRecord | None, agent_running: bool
) -> ServingReport:
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
    recorded: StatusRecord | None, credentials: Path, cfg: Config
) -> CredentialFacts | None:
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
