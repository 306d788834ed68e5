"""``join-agent renew``: ask the running daemon to renew now, or enroll in this process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from join_agent.config.model import Config
from join_agent.storage import state

if TYPE_CHECKING:
    from join_agent.core.records import StatusRecord

WAIT_SECONDS = 300.0


def _marks(doc: StatusRecord | None) -> tuple[object, object]:
    """What a finished renewal changes: on success the certificate (its serial; the time
    of the last success is to the second, and a renewal may finish in the second the one
    before it did), on failure the count of failures and the last error's time."""
    r = (doc or {}).get("renewal") or {}
    cert = (doc or {}).get("credentials") or {}
    err = (doc or {}).get("last_error")
    return (r.get("last_success"), cert.get("serial")), (
        r.get("failures"),
        err.get("at") if err else None,
    )


def outcome(
    before: tuple[object, object], doc: StatusRecord | None, pid: int
) -> tuple[bool, str] | None:
    """The renewal's outcome as ``doc`` shows it against ``before`` (its marks when it
    was asked for), or None while it has not finished (pure)."""
    if doc is None or (doc.get("renewal") or {}).get("in_progress"):
        return None
    success, failure = _marks(doc)
    if success != before[0]:
        cert = doc.get("credentials") or {}
        return True, (
            f"renewed by the running daemon (pid {pid}): serial {cert.get('serial')}, "
            f"valid until {cert.get('not_after')}"
        )
    if failure != before[1]:
        err = doc.get("last_error")
        message = err.get("message", "unknown error") if err else "unknown error"
        return False, f"join-agent: the renewal failed: {message}"
    return None


def renew(cfg: Config, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Renew now; returns (succeeded, a sentence for the operator)."""
    pid = state.running_agent(cfg.paths.state_dir)
    if pid is None:
        from join_agent.pki import compat
        from join_agent.worker import passes

        done = passes.enroll_once(cfg, environ)
        until = compat.not_valid_after(done.certificate)
        return (
            True,
            f"renewed (no daemon running): {done.version}, valid until {until:%Y-%m-%d %H:%M:%S}Z",
        )
    before = _marks(state.read(cfg.paths.state_dir))
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.2)
        finished = outcome(before, state.read(cfg.paths.state_dir), pid)
        if finished is not None:
            return finished
    from join_agent.host import platform

    return False, (
        f"join-agent: the daemon (pid {pid}) did not report a renewal within "
        f"{WAIT_SECONDS:g}s: see its log ({platform.current().log_command})"
    )
