"""schedule.py: renewal deadline, retry/restart backoff and sleeps, as pure functions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from join_agent.core.schedule import (
    MAX_SLEEP,
    RENEW_FROM,
    RENEW_TO,
    next_attempt,
    renewal_deadline,
    restart_delay,
    retry_delay,
    sleep_seconds,
    splay_delay,
)

UTC = dt.timezone.utc
S = dt.timedelta(seconds=1)
DAY = dt.timedelta(days=1)
US = dt.timedelta(microseconds=1)
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
RETRY_MIN, RETRY_MAX = 10 * S, 300 * S  # the config defaults
LAST_DRAW = math.nextafter(1.0, 0.0)  # the largest float below 1

# Bounded strategies: years 2000-2100, durations from a microsecond up to ten years.
moments = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
    timezones=st.just(UTC),
)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
lifetimes = st.timedeltas(min_value=S, max_value=dt.timedelta(days=3653))
retry_mins = st.timedeltas(min_value=dt.timedelta(microseconds=1), max_value=DAY)
retry_maxes = st.timedeltas(min_value=dt.timedelta(0), max_value=7 * DAY)
offsets = st.timedeltas(min_value=-30 * DAY, max_value=30 * DAY)
failure_counts = st.integers(min_value=1, max_value=10**6)


def attempt(
    now: dt.datetime,
    *,
    deadline: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    failures: int = 0,
    last_attempt: dt.datetime | None = None,
    retry_min: dt.timedelta = RETRY_MIN,
    retry_max: dt.timedelta = RETRY_MAX,
    draw: float = 0.5,
) -> dt.datetime:
    return next_attempt(
        now,
        deadline=deadline,
        not_after=not_after,
        failures=failures,
        last_attempt=last_attempt,
        retry_min=retry_min,
        retry_max=retry_max,
        draw=draw,
    )


# --- renewal_deadline -------------------------------------------------------------------


def test_one_year_certificate_renews_between_day_255_5_and_day_328_5() -> None:
    not_after = T0 + 365 * DAY
    assert renewal_deadline(T0, not_after, 0.0) == T0 + dt.timedelta(days=255.5)
    assert renewal_deadline(T0, not_after, 0.5) == T0 + dt.timedelta(days=292)
    latest = renewal_deadline(T0, not_after, LAST_DRAW)
    assert T0 + dt.timedelta(days=328.4) < latest <= T0 + dt.timedelta(days=328.5)


def test_a_certificate_without_lifetime_is_due_at_not_before() -> None:
    assert renewal_deadline(T0, T0, 0.5) == T0
    assert renewal_deadline(T0, T0 - DAY, 0.5) == T0


@given(not_before=moments, lifetime=lifetimes, draw=draws)
def test_deadline_is_within_70_to_90_percent_of_the_lifetime(
    not_before: dt.datetime, lifetime: dt.timedelta, draw: float
) -> None:
    deadline = renewal_deadline(not_before, not_before + lifetime, draw)
    assert not_before + lifetime * RENEW_FROM <= deadline <= not_before + lifetime * RENEW_TO
    # The same bound in exact arithmetic, allowing for rounding to the microsecond.
    offset_us = (deadline - not_before) // dt.timedelta(microseconds=1)
    lifetime_us = lifetime // dt.timedelta(microseconds=1)
    assert lifetime_us * 7 / 10 - 1 <= offset_us <= lifetime_us * 9 / 10 + 1


@given(not_before=moments, lifetime=lifetimes, a=draws, b=draws)
def test_deadline_grows_with_the_draw(
    not_before: dt.datetime, lifetime: dt.timedelta, a: float, b: float
) -> None:
    low, high = sorted((a, b))
    not_after = not_before + lifetime
    assert renewal_deadline(not_before, not_after, low) <= renewal_deadline(
        not_before, not_after, high
    )


# --- draws and datetimes are checked, not trusted -----------------------------------------


@pytest.mark.parametrize("draw", [1.0, -0.1, 2.0, 50.0, math.nan, math.inf, -math.inf])
def test_a_draw_outside_0_1_is_refused_everywhere(draw: float) -> None:
    with pytest.raises(ValueError, match=r"draw"):
        renewal_deadline(T0, T0 + DAY, draw)
    with pytest.raises(ValueError, match=r"draw"):
        retry_delay(1, RETRY_MIN, RETRY_MAX, draw)
    with pytest.raises(ValueError, match=r"draw"):
        attempt(T0, draw=draw)
    with pytest.raises(ValueError, match=r"draw"):
        splay_delay(60 * S, draw)
    with pytest.raises(ValueError, match=r"draw"):
        restart_delay(1, S, 60 * S, draw)


def test_naive_datetimes_are_refused() -> None:
    naive = dt.datetime(2024, 1, 1)
    with pytest.raises(ValueError, match=r"timezone-aware"):
        renewal_deadline(naive, naive + DAY, 0.5)
    with pytest.raises(ValueError, match=r"now must be timezone-aware"):
        attempt(naive)
    with pytest.raises(ValueError, match=r"last_attempt must be timezone-aware"):
        attempt(T0, last_attempt=naive)
    with pytest.raises(ValueError, match=r"wake_at must be timezone-aware"):
        sleep_seconds(T0, naive)


# --- retry_delay --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "draw", "expected"),
    [
        (1, 0.0, 10 * S),  # cap 20 s: the first retry is jittered too
        (1, 0.75, 17.5 * S),
        (2, 0.0, 10 * S),  # cap 40 s
        (2, 0.5, 25 * S),
        (3, 0.5, 45 * S),  # cap 80 s
        (4, 0.5, 85 * S),  # cap 160 s
        (5, 0.5, 155 * S),  # 320 s capped at retry_max
        (10**6, 0.5, 155 * S),  # no overflow, same cap
    ],
)
def test_retry_delay_examples(failures: int, draw: float, expected: dt.timedelta) -> None:
    assert retry_delay(failures, RETRY_MIN, RETRY_MAX, draw) == expected


def test_retry_delay_stays_below_the_cap() -> None:
    assert retry_delay(6, RETRY_MIN, RETRY_MAX, LAST_DRAW) < RETRY_MAX
    assert retry_delay(6, RETRY_MIN, RETRY_MAX, LAST_DRAW) > RETRY_MAX - S


def test_the_first_retry_is_spread_over_retry_min_to_twice_that() -> None:
    # Nodes that failed in the same second (a fleet that overran the CA) must not all come
    # back exactly retry_min later: that replays the burst (bench/herd.py measures it).
    first = [retry_delay(1, RETRY_MIN, RETRY_MAX, d) for d in (0.0, 0.25, 0.5, LAST_DRAW)]
    assert first[:3] == [10 * S, 12.5 * S, 15 * S]
    assert 19 * S < first[3] < 20 * S
    # next_attempt uses the same backoff: a first failure is retried within [10 s, 20 s).
    got = [attempt(T0, failures=1, last_attempt=T0, draw=d) for d in (0.0, 0.5, LAST_DRAW)]
    assert got[0] == T0 + 10 * S
    assert got[1] == T0 + 15 * S
    assert T0 + 19 * S < got[2] < T0 + 20 * S


def test_retry_max_below_retry_min_means_retry_min() -> None:
    assert retry_delay(7, RETRY_MIN, 5 * S, 0.9) == RETRY_MIN


@pytest.mark.parametrize("failures", [0, -1])
def test_retry_delay_needs_a_failure(failures: int) -> None:
    with pytest.raises(ValueError, match=r"failures"):
        retry_delay(failures, RETRY_MIN, RETRY_MAX, 0.5)


@pytest.mark.parametrize("retry_min", [dt.timedelta(0), -S])
def test_a_zero_retry_min_is_refused_as_a_tight_loop(retry_min: dt.timedelta) -> None:
    with pytest.raises(ValueError, match=r"retry_min"):
        retry_delay(1, retry_min, RETRY_MAX, 0.5)
    with pytest.raises(ValueError, match=r"retry_min"):
        attempt(T0, retry_min=retry_min)


@given(failures=failure_counts, retry_min=retry_mins, retry_max=retry_maxes, draw=draws)
def test_retry_delay_is_within_retry_min_and_retry_max(
    failures: int, retry_min: dt.timedelta, retry_max: dt.timedelta, draw: float
) -> None:
    delay = retry_delay(failures, retry_min, retry_max, draw)
    assert retry_min <= delay <= max(retry_min, retry_max)
    doubled_us = retry_min // US * 2 ** min(failures, 100)
    assert delay // US <= max(retry_min // US, min(retry_max // US, doubled_us))


@given(failures=failure_counts, retry_min=retry_mins, retry_max=retry_maxes, draw=draws)
def test_retry_delay_never_shrinks_as_failures_grow(
    failures: int, retry_min: dt.timedelta, retry_max: dt.timedelta, draw: float
) -> None:
    # With the same draw the delay is a monotone function of the cap.
    assert retry_delay(failures, retry_min, retry_max, draw) <= retry_delay(
        failures + 1, retry_min, retry_max, draw
    )


# --- next_attempt: examples ---------------------------------------------------------------


def test_first_enrollment_is_now() -> None:
    assert attempt(T0) == T0


def test_after_a_success_the_deadline() -> None:
    deadline = T0 + 30 * DAY
    assert attempt(T0, deadline=deadline, last_attempt=T0) == deadline


def test_a_certificate_already_due_waits_retry_min_not_a_tight_loop() -> None:
    # The CA issued a certificate whose deadline has passed: renew again, but not at once.
    assert attempt(T0, deadline=T0 - S, not_after=T0 + 5 * S, last_attempt=T0) == T0 + RETRY_MIN


def test_a_deadline_missed_during_downtime_is_now() -> None:
    assert attempt(T0, deadline=T0 - DAY, last_attempt=T0 - 40 * DAY) == T0


def test_a_failure_with_a_healthy_certificate_backs_off() -> None:
    not_after = T0 + 100 * DAY
    got = attempt(T0, deadline=T0 - S, not_after=not_after, failures=3, last_attempt=T0)
    assert got == T0 + 45 * S  # cap 80 s, draw 0.5


def test_a_retry_is_pulled_in_before_expiry() -> None:
    not_after = T0 + 120 * S
    got = attempt(T0, not_after=not_after, failures=6, last_attempt=T0, draw=0.99)
    assert got == not_after - RETRY_MIN


def test_a_retry_closer_than_retry_min_to_expiry_happens_at_expiry() -> None:
    not_after = T0 + 3 * S
    assert attempt(T0, not_after=not_after, failures=2, last_attempt=T0) == not_after


def test_after_expiry_the_capped_backoff_continues() -> None:
    expired = T0 - DAY
    got = attempt(T0, not_after=expired, failures=10**6, last_attempt=T0, draw=0.5)
    assert got == T0 + 155 * S


def test_an_outage_across_expiry_attempt_by_attempt() -> None:
    # A 100 s certificate, a CA that always fails, attempts starting when scheduled.
    not_after, now, seen = T0 + 100 * S, T0, []
    for failures in range(1, 9):
        now = attempt(
            now, deadline=T0, not_after=not_after, failures=failures, last_attempt=now, draw=0.9
        )
        seen.append((now - T0) // S)
    # backoff; pulled in to not_after - retry_min; at expiry; then capped backoff (271 s)
    assert seen == [19, 56, 90, 100, 371, 642, 913, 1184]


def test_a_long_suspend_retries_at_once() -> None:
    assert attempt(T0, not_after=T0 - DAY, failures=4, last_attempt=T0 - DAY) == T0


def test_a_clock_stepped_back_does_not_postpone_the_retry() -> None:
    # last_attempt is a day "in the future": treat it as now, not as a day to wait.
    assert attempt(T0, deadline=T0 - S, last_attempt=T0 + DAY) == T0 + RETRY_MIN
    assert attempt(T0, failures=1, last_attempt=T0 + DAY, draw=0.0) == T0 + RETRY_MIN


def test_next_attempt_refuses_negative_failures() -> None:
    with pytest.raises(ValueError, match=r"failures"):
        attempt(T0, failures=-1)


# --- next_attempt: properties (the guarantees in its docstring) ---------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """Arguments of one next_attempt call."""

    now: dt.datetime
    deadline: dt.datetime | None
    not_after: dt.datetime | None
    failures: int
    last_attempt: dt.datetime | None
    retry_min: dt.timedelta
    retry_max: dt.timedelta
    draw: float

    @property
    def base(self) -> dt.datetime:
        """The last attempt, or now if there was none or the clock stepped back past it."""
        return self.now if self.last_attempt is None else min(self.last_attempt, self.now)

    def run(self) -> dt.datetime:
        return next_attempt(self.now, **{k: v for k, v in vars(self).items() if k != "now"})


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Times around `now`: deadlines, expiries and last attempts within 30 days either side."""
    now = draw(moments)

    def near() -> dt.datetime | None:
        offset = draw(st.none() | offsets)
        return None if offset is None else now + offset

    return Case(
        now=now,
        deadline=near(),
        not_after=near(),
        failures=draw(st.integers(min_value=0, max_value=10**6)),
        last_attempt=near(),
        retry_min=draw(retry_mins),
        retry_max=draw(retry_maxes),
        draw=draw(draws),
    )


@given(case=cases())
def test_next_attempt_is_never_in_the_past(case: Case) -> None:
    assert case.run() >= case.now


@given(case=cases().filter(lambda c: c.failures == 0))
def test_without_failures_the_deadline_floored_by_retry_min(case: Case) -> None:
    expected = max(case.now, case.deadline or case.now)
    if case.last_attempt is not None:
        expected = max(expected, case.base + case.retry_min)
    assert case.run() == expected


@given(case=cases().filter(lambda c: c.failures > 0))
def test_retries_are_capped_by_retry_max(case: Case) -> None:
    assert case.run() <= max(case.now, case.base + max(case.retry_min, case.retry_max))


@given(case=cases().filter(lambda c: c.failures > 0 and c.not_after and c.now < c.not_after))
def test_retries_while_valid_never_pass_expiry(case: Case) -> None:
    assert case.not_after is not None
    result = case.run()
    assert case.now <= result <= case.not_after
    # retry_min after the last attempt, unless that is past expiry: then exactly at expiry
    assert result >= case.base + case.retry_min or result == case.not_after


@given(case=cases().filter(lambda c: c.failures > 0 and not (c.not_after and c.now < c.not_after)))
def test_retries_after_expiry_keep_backing_off(case: Case) -> None:
    result = case.run()
    assert result >= case.now
    assert result >= case.base + case.retry_min  # never a tight loop


@given(case=cases().filter(lambda c: c.last_attempt is not None))
def test_next_attempt_never_earlier_than_last_attempt_plus_retry_min(case: Case) -> None:
    assert case.last_attempt is not None
    floor = min(case.last_attempt, case.now) + case.retry_min  # a clock stepped back: now
    if case.failures and case.not_after and case.now < case.not_after:
        floor = min(floor, case.not_after)  # the one exception: a last try at expiry
    assert case.run() >= floor


@given(
    start=moments,
    lifetime=st.timedeltas(min_value=S, max_value=DAY),
    retry_min=st.timedeltas(min_value=S, max_value=600 * S),
    retry_max=st.timedeltas(min_value=S, max_value=3600 * S),
    draws_=st.lists(draws, min_size=1, max_size=60),
)
def test_a_ca_outage_never_makes_a_tight_loop(
    start: dt.datetime,
    lifetime: dt.timedelta,
    retry_min: dt.timedelta,
    retry_max: dt.timedelta,
    draws_: list[float],
) -> None:
    """Every attempt fails; attempts start at the scheduled time on a clock that runs forward.

    Consecutive attempts are at least retry_min apart, except at most one gap that ends
    exactly at not_after; and while the certificate is valid, no retry is scheduled past it.
    """
    not_after = start + lifetime
    now, failures, short_gaps = start, 1, 0
    for draw in draws_:
        nxt = next_attempt(
            now,
            deadline=start,
            not_after=not_after,
            failures=failures,
            last_attempt=now,
            retry_min=retry_min,
            retry_max=retry_max,
            draw=draw,
        )
        if now < not_after:
            assert nxt <= not_after
        if nxt - now < retry_min:
            assert nxt == not_after
            short_gaps += 1
        assert nxt - now <= max(retry_min, retry_max)
        now, failures = nxt, failures + 1
    assert short_gaps <= 1


# --- splay, sleep, restart ----------------------------------------------------------------


def test_splay_examples() -> None:
    assert splay_delay(dt.timedelta(0), 0.7) == dt.timedelta(0)
    assert splay_delay(600 * S, 0.0) == dt.timedelta(0)
    assert splay_delay(600 * S, 0.5) == 300 * S
    assert splay_delay(dt.timedelta(microseconds=1), 0.9) == dt.timedelta(0)
    with pytest.raises(ValueError, match=r"splay"):
        splay_delay(-S, 0.5)


@given(splay=st.timedeltas(min_value=dt.timedelta(0), max_value=7 * DAY), draw=draws)
def test_splay_is_within_0_and_splay(splay: dt.timedelta, draw: float) -> None:
    delay = splay_delay(splay, draw)
    assert dt.timedelta(0) <= delay
    assert delay < splay or delay == splay == dt.timedelta(0)


def test_sleep_examples() -> None:
    assert sleep_seconds(T0, None) == 900.0
    assert sleep_seconds(T0, T0 + 90 * S) == 90.0
    assert sleep_seconds(T0, T0 + DAY) == 900.0
    assert sleep_seconds(T0, T0 - DAY) == 0.0
    assert sleep_seconds(T0, T0 + dt.timedelta(milliseconds=250)) == 0.25
    assert sleep_seconds(T0, T0 + DAY, cap=30 * S) == 30.0
    assert MAX_SLEEP.total_seconds() == 900.0
    with pytest.raises(ValueError, match=r"cap"):
        sleep_seconds(T0, None, cap=dt.timedelta(0))


@given(now=moments, wake_at=st.none() | moments)
def test_sleep_is_within_0_and_900_seconds(now: dt.datetime, wake_at: dt.datetime | None) -> None:
    assert 0.0 <= sleep_seconds(now, wake_at) <= 900.0


@pytest.mark.parametrize(
    ("restarts", "draw", "expected"),
    [
        (0, 0.9, dt.timedelta(0)),
        (1, 0.9, S),  # bound == base
        (2, 0.5, 1.5 * S),  # bound 2 s
        (4, 0.5, 4.5 * S),  # bound 8 s
        (10**6, 0.5, 30.5 * S),  # bound capped at 60 s, no overflow
    ],
)
def test_restart_delay_examples(restarts: int, draw: float, expected: dt.timedelta) -> None:
    assert restart_delay(restarts, S, 60 * S, draw) == expected


def test_restart_delay_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match=r"restarts"):
        restart_delay(-1, S, 60 * S, 0.5)
    with pytest.raises(ValueError, match=r"base"):
        restart_delay(1, dt.timedelta(0), 60 * S, 0.5)


@given(
    restarts=st.integers(min_value=0, max_value=10**6),
    base=st.timedeltas(min_value=dt.timedelta(microseconds=1), max_value=3600 * S),
    cap=st.timedeltas(min_value=dt.timedelta(0), max_value=DAY),
    draw=draws,
)
def test_restart_delay_is_within_bounds(
    restarts: int, base: dt.timedelta, cap: dt.timedelta, draw: float
) -> None:
    delay = restart_delay(restarts, base, cap, draw)
    if restarts == 0:
        assert delay == dt.timedelta(0)
    else:
        assert base <= delay <= max(base, cap)
        doubled_us = base // US * 2 ** min(restarts - 1, 100)
        assert delay // US <= max(base // US, min(cap // US, doubled_us))
        assert restart_delay(restarts + 1, base, cap, draw) >= delay
