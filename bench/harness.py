"""What every bench shares: the machine's facts, interleaved timing, the command line, and
its own generated section of docs/benchmarks.md.

A bench measures and prints figures; it writes only tables and the facts of the run
(date, command, machine, versions) between its markers. What the figures mean is written
by hand around those markers, once, in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
# What a measured process must not inherit from the shell that runs the bench.
_SCRUBBED = (
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPYCACHEPREFIX",
    "PYTHONPROFILEIMPORTTIME",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
    "JOIN_AGENT_CONFIG",
)


class BenchError(RuntimeError):
    """A run failed or misbehaved: the benchmark stops, and nothing is written."""


@dataclass(frozen=True)
class Stats:
    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def p90(self) -> float:
        """The inclusive 9th decile."""
        return statistics.quantiles(self.runs, n=10, method="inclusive")[8]

    @property
    def min(self) -> float:
        return min(self.runs)


# -- the machine and the interpreters -------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def first_line(argv: Sequence[str]) -> str:
    """The first line a version command prints, or why there is none."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except OSError as e:
        return f"unavailable ({e.strerror})"
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine(tools: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """The facts a reader needs to weigh the figures, and each tool's version line."""
    cpu = "unknown"
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) // 1024} MiB"
    facts = {
        "load average at start (1/5/15 min)": load_average(),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
    }
    facts.update({name: first_line(argv) for name, argv in (tools or {}).items()})
    return facts


def python_env(pycache: Path | None, **extra: str) -> dict[str, str]:
    """The environment of every measured process.

    With a ``pycache``: a private bytecode cache (PYTHONPYCACHEPREFIX keeps the .pyc files
    out of the checkout), written by the warm-up runs and read by the measured ones, as an
    installed wheel's or .deb's byte-compiled modules are. ``None``: no bytecode written,
    so an editable join_agent is compiled from source on every run.
    """
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env.update(extra)
    return env


def default_join_agent() -> Path:
    return Path(sys.executable).parent / "join-agent"


def interpreter_of(script: Path) -> Path:
    """The Python a console script runs under (its shebang)."""
    try:
        first = script.read_bytes()[:256].split(b"\n", 1)[0]
    except OSError as e:
        raise BenchError(f"cannot read {script}: {e.strerror}") from None
    if first.startswith(b"#!") and b"python" in first:
        return Path(first[2:].decode().strip().split()[0])
    raise BenchError(f"{script} is not a Python console script (shebang {first[:80]!r})")


DEPENDENCIES = ("cryptography", "httpx", "structlog", "sdnotify", "PyYAML", "tenacity")


def versions_of(python: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Python's version and each runtime dependency's, as ``python`` sees them."""
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for d in {DEPENDENCIES!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: out[d] = '-'\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=dict(env), check=True
    )
    versions: dict[str, str] = json.loads(r.stdout)
    return versions


# -- timing --------------------------------------------------------------------------------

Check = Callable[[subprocess.CompletedProcess[bytes]], None]


def expect_code(code: int, what: str) -> Check:
    def check(r: subprocess.CompletedProcess[bytes]) -> None:
        if r.returncode != code:
            raise BenchError(
                f"{what} exited {r.returncode}, expected {code}:\n"
                f"{r.stdout.decode(errors='replace')[-1500:]}"
                f"{r.stderr.decode(errors='replace')[-1500:]}"
            )

    return check


def timed(
    argv: Sequence[str],
    env: Mapping[str, str],
    check: Check,
    *,
    cwd: Path | None = None,
) -> float:
    """Wall seconds of the whole process (``perf_counter`` around ``subprocess.run``);
    ``check`` sees its outcome afterwards and raises BenchError if it is wrong."""
    start = time.perf_counter()
    r = subprocess.run(
        list(argv), cwd=cwd, env=dict(env), capture_output=True, check=False, timeout=120
    )
    elapsed = time.perf_counter() - start
    check(r)
    return elapsed


def interleave(
    jobs: Mapping[str, Callable[[], float]], *, rounds: int, warmup: int, what: str
) -> dict[str, Stats]:
    """Every job once per round, the order rotating from round to round, after ``warmup``
    untimed rounds (which fill the bytecode cache): a change of load on the machine hits
    every job alike, so ratios between jobs of one series hold even when times drift."""
    names = list(jobs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + rounds):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            elapsed = jobs[n]()
            if i >= warmup:
                times[n].append(elapsed)
        if i >= warmup:
            print(f"\r{what}: {i + 1 - warmup}/{rounds} rounds", end="", file=sys.stderr)
    print(file=sys.stderr)
    return {n: Stats(tuple(t)) for n, t in times.items()}


# -- the command line ------------------------------------------------------------------------


def absolute(value: str) -> Path:
    """A path that still names the same file when a run changes directory."""
    return Path(value).absolute()


def parser(doc: str | None, *, agents: bool = True) -> argparse.ArgumentParser:
    """Every bench's common options: which agents to run, and where the figures go."""
    p = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        epilog="Run from the repository root with PYTHONPATH=. (see docs/benchmarks.md).",
    )
    if agents:
        p.add_argument(
            "--join-agent",
            type=absolute,
            default=default_join_agent(),
            metavar="PATH",
            help="join-agent console script (default: next to this Python)",
        )
        p.add_argument(
            "--bookworm-join-agent",
            type=absolute,
            metavar="PATH",
            help="also run this one: join-agent over Debian bookworm's dependency versions "
            "(e.g. .venv-bookworm/bin/join-agent), what the .deb runs on",
        )
    p.add_argument(
        "--write",
        type=Path,
        nargs="?",
        const=DOC,
        metavar="MARKDOWN",
        help=f"write the figures into this file's section (default {DOC.relative_to(REPO)})",
    )
    return p


def agents_of(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(label, console script) of every agent the bench runs."""
    out = [("newest deps", Path(args.join_agent))]
    if args.bookworm_join_agent:
        out.append(("bookworm deps", Path(args.bookworm_join_agent)))
    return out


def command_line() -> str:
    """This run's command, as it can be pasted at the repository root."""

    def shown(arg: str) -> str:
        with contextlib.suppress(ValueError):
            return str(Path(arg).absolute().relative_to(REPO))
        return arg

    python = shown(sys.executable) if Path(sys.executable).is_relative_to(REPO) else "python3"
    return "PYTHONPATH=. " + shlex.join([python, *(shown(a) for a in sys.argv)])


# -- the report ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    """A markdown table; ``align`` has an ``l`` (text) or ``r`` (figure) per column, and
    by default the first column is text and the rest are figures."""
    align = align or "l" + "r" * (len(header) - 1)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


@dataclass(frozen=True)
class Report:
    """A bench's generated section: the facts of the run, then its tables."""

    bench: str  # the script's name without .py: it names the markers
    facts: Mapping[str, str]  # the machine, the versions: one line each
    body: Sequence[str]

    @property
    def begin(self) -> str:
        return f"<!-- {self.bench}.py: begin -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.bench}.py: end -->"

    def markdown(self, *, today: dt.date, command: str) -> str:
        lines = [
            self.begin,
            f"Measured on {today.isoformat()} with `{command}`.",
            "",
            *[f"- {k}: {v}" for k, v in self.facts.items()],
            "",
            *self.body,
            "",
            self.end,
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        """Replace this bench's section in ``path``, keeping everything around it: the
        hand-written text that reads the figures stays as it was."""
        text = self.markdown(today=dt.date.today(), command=command_line())
        old = path.read_text()
        if self.begin not in old or self.end not in old:
            raise BenchError(f"{path} has no {self.begin} … {self.end} section to replace")
        before, rest = old.split(self.begin, 1)
        after = rest.split(self.end, 1)[1].lstrip("\n")
        path.write_text(before + text + ("\n" + after if after else ""))
        print(f"wrote the {self.bench} section of {path}", file=sys.stderr)


def finish(report: Report, args: argparse.Namespace) -> None:
    """Print the figures; write them too if ``--write`` asked for it."""
    print("\n".join(report.body))
    if args.write is not None:
        report.write(args.write)
