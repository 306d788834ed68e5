"""``join-agent wait``: return once this node holds valid credentials and a kubeconfig.

The gate for whatever needs a joined node (join-agent-wait.service, which a kubelet run as
its own unit orders itself after). join-agent.service itself reports ready as soon as the
agent runs, so that a node whose CA is away still finishes booting; waiting for the join
is this verb's job, as waiting for the clock is systemd-time-wait-sync's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from join_agent.core.durations import format_duration

# `status` is cheap while the daemon runs (it reads status.json): a look every two seconds
# costs nothing, and a kubelet waiting behind this starts at most that late.
INTERVAL = dt.timedelta(seconds=2)


@dataclass(frozen=True)
class Look:
    """What one look at the node found: joined or not, and the sentence that says so."""

    joined: bool
    says: str


def until_joined(
    look: Callable[[], Look],
    *,
    timeout: dt.timedelta | None,
    monotonic: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[bool, str]:
    """Look until joined or ``timeout`` (None: for ever) has passed; (joined, a sentence)."""
    start = monotonic()
    while True:
        seen = look()
        if seen.joined:
            return True, seen.says
        waited = dt.timedelta(seconds=monotonic() - start)
        if timeout is not None and waited >= timeout:
            return False, f"not joined after {format_duration(waited)}: {seen.says}"
        left = None if timeout is None else (timeout - waited).total_seconds()
        sleep(INTERVAL.total_seconds() if left is None else min(left, INTERVAL.total_seconds()))


def look_at(report_state: str, node: str | None, not_after: str | None, problem: str) -> Look:
    """A status report reduced to what the gate needs (pure)."""
    if report_state == "valid":
        return Look(True, f"joined as {node}; the certificate is valid until {not_after}")
    return Look(False, problem or f"the credentials are {report_state}")
