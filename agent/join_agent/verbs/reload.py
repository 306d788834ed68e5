"""``join-agent reload``: have the running daemon read its config again, and say whether
it took it. What ``ExecReload=`` runs, so that ``systemctl reload`` fails when the agent
refuses the new config (systemd 252 has no reload result of its own for Type=notify).

The daemon records each SIGHUP's outcome in status.json (``reload``: a count, ok, the
refusal's sentence); this verb sends the signal and waits for the count to move.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from join_agent.config import loading
from join_agent.errors import ConfigError, JoinAgentError
from join_agent.host import platform
from join_agent.storage import state

if TYPE_CHECKING:
    from join_agent.core.records import StatusRecord

WAIT_SECONDS = 30.0


def _count(record: StatusRecord | None) -> int:
    return int(((record or {}).get("reload") or {}).get("count", 0))


def verdict(before: int, doc: StatusRecord | None, source: Path) -> tuple[bool, str] | None:
    """The daemon's answer to the SIGHUP sent when its count was ``before``, or None while it
    has not answered yet (pure)."""
    record = (doc or {}).get("reload") or {}
    if _count(doc) <= before:
        return None
    if record.get("ok"):
        return True, f"reloaded {source}"
    refusal = record.get("message")
    return False, f"the running agent refused the new config and keeps the old one: {refusal}"


def reload(
    path: Path,
    pid: int | None = None,
    *,
    read: Callable[[Path], StatusRecord | None] = state.read,
    wait_seconds: float = WAIT_SECONDS,
) -> tuple[bool, str]:
    """SIGHUP to the daemon of ``path``'s state_dir (which must be ``pid`` when given), then
    its verdict: (taken, a sentence)."""
    try:
        cfg = loading.load(path)
    except ConfigError as broken:
        # The daemon will refuse it too; told anyway, so that its log (at error) and its
        # STATUS= line say so where the operator looks. Only a daemon we can name for sure.
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
        raise JoinAgentError(
            f"{broken}; the running agent keeps the config it has"
            + ("" if pid is not None else " (nothing was sent to it)")
        ) from None
    state_dir = cfg.paths.state_dir
    running = state.running_agent(state_dir)
    if running is None:
        raise JoinAgentError(f"join-agent run is not running for {state_dir}: nothing to reload")
    if pid is not None and running != pid:
        raise JoinAgentError(
            f"the service's agent (pid {pid}) is not the one recorded in {state_dir} "
            f"(pid {running}): the config names another state_dir, which needs a restart "
            f"({platform.current().restart_command})"
        )
    before = _count(read(state_dir))
    os.kill(running, signal.SIGHUP)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
        answer = verdict(before, read(state_dir), cfg.source)
        if answer is not None:
            return answer
    return False, f"the agent (pid {running}) did not answer the reload within {wait_seconds:g}s"
