"""Go-style durations: what Kubernetes users write, and nothing else."""

from __future__ import annotations

import datetime as dt

import pytest

from join_agent.core.durations import format_duration, parse_duration

S = dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90 * S),
        ("5m", 300 * S),
        ("1h", 3600 * S),
        ("1h30m", 5400 * S),
        ("2h45m30s", (2 * 3600 + 45 * 60 + 30) * S),
        ("250ms", dt.timedelta(milliseconds=250)),
        ("1.5h", 5400 * S),
        (".5s", dt.timedelta(milliseconds=500)),
        ("1500us", dt.timedelta(microseconds=1500)),
        ("1500µs", dt.timedelta(microseconds=1500)),
        ("0", dt.timedelta(0)),
        ("0s", dt.timedelta(0)),
        (" 15m ", 900 * S),
    ],
)
def test_parse_duration_accepts_go_forms(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "5", "1y", "-5s", "5 s", "s", "1h-30m", "5S", "1d"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration") as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


def test_parse_duration_refuses_a_negative_duration_by_quoting_it() -> None:
    with pytest.raises(ValueError, match=r"'-5s' is not a duration"):
        parse_duration("-5s")


def test_parse_duration_refuses_an_overflowing_duration_with_value_error() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration("99999999999999h")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.timedelta(0), "0s"),
        (42 * S, "42s"),
        (90 * S, "1m 30s"),
        (dt.timedelta(hours=4, minutes=10, seconds=59), "4h 10m"),
        (dt.timedelta(days=29, hours=23, minutes=59), "29d 23h"),
        (dt.timedelta(days=400), "400d 0h"),
        (-42 * S, "-42s"),
        (-dt.timedelta(days=2, hours=3), "-2d 3h"),
        (dt.timedelta(milliseconds=999), "0s"),
    ],
)
def test_format_duration(value: dt.timedelta, expected: str) -> None:
    assert format_duration(value) == expected
