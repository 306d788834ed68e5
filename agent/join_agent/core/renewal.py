"""The renewal policy: when the node's certificate is next asked for, and how each outcome
moves that time. One object holds the whole rule, so that the daemon (which acts on it),
``status`` (which shows the deadline) and bench/herd.py (which runs a fleet of them in
virtual time) use the same one.

The rule, in the order it applies (``next_attempt``):

1. A certificate is due at a point drawn in 70-90 % of its lifetime, one draw per
   certificate, seeded by its serial: stable across restarts of the agent, different from
   node to node (``schedule.renew_at``, which ``status`` calls too without loading the rest
   of the policy). Without a certificate, or when a renewal was requested (the node's
   addresses changed, the config did), it is due now.
2. After failures, capped and jittered backoff (schedule.next_attempt), one draw per
   attempt from this process's own salt, so a fleet that failed in the same second does not
   retry in the same second; a certificate still valid gets one more try before it expires.
   Without a certificate the cap is ``join_retry_max``: a node that is not in the cluster
   at all waits at most that long after its CA comes back, a renewal up to ``retry_max``.
3. A first enrollment waits for the splay drawn at the first look at an unjoined node.
4. After a denied request, no new one for ``after_denial``, unless a renewal was requested.
5. Someone who asks (SIGUSR1, ``join-agent renew``) gets an attempt now, whatever waits.

Every change of state goes through a method (``request``, ``ask``, ``begin``,
``succeeded``, ``failed``, ``first_look``); nothing here reads a clock or draws a random
number of its own: ``now`` and draws come in.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

from join_agent.core import schedule
from join_agent.core.protocol import ErrorKind, ErrorRecord
from join_agent.core.schedule import Held, renew_at

# A request someone denied is not asked again at the pace of an outage: each attempt would
# leave one more CSR for the administrator to deny. `join-agent renew` asks at once.
AFTER_DENIAL = dt.timedelta(hours=1)


def identity_mismatch(
    held_name: str | None,
    held_addresses: Sequence[str],
    name: str,
    addresses: Sequence[str],
    *,
    addresses_in_certificate: bool,
) -> str | None:
    """Why the certificate no longer names this node, or None. ``addresses_in_certificate``
    is False for the Kubernetes client signer, which takes no SANs: only the name counts."""
    want = sorted(addresses)
    if held_name != name:
        return f"the node's name changed ({held_name} -> {name})"
    if addresses_in_certificate and sorted(held_addresses) != want:
        return f"the node's addresses changed ({', '.join(want)})"
    return None


@dataclass
class RenewalPolicy:
    """Where the renewal cycle of one certificate stands, and what comes next."""

    retry_min: dt.timedelta
    retry_max: dt.timedelta
    salt: float  # this process's own, in [0, 1)
    join_retry_max: dt.timedelta | None = None  # the cap without a certificate (None: retry_max)
    after_denial: dt.timedelta = AFTER_DENIAL
    failures: int = 0
    last_attempt: dt.datetime | None = None
    last_success: dt.datetime | None = None
    last_error: ErrorRecord | None = None
    last_ok: bool | None = None
    requested: bool = False  # renew early (addresses, config), not before the retry floor
    asked: bool = False  # someone asked: the next attempt now, whatever waits
    reason: str = ""
    splay_until: dt.datetime | None = None
    held_until: dt.datetime | None = None  # after a denial: no new request before this

    # -------------------------------------------------------------- the decision

    def next_attempt(self, now: dt.datetime, held: Held | None) -> dt.datetime:
        """When to try next; ``now`` means at once."""
        deadline = None if (held is None or self.requested) else renew_at(held)
        at = schedule.next_attempt(
            now,
            deadline=deadline,
            not_after=None if held is None else held.not_after,
            failures=self.failures,
            last_attempt=self.last_attempt,
            retry_min=self.retry_min,
            retry_max=self.retry_max if held is not None else self._join_cap(),
            draw=self._draw(),
        )
        if self.requested and self.failures == 0:
            at = now  # an early renewal does not wait for the floor
        if self.splay_until is not None:
            at = max(at, self.splay_until)
        if self.held_until is not None and not self.requested:
            at = max(at, self.held_until)
        if self.asked:
            at = now
        return at

    def _join_cap(self) -> dt.timedelta:
        return self.retry_max if self.join_retry_max is None else self.join_retry_max

    def _draw(self) -> float:
        # The same draw for one attempt, so recomputing at every wake-up does not move the
        # retry time; a new attempt gets a new one.
        seed = f"{self.salt}:{self.failures}:{self.last_attempt}"
        return random.Random(seed).random()  # noqa: S311 - jitter, not a secret

    def splay_left(self, now: dt.datetime) -> dt.timedelta | None:
        """How long a first enrollment still waits for its splay, or None."""
        if self.splay_until is None or now >= self.splay_until:
            return None
        return self.splay_until - now

    # -------------------------------------------------------------- the transitions

    def configure(
        self,
        retry_min: dt.timedelta,
        retry_max: dt.timedelta,
        join_retry_max: dt.timedelta | None = None,
    ) -> None:
        """A reloaded config's backoff bounds."""
        self.retry_min, self.retry_max = retry_min, retry_max
        self.join_retry_max = join_retry_max

    def first_look(
        self, now: dt.datetime, *, joined: bool, splay: dt.timedelta, draw: float
    ) -> dt.timedelta | None:
        """The first look at the node's files: an unjoined node draws its splay (once)."""
        if joined:
            return None
        self.reason = "no credentials yet"
        if not splay or self.splay_until is not None:
            return None
        delay = schedule.splay_delay(splay, draw)
        self.splay_until = now + delay
        return delay

    def request(self, reason: str) -> None:
        """Renew early: the certificate no longer says what the node is."""
        self.requested = True
        self.reason = reason
        self.splay_until = None

    def ask(self, reason: str) -> None:
        """Someone asked for a renewal: the next attempt now, whatever backoff or hold waits."""
        self.request(reason)
        self.asked = True

    def begin(self, now: dt.datetime) -> None:
        """An attempt starts; it answers an ask, whatever it brings."""
        self.last_attempt = now
        self.asked = False

    def succeeded(self, now: dt.datetime) -> None:
        self.failures = 0
        self.requested = self.asked = False
        self.reason = ""
        self.last_success, self.last_ok = now, True
        self.splay_until = self.held_until = None

    def failed(self, now: dt.datetime, message: str, kind: ErrorKind) -> None:
        self.failures += 1
        self.last_ok = False
        self.last_error = ErrorRecord(message=message, kind=kind, at=now)
        if kind is ErrorKind.DENIED:
            self.held_until, self.requested = now + self.after_denial, False
