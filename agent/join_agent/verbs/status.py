"""``join-agent status``: what the node's credentials, kubelet and daemon look like now.

Two sources, one report. While the daemon runs and the files on disk are the ones it
recorded (same inode, size, mtime), ``<state_dir>/status.json`` is read and no PEM is
parsed, so the verb stays fast; otherwise the files are read and parsed (worker/
inspection.py, loaded only then). This module reads; core/judging.py judges and
verbs/status_text.py renders, both pure. The JSON keys are an API (docs/status.md).

What it judges with is ``StatusSettings`` (storage/runtime.py), not the whole config: the
fast path (verbs/status_fast.py) takes them from the running daemon's record without
loading the config, and asks for the config (``config``) only where the files must be
read; there it gives up and the config is loaded after all. No pathlib, dataclasses or
socket module here: they would cost the fast path more than judging does.
"""

from __future__ import annotations

import datetime as dt
import os

from join_agent import TYPE_CHECKING
from join_agent.core import daemon_view, judging
from join_agent.errors import StoreError
from join_agent.storage import names, state

if TYPE_CHECKING:
    from collections.abc import Callable

    from join_agent.config.model import Config
    from join_agent.core.protocol import CredentialFacts
    from join_agent.core.records import (
        HealthzTarget,
        ServingReport,
        StatusRecord,
        StatusSettings,
    )


def gather(cfg: Config, now: dt.datetime, *, probe: bool = True) -> judging.Report:
    """The whole status of the node ``cfg`` configures."""
    from join_agent.storage import runtime

    return gather_for(runtime.settings_of(cfg), now, probe=probe, config=lambda: cfg)


def gather_for(
    s: StatusSettings, now: dt.datetime, *, probe: bool = True, config: Callable[[], Config]
) -> judging.Report:
    """The whole status: recorded facts when they are fresh, the files otherwise (read
    with the config that ``config`` returns)."""
    from join_agent.host import platform

    defaults = platform.current()
    credentials = os.path.join(s["pki_dir"], names.CLIENT_CURRENT)
    recorded, damage = state.read_checked(s["state_dir"])
    try:
        agent_running = state.running_agent(s["state_dir"]) is not None
    except StoreError as e:  # a pidfile someone else could write: no daemon to believe
        agent_running, damage = False, str(e)
    if damage is not None:
        recorded = None  # judged from the files on disk alone
    f = _fresh_facts(recorded, credentials, s) if agent_running else None
    source = "daemon"
    if f is None:
        from pathlib import Path

        from join_agent.worker import inspection

        f = inspection.facts_of(inspection.snapshot(config(), Path(credentials)))
        source = "files"
    if s["signer_kind"] == "kubernetes" and f.get("issued_by_ca_file") is False:
        # The CSR API may sign with a per-signer CA (since 1.19) that ca_file, the CA of
        # the API server, does not hold: not a mismatch.
        f = {**f, "issued_by_ca_file": None}
    base = judging.judge(
        f,
        server=s["server"],
        now=now,
        node_name=expected_node_name(s["node_name"]),
        clock_skew=dt.timedelta(seconds=s["clock_skew"]),
    )
    healthz = None
    kubelet_state = ((recorded or {}).get("kubelet") or {}).get("state")
    if probe and s["manage_kubelet"] and agent_running and kubelet_state in ("starting", "running"):
        healthz = probe_healthz(s["healthz"])
    report = daemon_view.overlay(
        base,
        recorded=recorded,
        agent_running=agent_running,
        manage_kubelet=s["manage_kubelet"],
        healthz=healthz,
        overdue_after=dt.timedelta(seconds=s["overdue_after"]),
        now=now,
        facts=f,
        start_hint=defaults.start_command,
        log_hint=defaults.log_command,
    )
    report.doc["source"] = source
    if damage is not None:
        report = judging.with_part(
            report, {"source": source}, [f"{damage}: judged from the files on disk alone"]
        )
    return _with_extras(
        report, s, now, recorded=recorded, agent_running=agent_running, config=config
    )


def _with_extras(
    report: judging.Report,
    s: StatusSettings,
    now: dt.datetime,
    *,
    recorded: StatusRecord | None,
    agent_running: bool,
    config: Callable[[], Config],
) -> judging.Report:
    """The serving certificate and the [[certificate]] tables, when there are any."""
    if s["serving"]:
        report = judging.with_serving(report, _serving_facts(config, recorded, agent_running))
    recorded_extras = (recorded or {}).get("certificates")
    if agent_running and isinstance(recorded_extras, list):
        report = judging.with_certificates(report, recorded_extras)
    elif s["certificates"] or os.path.isdir(os.path.join(s["state_dir"], names.CERTIFICATES_DIR)):
        from join_agent.worker import certificate_files

        report = judging.with_certificates(report, certificate_files.facts_on_disk(config(), now))
    return report


def _serving_facts(
    config: Callable[[], Config], recorded: StatusRecord | None, agent_running: bool
) -> ServingReport:
    served = (recorded or {}).get("serving")
    if agent_running and isinstance(served, dict):
        return served
    from join_agent.worker import serving

    return serving.facts_on_disk(config())


def expected_node_name(configured: str | None) -> str | None:
    """The name this node would enroll as (config, else the hostname)."""
    if configured:
        return configured
    # gethostname(3) is uname(2)'s nodename: the same, without the socket module's import.
    return os.uname().nodename.strip().lower() or None


def _fresh_facts(
    recorded: StatusRecord | None, credentials: str, s: StatusSettings
) -> CredentialFacts | None:
    """The daemon's recorded facts if every file is still the one it recorded."""
    f = (recorded or {}).get("credentials")
    if not isinstance(f, dict) or not f.get("present"):
        return None
    ids = f.get("ids") or {}
    for name, path in (
        ("credentials", credentials),
        ("kubeconfig", s["kubeconfig"]),
        ("ca_file", s["ca_file"]),
    ):
        if ids.get(name) != state.file_identity(path):
            return None
    return f


def probe_healthz(target: HealthzTarget | None, timeout: float = 2.0) -> str | None:
    """GET the kubelet's healthz: "ok", or a short reason; None when not configured.

    A plain HTTP/1.0 request on the C socket module: http.client would triple the time of
    a fast ``status`` for one loopback GET, and the socket module's import alone (its enums,
    selectors) costs more than the request (docs/benchmarks.md).
    """
    if target is None:
        return None
    url = target["url"]
    request = f"GET {target['path']} HTTP/1.0\r\nHost: {target['host']}\r\n\r\n".encode()
    try:
        answer = _exchange(target["host"], target["port"], request, timeout)
    except OSError as e:
        return f"{url}: {e.strerror or e}"
    head, _, body = answer.partition(b"\r\n\r\n")
    fields = head.split(b"\r\n", 1)[0].split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        return f"{url}: not an HTTP answer"
    code = int(fields[1])
    text = body[:80].decode("ascii", "replace").strip()
    return "ok" if code == 200 else f"{url}: HTTP {code} {text}"


def _exchange(host: str, port: int, request: bytes, timeout: float) -> bytes:
    """Send ``request`` to ``host`` and read at most 4 KiB of the answer; each address is
    tried in turn until one accepts, as socket.create_connection connects."""
    import _socket

    # A str host is encoded with the idna codec (another import); an ASCII one needs none.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    sock, error = None, None
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            break
        except OSError as e:
            sock.close()
            sock, error = None, e
    if sock is None:
        raise error or OSError("getaddrinfo returns an empty list")
    try:
        sock.sendall(request)
        answer = b""
        while len(answer) < 4096 and (chunk := sock.recv(4096)):
            answer += chunk
    finally:
        sock.close()
    return answer
