"""When to renew, retry and restart: pure functions of `now`, a random draw and plain values.

Nothing here reads the clock or a random source (docs/architecture.md, "Invariants"): the
caller passes `now` (an aware UTC datetime) and `draw` (a float in [0, 1), e.g.
`random.random()`), so every decision is reproducible in a test.
"""

from __future__ import annotations

import datetime as dt
import math
import random

from join_agent import TYPE_CHECKING
from join_agent.core.wire import parse_iso

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts

__all__ = [
    "MAX_SLEEP",
    "RENEW_FROM",
    "RENEW_TO",
    "next_attempt",
    "renewal_deadline",
    "restart_delay",
    "retry_delay",
    "sleep_seconds",
    "splay_delay",
]

MAX_SLEEP = dt.timedelta(
    minutes=15
)  # every sleep is at most this, then recomputed from the wall clock
RENEW_FROM, RENEW_TO = 0.7, 0.9

_ZERO = dt.timedelta(0)
_USEC = dt.timedelta(microseconds=1)
# 2**80 microseconds is longer than any timedelta, so doubling past this changes nothing:
# capping the exponent keeps `failures=10**6` from building a million-bit integer.
_MAX_DOUBLINGS = 80


def renewal_deadline(not_before: dt.datetime, not_after: dt.datetime, draw: float) -> dt.datetime:
    """not_before + lifetime * (0.7 + 0.2*draw)  (client-go's jittered deadline).

    A certificate with no lifetime (not_after <= not_before) is due at once: not_before.
    """
    _check_aware("not_before", not_before)
    _check_aware("not_after", not_after)
    _check_draw(draw)
    lifetime = not_after - not_before
    if lifetime <= _ZERO:
        return not_before
    # Float rounding could nudge the sum past 0.9; clamp so the 70-90 % promise is exact.
    share = min(RENEW_TO, RENEW_FROM + (RENEW_TO - RENEW_FROM) * draw)
    return not_before + lifetime * share


def retry_delay(
    failures: int, retry_min: dt.timedelta, retry_max: dt.timedelta, draw: float
) -> dt.timedelta:
    """Full jitter with a floor: uniform in [retry_min, cap), cap = min(retry_max, retry_min *
    2**failures), so even the first retry is spread over [retry_min, 2*retry_min); exactly
    retry_min only when retry_max <= retry_min. failures >= 1 and retry_min > 0, else
    ValueError.
    """
    if failures < 1:
        raise ValueError(f"failures must be at least 1, not {failures}")
    _check_positive("retry_min", retry_min)
    _check_draw(draw)
    return _retry_backoff(failures, retry_min, retry_max, draw)


def next_attempt(
    now: dt.datetime,
    *,
    deadline: dt.datetime | None,
    not_after: dt.datetime | None,
    failures: int,
    last_attempt: dt.datetime | None,
    retry_min: dt.timedelta,
    retry_max: dt.timedelta,
    draw: float,
) -> dt.datetime:
    """When to try next; a result equal to `now` means "at once".

    `deadline` None means no usable certificate (enroll now); `failures` counts consecutive
    failed attempts since the last success; `last_attempt` is when the last attempt started.
    A `last_attempt` later than `now` (the clock stepped back) counts as `now`; call that
    value `base` (`now` when last_attempt is None). Guarantees, for retry_min > 0:

    1. Always: now <= result.
    2. failures == 0: result == max(now, deadline or now, base + retry_min if last_attempt
       is given). The floor keeps a CA whose certificates are already due from causing a
       tight loop.
    3. failures > 0: result <= max(now, base + max(retry_min, retry_max)) (backoff is capped).
    4. failures > 0 and now < not_after (still valid): result <= not_after, and
       result >= min(base + retry_min, not_after). The backoff is clamped to
       not_after - retry_min so that one more attempt happens while the certificate is
       valid; the result is earlier than base + retry_min only when it is not_after itself.
    5. failures > 0 otherwise (expired, or no certificate): result >= base + retry_min,
       so after expiry the same capped backoff continues and attempts that start at `now`
       are always at least retry_min apart.
    """
    _check_aware("now", now)
    for name, value in (
        ("deadline", deadline),
        ("not_after", not_after),
        ("last_attempt", last_attempt),
    ):
        if value is not None:
            _check_aware(name, value)
    if failures < 0:
        raise ValueError(f"failures must not be negative, not {failures}")
    _check_positive("retry_min", retry_min)
    _check_draw(draw)

    base = now if last_attempt is None else min(last_attempt, now)
    if failures == 0:
        due = now if deadline is None else max(deadline, now)
        if last_attempt is not None:
            due = max(due, base + retry_min)
        return due

    retry = max(now, base + _retry_backoff(failures, retry_min, retry_max, draw))
    if not_after is None or now >= not_after:
        return retry
    # Still valid: a retry after expiry would lose the chance to renew with this certificate,
    # so pull it in, but never closer to the previous attempt than retry_min allows, except
    # that not_after itself is always allowed (the expired branch takes over from there).
    latest = not_after - min(retry_min, not_after - now)
    earliest = min(max(base + retry_min, now), not_after)
    return max(earliest, min(retry, latest))


def splay_delay(splay: dt.timedelta, draw: float) -> dt.timedelta:
    """Uniform in [0, splay) for a first enrollment (fleet cold boot); zero when splay is zero."""
    if splay < _ZERO:
        raise ValueError(f"splay must not be negative, not {splay}")
    _check_draw(draw)
    return _fraction(splay, draw)


def sleep_seconds(
    now: dt.datetime, wake_at: dt.datetime | None, *, cap: dt.timedelta = MAX_SLEEP
) -> float:
    """Seconds to sleep: (wake_at - now) clamped to [0, cap]; None = cap.

    The caller recomputes after every wake-up, so wall-clock steps and suspend cost at most cap.
    """
    _check_aware("now", now)
    _check_positive("cap", cap)
    if wake_at is None:
        return cap.total_seconds()
    _check_aware("wake_at", wake_at)
    return min(max(wake_at - now, _ZERO), cap).total_seconds()


def restart_delay(
    restarts: int, base: dt.timedelta, cap: dt.timedelta, draw: float
) -> dt.timedelta:
    """Kubelet restart backoff: 0 for restarts == 0, else uniform in
    [base, min(cap, base * 2**(restarts-1))), exactly base when that bound is base.
    """
    if restarts < 0:
        raise ValueError(f"restarts must not be negative, not {restarts}")
    _check_positive("base", base)
    _check_draw(draw)
    if restarts == 0:
        return _ZERO
    return _jittered_backoff(restarts, base, cap, draw)


def _retry_backoff(
    failures: int, retry_min: dt.timedelta, retry_max: dt.timedelta, draw: float
) -> dt.timedelta:
    # The cap starts at 2*retry_min, not retry_min: a first retry of exactly retry_min
    # replays a burst of failures (a fleet that overran the CA in one second) one
    # retry_min later, all at once. bench/herd.py measured it: 5,000 nodes cold-booting
    # against 100 certificates/s peaked at 7.0x capacity with an exact first retry and 4.5x
    # with a jittered one.
    return _jittered_backoff(failures + 1, retry_min, retry_max, draw)


def _jittered_backoff(
    attempt: int, floor: dt.timedelta, ceiling: dt.timedelta, draw: float
) -> dt.timedelta:
    # Integer microseconds: exact, and the shift is bounded so huge `attempt` cannot overflow.
    floor_us = floor // _USEC
    grown_us = floor_us << min(attempt - 1, _MAX_DOUBLINGS)
    cap_us = max(floor_us, min(ceiling // _USEC, grown_us))
    return floor + _fraction(dt.timedelta(microseconds=cap_us - floor_us), draw)


def _fraction(span: dt.timedelta, draw: float) -> dt.timedelta:
    # floor(span * draw) in exact arithmetic: in [0, span) for span > 0, which float
    # multiplication and timedelta's round-to-nearest cannot promise.
    numerator, denominator = draw.as_integer_ratio()
    return dt.timedelta(microseconds=(span // _USEC) * numerator // denominator)


def _check_draw(draw: float) -> None:
    # A draw of 1.0 or more (randint instead of random, a percentage) would silently
    # stretch every delay; NaN would poison every comparison.
    if not (math.isfinite(draw) and 0.0 <= draw < 1.0):
        raise ValueError(f"draw must be a float in [0, 1), not {draw!r}")


def _check_positive(name: str, value: dt.timedelta) -> None:
    # Zero would make "never a tight loop" false without any error.
    if value <= _ZERO:
        raise ValueError(f"{name} must be longer than zero, not {value}")


def _check_aware(name: str, value: dt.datetime) -> None:
    # A naive datetime (datetime.now() without tz) is local time: arithmetic with it is
    # silently off by the UTC offset.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), not naive: {value}")


class Held:
    """The certificate the node holds, as far as scheduling goes. A plain class, not a
    NamedTuple: `status` loads this module on its fast path (judging.renew_at), where the
    typing import would cost more than the judging (docs/benchmarks.md)."""

    __slots__ = ("not_after", "not_before", "serial")

    def __init__(self, serial: str, not_before: dt.datetime, not_after: dt.datetime) -> None:
        self.serial = serial
        self.not_before = not_before
        self.not_after = not_after

    def __repr__(self) -> str:
        return f"Held({self.serial!r}, {self.not_before}, {self.not_after})"


def held(facts: CredentialFacts | None) -> Held | None:
    """The certificate described by a worker's facts (status.json's ``credentials``), or
    None when there is none."""
    if not facts or not facts.get("present") or not facts.get("not_before"):
        return None
    if facts.get("foreign"):
        return None  # another machine's: nothing this node holds (host/machine.py)
    return Held(
        serial=str(facts.get("serial")),
        not_before=parse_iso(facts["not_before"]),
        not_after=parse_iso(facts["not_after"]),
    )


def renew_at(cert: Held) -> dt.datetime:
    """The certificate's renewal deadline (rule 1)."""
    # random.Random(str) seeds from a hash of the string: the same draw in every process.
    draw = random.Random(cert.serial).random()  # noqa: S311 - jitter, not a secret
    return renewal_deadline(cert.not_before, cert.not_after, draw)


# How often a clock that is obviously wrong is looked at again: time sync sets it at once
# when it comes, and nothing is asked of the CA meanwhile.
CLOCK_POLL = dt.timedelta(seconds=5)


def clock_floor(installed: dt.datetime, cert: Held | None, skew: dt.timedelta) -> dt.datetime:
    """The earliest the clock can truly read (pure): not before this package was installed,
    nor, less the skew allowed, before the certificate the node holds began. A board
    without a real-time clock boots at its last shutdown or at 1970, earlier than both: an
    enrollment then would fail the validity checks and count as a failure."""
    return installed if cert is None else max(installed, cert.not_before - skew)
