"""What every bench shares: timing statistics and its own section of docs/benchmarks.md."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stats:
    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.runs, n=10, method="inclusive")[8]

    @property
    def min(self) -> float:
        return min(self.runs)


def write_section(path: Path, section: str, begin: str, end: str) -> None:
    """Replace the section between ``begin`` and ``end`` in ``path`` (or append it, or create
    the file), keeping the rest: each bench owns one marked section."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        old = "# Benchmarks\n"
    if begin in old and end in old:
        before, rest = old.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + section + ("\n" + after if after else "")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
