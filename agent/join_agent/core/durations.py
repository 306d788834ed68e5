"""Go-style durations ("90s", "1h30m", "250ms"), as Kubernetes users write them."""

from __future__ import annotations

import datetime as dt
import math
import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> dt.timedelta:
    """Parse a Go duration; raise ValueError with a sentence on anything else.

    Negative durations are refused: nothing in our config means "before now".
    """
    s = text.strip()
    if s == "0":
        return dt.timedelta(0)
    if not s:
        raise ValueError('is empty; write a duration such as "90s", "5m" or "1h"')
    pos = 0
    seconds = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(
                f'{text!r} is not a duration; write one such as "90s", "5m" or "1h30m"'
            )
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return seconds_to_timedelta(seconds, text)


def seconds_to_timedelta(seconds: float, text: object) -> dt.timedelta:
    """A timedelta, or ValueError for what no timedelta holds (inf, nan, 1e300)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a usable duration")
    try:
        return dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too large for a duration") from None


def format_duration(value: dt.timedelta) -> str:
    """Render a duration the way an operator reads it: "29d 23h", "4h 10m", "42s"."""
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"
