"""The forms every document and file shares: the schema versions and the one timestamp
form. Kept apart from the types (core/protocol.py) so that reading a document costs no
more than this."""

from __future__ import annotations

import datetime as dt

SCHEMA = 1  # status.json's; keys are added, never renamed or removed
# The worker's document. The daemon and its worker are one package, but not always one
# version: after a package upgrade and before the restart, the running daemon starts
# workers from the new files. A worker that speaks another version is a failed attempt.
WORKER_SCHEMA = 1


def iso(t: dt.datetime) -> str:
    """UTC, to the second, with a Z: the one timestamp form in every file we write."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_due(t: dt.datetime) -> str:
    """``iso()`` of a time something falls due, rounded up to the second: read back, it
    is never earlier than ``t``, so a pass started then finds the thing due, not a fraction
    of a second early (and then nothing to do until its next retry)."""
    t = t.astimezone(dt.timezone.utc)
    if t.microsecond:
        t = t.replace(microsecond=0) + dt.timedelta(seconds=1)
    return iso(t)


def parse_iso(text: str) -> dt.datetime:
    """Read back ``iso()``'s "YYYY-MM-DDTHH:MM:SSZ" (no strptime: it costs an import)."""
    if len(text) != 20 or text[10] != "T" or text[19] != "Z":
        raise ValueError(f"not a UTC timestamp: {text!r}")
    return dt.datetime(
        int(text[0:4]), int(text[5:7]), int(text[8:10]),
        int(text[11:13]), int(text[14:16]), int(text[17:19]),
        tzinfo=dt.timezone.utc,
    )  # fmt: skip
