"""Waiting for a certificate request to be decided: watch it (or poll it, when the API
server refuses watches) until it is issued, denied or failed, or csr_timeout passes.

tenacity repeats the rounds (one watch, one read) with the signer's own clock and sleep,
so that a test can drive them; the pace between rounds is ``Pace``'s.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import tenacity
from tenacity.wait import wait_base

from join_agent import log
from join_agent.core.durations import format_duration
from join_agent.errors import CAResponseError, JoinAgentError, TransportError
from join_agent.net import transport
from join_agent.signers.kubernetes import csr_api

if TYPE_CHECKING:
    from join_agent.signers.kubernetes.signer import Auth

_log = log.get_logger("join_agent.kubernetes")

WATCH_SECONDS = 300  # one watch at most this long; then look again (a proxy may cut it)
POLL_SECONDS = 2.0  # polling pace when the server refuses watches


class RequestDenied(JoinAgentError):
    """The CSR was denied or failed: retrying the same request would get the same."""


class ApprovalTimeout(JoinAgentError):
    """Nobody approved the CSR within csr_timeout."""


@dataclass
class Pace:
    """How the request is being watched, and when the current round started."""

    end: float  # the monotonic time csr_timeout runs out
    watching: bool = True  # until the server refuses a watch: then polling
    started: float = 0.0

    def pause(self, now: float) -> float:
        """Between rounds: the polling pace, or at least a second between two watches (a
        watch that ends at once, as a proxy may make it, must not become a tight loop)."""
        pause = POLL_SECONDS if not self.watching else 1.0 - (now - self.started)
        return max(0.0, min(pause, self.end - now))


class _PaceWait(wait_base):
    """tenacity's wait strategy: the Pace's pause, on the signer's clock."""

    def __init__(self, pace: Pace, monotonic: Callable[[], float]) -> None:
        self.pace, self.monotonic = pace, monotonic

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self.pace.pause(self.monotonic())


@dataclass(frozen=True)
class Approval:
    """How to look at a request (``read``: one GET) and how long to wait for it."""

    read: Callable[[httpx.Client, Auth, str], csr_api.Outcome | None]
    limits: transport.Limits
    timeout: dt.timedelta
    monotonic: Callable[[], float]
    sleep: Callable[[float], None]

    def wait(self, client: httpx.Client, auth: Auth, name: str, what: str) -> csr_api.Outcome:
        """The request once issued; RequestDenied or ApprovalTimeout otherwise."""
        pace = Pace(end=self.monotonic() + self.timeout.total_seconds())
        rounds = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda outcome: outcome is None),
            stop=lambda _state: self.monotonic() >= pace.end,
            wait=_PaceWait(pace, self.monotonic),
            sleep=self.sleep,
            retry_error_callback=lambda _state: None,  # out of time: the last look below
        )
        settled = rounds(self._round, client, auth, name, what, pace)
        if settled is not None:
            return settled
        last = self.read(client, auth, name)  # one last look: it may have just been issued
        if last is not None and last.state in ("issued", "denied", "failed"):
            return settle(last, name)
        raise ApprovalTimeout(
            f"certificate request {name} was not approved and signed within "
            f"{format_duration(self.timeout)}: approve it with `kubectl certificate "
            f"approve {name}`, or grant the controller manager's auto-approval "
            "(docs/kubernetes/rbac.yaml)"
        )

    def _round(
        self, client: httpx.Client, auth: Auth, name: str, what: str, pace: Pace
    ) -> csr_api.Outcome | None:
        """One watch (while the server allows watches) and one read; None: not settled."""
        pace.started = self.monotonic()
        remaining = pace.end - pace.started
        if pace.watching and remaining > 0:
            seconds = min(remaining, WATCH_SECONDS)
            try:
                done = transport.stream_lines(
                    client,
                    csr_api.watch_url(auth.server, name, max(1, math.ceil(seconds))),
                    self.limits,
                    what=what,
                    seconds=seconds,
                    on_line=lambda line: settled_event(line, name, what),
                    headers=auth.headers(),
                )
            except transport.StreamRefused as e:
                _log.info("watch_refused", status=e.response.status, msg="polling instead")
                pace.watching = False
                done = None
            except TransportError as e:
                _log.warning("watch_broken", reason=str(e))
                done = None
            if done is not None:
                return settle(done, name)
        polled = self.read(client, auth, name)
        if polled is None:
            raise CAResponseError(f"{what} lost certificate request {name} (404 Not Found)")
        if polled.state in ("issued", "denied", "failed"):
            return settle(polled, name)
        return None


def settled_event(line: bytes, name: str, what: str) -> csr_api.Outcome | None:
    """A watch event that decides ``name``, or None to read on."""
    kind, obj = csr_api.watch_event(line, what)
    if kind not in ("ADDED", "MODIFIED"):
        return None  # ERROR (e.g. an expired resourceVersion), BOOKMARK: look again
    found = csr_api.outcome(obj, what)
    if found.name != name or found.state in ("pending", "approved"):
        return None
    return found


def settle(found: csr_api.Outcome, name: str) -> csr_api.Outcome:
    """An issued request; RequestDenied for a denied or failed one."""
    if found.state == "issued":
        return found
    detail = ": ".join(x for x in (found.reason, found.message) if x) or "no reason given"
    if found.state == "denied":
        raise RequestDenied(
            f"certificate request {name} was denied ({detail}): ask the cluster's "
            "administrator why, then run `join-agent renew`"
        )
    raise RequestDenied(f"the signer failed certificate request {name} ({detail})")
