"""Reading ``python -X importtime``: what a process imported, who imported it, what it cost.

CPython prints one line per module to stderr, children before their parent (post-order),
the name indented two spaces per nesting level: ``import time: SELF | CUMULATIVE | NAME``,
in microseconds. A root import (depth 0) is one made when no other import was running:
at the top of the script, or from a function at run time (a lazy import).
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import BenchError

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


@dataclass(frozen=True)
class ImportEntry:
    depth: int
    name: str
    self_us: int
    cumulative_us: int
    parent: str  # the module whose import brought this one in; "" for a root import


def parse(stderr: str) -> list[ImportEntry]:
    rows: list[tuple[int, str, int, int]] = []
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append((len(m.group(3)) // 2, m.group(4), int(m.group(1)), int(m.group(2))))
    entries: list[ImportEntry] = []
    for i, (depth, name, self_us, cum_us) in enumerate(rows):
        # Post-order: the importer is the next line with a smaller depth.
        parent = next((r[1] for r in rows[i + 1 :] if r[0] < depth), "")
        entries.append(ImportEntry(depth, name, self_us, cum_us, parent))
    return entries


def run(argv: Sequence[str], env: Mapping[str, str], *, code: int = 0) -> list[ImportEntry]:
    """``argv`` (which must start ``python -X importtime``) run once; its imports."""
    r = subprocess.run(
        list(argv), capture_output=True, text=True, env=dict(env), check=False, timeout=120
    )
    if r.returncode != code:
        raise BenchError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    return parse(r.stderr)


def after_startup(
    python: Path, env: Mapping[str, str], entries: Sequence[ImportEntry]
) -> list[ImportEntry]:
    """``entries`` without what a bare ``python -c pass`` imports too."""
    bare = {e.name for e in run([str(python), "-X", "importtime", "-c", "pass"], env)}
    return [e for e in entries if e.name not in bare]


def total_us(entries: Sequence[ImportEntry]) -> int:
    """All the imports' time: the root imports' cumulative times."""
    return sum(e.cumulative_us for e in entries if e.depth == 0)


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def by_package(entries: Sequence[ImportEntry]) -> dict[str, tuple[int, int]]:
    """Top-level package -> (modules, summed self time in us), heaviest first."""
    acc: dict[str, list[int]] = {}
    for e in entries:
        a = acc.setdefault(e.name.split(".")[0], [0, 0])
        a[0] += 1
        a[1] += e.self_us
    return dict(sorted(((k, (v[0], v[1])) for k, v in acc.items()), key=lambda kv: -kv[1][1]))


def package_cost(entries: Sequence[ImportEntry], package: str) -> tuple[int, tuple[str, ...]]:
    """Microseconds of every import subtree that enters ``package`` from outside it (so the
    cost includes what the package drags in that was not loaded yet), and its importers."""
    roots = [e for e in entries if inside(e.name, package) and not inside(e.parent, package)]
    importers = tuple(dict.fromkeys(e.parent or "a function (lazy import)" for e in roots))
    return sum(e.cumulative_us for e in roots), importers


def top_level_costs(entries: Sequence[ImportEntry]) -> dict[str, int]:
    """``package_cost`` of every top-level package that was imported."""
    totals: dict[str, int] = {}
    for e in entries:
        top = e.name.split(".")[0]
        if e.parent.split(".")[0] != top:
            totals[top] = totals.get(top, 0) + e.cumulative_us
    return totals


def root_costs(entries: Sequence[ImportEntry]) -> dict[str, int]:
    """Each root import's cumulative time, heaviest first."""
    acc: dict[str, int] = {}
    for e in entries:
        if e.depth == 0:
            acc[e.name] = acc.get(e.name, 0) + e.cumulative_us
    return dict(sorted(acc.items(), key=lambda kv: -kv[1]))


def import_chain(entries: Sequence[ImportEntry], package: str) -> list[str]:
    """Who imported ``package`` first: its name, then each importer up to a root import,
    keeping only the steps that change top-level package (asyncio.sslproto -> asyncio)."""
    by_name = {e.name: e for e in entries}
    if package not in by_name:
        return []
    chain = [package]
    while (parent := by_name[chain[-1]].parent) and parent in by_name:
        chain.append(parent)
    out = [chain[0]]
    for name in chain[1:]:
        if name.split(".")[0] != out[-1].split(".")[0] or name == chain[-1]:
            out.append(name)
    return out


def median_of(values: Sequence[int]) -> int:
    return int(statistics.median(values)) if values else 0
