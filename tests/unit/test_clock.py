"""The clock gate: a clock that reads earlier than this package's install (or the held
certificate's start) is obviously wrong, and nothing is asked of a CA under it."""

from __future__ import annotations

import datetime as dt

import pytest

from join_agent.core import schedule
from join_agent.errors import ClockError
from join_agent.host import platform
from join_agent.worker import passes

INSTALLED = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
SKEW = dt.timedelta(minutes=2)


def test_the_floor_is_the_install_or_the_certificates_start_less_the_skew() -> None:
    assert schedule.clock_floor(INSTALLED, None, SKEW) == INSTALLED
    older = schedule.Held("1", INSTALLED - dt.timedelta(days=9), INSTALLED + dt.timedelta(days=1))
    assert schedule.clock_floor(INSTALLED, older, SKEW) == INSTALLED
    newer = schedule.Held("2", INSTALLED + dt.timedelta(days=3), INSTALLED + dt.timedelta(days=9))
    assert schedule.clock_floor(INSTALLED, newer, SKEW) == newer.not_before - SKEW


def test_the_package_knows_when_it_was_installed() -> None:
    installed = platform.installed_at()
    assert installed.tzinfo is not None
    assert installed <= dt.datetime.now(dt.timezone.utc)


def test_join_refuses_a_clock_from_before_the_install() -> None:
    boot = dt.datetime(1970, 1, 1, 0, 0, 5, tzinfo=dt.timezone.utc)
    with pytest.raises(ClockError, match=r"^the clock reads 1970-01-01T00:00:05Z, before this"):
        passes.require_a_set_clock(boot)
    passes.require_a_set_clock(dt.datetime.now(dt.timezone.utc))  # a set clock passes
