"""Wall time of ``join-agent status`` against a bare ``python3 -c pass`` (same interpreter).

Three situations, against a real ``cfssl serve`` (one-year profile) and a real
``join-agent run`` with the stand-in kubelet (the set-up of bench/footprint.py):

- **fast path**: the daemon runs and the files are the ones it recorded, so ``status``
  reads ``<state_dir>/status.json`` and checks the files' identity, parsing no PEM;
- **``--json``, fast path**: the same with ``status --json``;
- **slow path**: the daemon is stopped (its files stay), so ``status`` parses the
  certificate, the CA and the kubeconfig itself (and exits 1: degraded, nothing renews).

Every ``status`` run alternates with a bare ``python3 -c pass`` of the same interpreter and
environment (the order rotating each round), and each ratio is taken against the bare
runs of its own series. Every run's exit code and output are checked (``--json`` says
``"source": "daemon"`` on the fast path, ``"files"`` on the slow one); any failure aborts.
Afterwards one status of each path runs under ``-X importtime`` to show what it imports.

Run from the repository root:

    PYTHONPATH=. /tmp/vnew/bin/python bench/status_time.py \\
        --bookworm-join-agent /tmp/vold/bin/join-agent         # writes docs/benchmarks.md
    PYTHONPATH=. /tmp/vnew/bin/python bench/status_time.py --runs 10 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import Stats, write_section
from bench.footprint import (
    REPO,
    BenchError,
    ImportEntry,
    Node,
    by_package,
    default_join_agent,
    interpreter_of,
    lab,
    machine,
    parse_importtime,
    python_env,
    rerun_command,
    running_agent,
)
from tests.lab.cfssl_ca import CfsslCA

MARKER_BEGIN = "<!-- status_time.py: begin -->"
MARKER_END = "<!-- status_time.py: end -->"
TARGET = 3.0  # fast-path status / bare interpreter, medians
# What brings in each root import seen in a status run (read off the -X importtime trees).
WHY = {
    "join_agent.verbs.status": "status.py with config.py (8 frozen dataclasses, tomllib), "
    "dataclasses→inspect, json, random, schedule, state",
    "http.client": "the kubelet /healthz probe (`status.probe_healthz`): email.parser, "
    "email.utils→socket, ssl",
    "join_agent.cli": "the CLI: argparse, datetime, pathlib→urllib.parse, typing",
    "join_agent.log": "`logging` (log.py imports it at the top, for the level numbers)",
    "re": "the pip-generated console script's own `import re`",
    "shutil": "argparse's HelpFormatter, built when the parser is",
    "_strptime": "`state.parse_iso` (`datetime.strptime`)",
    "encodings.idna": "the healthz probe's `getaddrinfo`",
    "join_agent.pki.compat": "cryptography's x509 (slow path only)",
    "join_agent.worker.kubeconfig": "PyYAML (slow path only)",
    "cryptography.hazmat.backends.openssl.backend": "cryptography's OpenSSL backend",
}

BARE = "`python3 -c pass`"
VERSION = "`join-agent --version`"
FAST = "`status`, fast path"
JSON = "`status --json`, fast path"
SLOW = "`status`, slow path (no daemon)"


@dataclass(frozen=True)
class Job:
    argv: list[str]
    check: Callable[[subprocess.CompletedProcess[bytes]], None]


@dataclass
class ImportProfile:
    total_us: int  # all imports after start-up (sum of the root imports' cumulative)
    roots: list[tuple[str, int]]  # root imports (depth 0) by cumulative us, heaviest first
    packages: dict[str, tuple[int, int]]  # top-level package -> (modules, self us)


@dataclass
class Variant:
    label: str
    join_agent: Path
    python: Path
    versions: dict[str, str]
    series: dict[str, dict[str, Stats]]  # series name -> job -> stats
    fast_imports: ImportProfile
    slow_imports: ImportProfile

    def ratio(self, series: str, job: str) -> float:
        s = self.series[series]
        return s[job].median / s[BARE].median


# ----------------------------------------------------------------------------- checks


def _expect_code(r: subprocess.CompletedProcess[bytes], code: int, what: str) -> None:
    if r.returncode != code:
        raise BenchError(
            f"{what} exited {r.returncode}, expected {code}:\n"
            f"{r.stdout.decode(errors='replace')[-1500:]}{r.stderr.decode(errors='replace')[-1500:]}"
        )


def check_bare(r: subprocess.CompletedProcess[bytes]) -> None:
    _expect_code(r, 0, "python3 -c pass")


def check_version(r: subprocess.CompletedProcess[bytes]) -> None:
    _expect_code(r, 0, "join-agent --version")
    if not r.stdout.startswith(b"join-agent "):
        raise BenchError(f"join-agent --version printed {r.stdout[:200]!r}")


def check_fast_text(r: subprocess.CompletedProcess[bytes]) -> None:
    _expect_code(r, 0, "join-agent status (daemon running)")
    out = r.stdout.decode(errors="replace")
    if "State:        valid, healthy" not in out or "Agent:        running" not in out:
        raise BenchError(f"unexpected fast-path status:\n{out[-1500:]}")


def check_json(source: str, code: int) -> Callable[[subprocess.CompletedProcess[bytes]], None]:
    def check(r: subprocess.CompletedProcess[bytes]) -> None:
        _expect_code(r, code, f"join-agent status --json (source {source})")
        doc = json.loads(r.stdout)
        if doc.get("source") != source or doc.get("state") != "valid":
            raise BenchError(
                f"status --json: source {doc.get('source')!r}, state {doc.get('state')!r}; "
                f"expected source {source!r}, state 'valid': {json.dumps(doc)[:1500]}"
            )

    return check


def check_slow_text(r: subprocess.CompletedProcess[bytes]) -> None:
    _expect_code(r, 1, "join-agent status (no daemon)")
    out = r.stdout.decode(errors="replace")
    if "State:        valid, degraded" not in out or "NOT RUNNING" not in out:
        raise BenchError(f"unexpected slow-path status:\n{out[-1500:]}")


# ----------------------------------------------------------------------------- timing


def run_checked(job: Job, env: Mapping[str, str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(job.argv, capture_output=True, env=dict(env), check=False, timeout=60)
    elapsed = time.perf_counter() - start
    job.check(r)
    return elapsed


def series(
    jobs: Mapping[str, Job], env: Mapping[str, str], runs: int, warmup: int, what: str
) -> dict[str, Stats]:
    """Every job ``runs`` times, round-robin with the order rotating each round, after
    ``warmup`` untimed rounds (which fill the bytecode cache)."""
    names = list(jobs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + runs):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            elapsed = run_checked(jobs[n], env)
            if i >= warmup:
                times[n].append(elapsed)
        if i >= warmup:
            print(f"\r{what}: {i + 1 - warmup}/{runs} rounds", end="", file=sys.stderr)
    print(file=sys.stderr)
    return {n: Stats(tuple(t)) for n, t in times.items()}


def import_profile(
    python: Path, join_agent: Path, config: Path, env: Mapping[str, str], *, check: Job, runs: int
) -> ImportProfile:
    """``python -X importtime <console script> --config C status``, ``runs`` times: the
    imports after start-up (what a bare ``python -c pass`` imports is left out); medians."""
    bare = subprocess.run(
        [str(python), "-X", "importtime", "-c", "pass"],
        capture_output=True,
        env=dict(env),
        check=True,
        timeout=60,
    )
    startup = {e.name for e in parse_importtime(bare.stderr.decode(errors="replace"))}
    profiles: list[list[ImportEntry]] = []
    for _ in range(runs):
        argv = [str(python), "-X", "importtime", str(join_agent), "--config", str(config)]
        r = subprocess.run(
            [*argv, "status"], capture_output=True, env=dict(env), check=False, timeout=60
        )
        check.check(r)
        entries = parse_importtime(r.stderr.decode(errors="replace"))
        profiles.append([e for e in entries if e.name not in startup])

    def med(values: Sequence[int]) -> int:
        return int(statistics.median(values)) if values else 0

    totals = [sum(e.cumulative_us for e in p if e.depth == 0) for p in profiles]
    root_names = [e.name for e in profiles[0] if e.depth == 0]
    roots = [
        (
            n,
            med(
                [sum(e.cumulative_us for e in p if e.depth == 0 and e.name == n) for p in profiles]
            ),
        )
        for n in root_names
    ]
    per_run = [by_package(p) for p in profiles]
    packages = {
        name: (mods, med([pr.get(name, (0, 0))[1] for pr in per_run]))
        for name, (mods, _) in per_run[0].items()
    }
    packages = dict(sorted(packages.items(), key=lambda kv: -kv[1][1]))
    return ImportProfile(
        total_us=med(totals),
        roots=sorted(roots, key=lambda kv: -kv[1]),
        packages=packages,
    )


def versions_of(python: Path, env: Mapping[str, str]) -> dict[str, str]:
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for d in ('cryptography', 'structlog', 'PyYAML'):\n"
        "    out[d] = m.version(d)\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=dict(env), check=True
    )
    versions: dict[str, str] = json.loads(r.stdout)
    return versions


def measure_variant(
    label: str, join_agent: Path, *, tmp: Path, ca: CfsslCA, pin: str, args: argparse.Namespace
) -> Variant:
    python = interpreter_of(join_agent)
    slug = label.replace(" ", "-")
    env = python_env(tmp / f"pycache-{slug}")
    versions = versions_of(python, env)
    print(f"[{label}] {join_agent} (python {versions['python']})", file=sys.stderr)
    node = Node(tmp / f"node-{slug}", ca, pin, tuple(args.addresses or ())).write()
    cfg = ["--config", str(node.config)]
    bare = Job([str(python), "-c", "pass"], check_bare)
    fast_json = Job([str(join_agent), *cfg, "status", "--json"], check_json("daemon", 0))
    out: dict[str, dict[str, Stats]] = {}
    with running_agent([str(join_agent)], node, env, tmp / f"node-{slug}.log"):
        run_checked(fast_json, env)  # the fast path holds before ...
        out["daemon running"] = series(
            {
                BARE: bare,
                VERSION: Job([str(join_agent), "--version"], check_version),
                FAST: Job([str(join_agent), *cfg, "status"], check_fast_text),
                JSON: fast_json,
            },
            env,
            args.runs,
            args.warmup,
            f"[{label}] daemon running",
        )
        run_checked(fast_json, env)  # ... and after the series: the files never changed
        fast_imports = import_profile(
            python,
            join_agent,
            node.config,
            env,
            check=Job([], check_fast_text),
            runs=args.import_runs,
        )
    slow_json = Job([str(join_agent), *cfg, "status", "--json"], check_json("files", 1))
    run_checked(slow_json, env)
    out["no daemon"] = series(
        {BARE: bare, SLOW: Job([str(join_agent), *cfg, "status"], check_slow_text)},
        env,
        args.runs,
        args.warmup,
        f"[{label}] no daemon",
    )
    slow_imports = import_profile(
        python, join_agent, node.config, env, check=Job([], check_slow_text), runs=args.import_runs
    )
    return Variant(label, join_agent, python, versions, out, fast_imports, slow_imports)


# ----------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def results_table(variants: Sequence[Variant]) -> list[str]:
    lines = [
        "| deps | series | command | median ms | p90 ms | min ms | runs | x bare (medians) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        for name, jobs in v.series.items():
            for job, st in jobs.items():
                ratio = "1.00" if job == BARE else f"{v.ratio(name, job):.2f}"
                lines.append(
                    f"| {v.label} | {name} | {job} | {ms(st.median)} | {ms(st.p90)} | "
                    f"{ms(st.min)} | {len(st.runs)} | {ratio} |"
                )
    return lines


def verdicts(variants: Sequence[Variant]) -> list[str]:
    out = []
    for v in variants:
        fast, js, slow = (
            v.ratio("daemon running", FAST),
            v.ratio("daemon running", JSON),
            v.ratio("no daemon", SLOW),
        )
        met = "met" if max(fast, js) <= TARGET else "**NOT met**"
        run = v.series["daemon running"]
        out.append(
            f"- {v.label}: fast path **{fast:.2f}x** a bare start (`--json` {js:.2f}x; "
            f"target ≤ {TARGET:g}x): {met}; slow path {slow:.2f}x. The {TARGET:g}x budget in "
            f"that series is {ms(run[BARE].median * TARGET)} ms; the fast path takes "
            f"{ms(run[FAST].median)} ms, and {VERSION} alone (console script, `join_agent.cli`, "
            f"argparse) {ms(run[VERSION].median)} ms ({v.ratio('daemon running', VERSION):.2f}x)."
        )
    return out


def imports_lines(variants: Sequence[Variant]) -> list[str]:
    lines: list[str] = []
    for v in variants:
        for name, prof, job in (
            ("fast path", v.fast_imports, FAST),
            ("slow path", v.slow_imports, SLOW),
        ):
            series_name = "daemon running" if job == FAST else "no daemon"
            s = v.series[series_name]
            extra = s[job].median - s[BARE].median
            roots = [(n, us) for n, us in prof.roots if us >= 500]
            top = prof.roots[:4]
            dominant = (
                "  - dominant: "
                + "; ".join(f"`{n}` {us / 1000:.1f} ms ({WHY.get(n, '?')})" for n, us in top)
                + f" — together {sum(us for _, us in top) / 1000:.1f} ms, "
                f"{sum(us for _, us in top) / 1000 / (extra * 1000) * 100:.0f}% of the time "
                "beyond a bare start."
            )
            lines += [
                f"- {v.label}, {name}: all imports after start-up {prof.total_us / 1000:.1f} "
                f"ms of the {extra * 1000:.1f} ms a status takes beyond a bare start "
                f"(medians; importtime inflates a little). Root imports ≥ 0.5 ms "
                "(cumulative): "
                + ", ".join(f"`{n}` {us / 1000:.1f}" for n, us in roots)
                + ". Heaviest top-level packages (summed self time, ms): "
                + ", ".join(
                    f"`{p}` {us / 1000:.1f}" for p, (_, us) in list(prof.packages.items())[:12]
                )
                + ".",
                dominant,
            ]
    return lines


def render_markdown(
    variants: Sequence[Variant], info: Mapping[str, str], args: argparse.Namespace
) -> str:
    lines = [
        MARKER_BEGIN,
        "## `join-agent status` wall time",
        "",
        f"Generated by `bench/status_time.py` on {time.strftime('%Y-%m-%d')}; re-run with "
        f"`{rerun_command(args, 'status_time.py')}` from the repository root (`--help` for "
        "options).",
        "",
        "### Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        *[
            f"- {v.label}: `{v.join_agent}` (Python {v.versions['python']}, cryptography "
            f"{v.versions['cryptography']}, structlog {v.versions['structlog']}, PyYAML "
            f"{v.versions['PyYAML']})"
            for v in variants
        ],
        "",
        "### Method",
        "",
        "- The set-up of `bench/footprint.py`: a real `cfssl serve` on 127.0.0.1 (one-year "
        "profile), one node whose `join-agent run` (console script) enrolled, wrote the "
        "kubeconfig and started the stand-in kubelet (serving /healthz on 127.0.0.1, which "
        "`status` probes while the daemon runs).",
        "- Three situations: **fast path** (`join-agent --config C status` while the daemon "
        "runs and the files are the ones it recorded in status.json: no PEM is parsed; exit "
        '0), **`--json`, fast path** (the same with `--json`; checked to say `"source": '
        '"daemon"` on every run, and before and after the series), **slow path** (the '
        "daemon stopped by SIGTERM, its files left: `status` parses certificate, CA and "
        'kubeconfig; `"source": "files"`, exit 1 since nothing renews). '
        f"{VERSION} (console script and argparse only) is timed alongside as a floor.",
        f"- Each series: {args.warmup} warm-up rounds, then {args.runs} rounds; a round runs "
        f"{BARE} (the console script's own interpreter, same environment) and each command "
        "once, the order rotating from round to round, so the ratio compares runs made "
        "under the same load. The time is `time.perf_counter()` around `subprocess.run` of "
        "the whole process. Every run's exit code and output are checked; a failure aborts. "
        "p90 is the inclusive 9th decile.",
        "- Bytecode: every process runs with a private `PYTHONPYCACHEPREFIX` and without "
        "`PYTHONDONTWRITEBYTECODE` (which this workspace sets), so the warm-up rounds write "
        ".pyc files and the timed runs load them, as from an installed wheel or .deb.",
        f"- Imports: {args.import_runs} runs of each path under `python -X importtime "
        "<console script> --config C status` (the console script run as a file: the same "
        "code path), medians; what a bare `python -X importtime -c pass` imports is left "
        "out. A root import is one made when no other import is in progress: at the top of "
        "the script, or from a function at run time.",
        "",
        "### Results",
        "",
        *results_table(variants),
        "",
        f"Target (issue 3): fast-path `status` ≤ {TARGET:g}x a bare `python3 -c pass` "
        "(ratio of medians, same series).",
        "",
        *verdicts(variants),
        "",
        "### What a status imports",
        "",
        *imports_lines(variants),
        "",
        MARKER_END,
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30, help="timed rounds per series (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--import-runs", type=int, default=5, help="-X importtime runs (default 5)")
    p.add_argument(
        "--join-agent",
        type=Path,
        default=default_join_agent(),
        metavar="PATH",
        help="join-agent console script (default: next to this Python)",
    )
    p.add_argument(
        "--bookworm-join-agent",
        type=Path,
        metavar="PATH",
        help="also time this one: join-agent over Debian bookworm's dependency versions "
        "(e.g. /tmp/vold/bin/join-agent)",
    )
    p.add_argument(
        "--addresses",
        nargs="+",
        metavar="IP",
        help="set [node] addresses (default: discovered, as in the default config)",
    )
    p.add_argument(
        "--write", type=Path, default=REPO / "docs" / "benchmarks.md", metavar="MARKDOWN"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.runs < 30:
        print(f"note: --runs {args.runs} is below the 30 the report asks for", file=sys.stderr)
    if args.runs < 2 or args.warmup < 1 or args.import_runs < 1:
        p.error("need --runs >= 2, --warmup >= 1 and --import-runs >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    agents = [("newest deps", args.join_agent)]
    if args.bookworm_join_agent:
        agents.append(("bookworm deps", args.bookworm_join_agent))
    info = machine()
    variants: list[Variant] = []
    try:
        with lab("status-time-") as (tmp, ca, pin):
            for label, exe in agents:
                variants.append(measure_variant(label, exe, tmp=tmp, ca=ca, pin=pin, args=args))
    except BenchError as e:
        print(f"status_time: {e}", file=sys.stderr)
        return 1
    info["load average at end (1/5/15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print("\n".join(results_table(variants)))
    print()
    print("\n".join(verdicts(variants)))
    print()
    print("\n".join(imports_lines(variants)))
    if not args.no_write:
        write_section(args.write, render_markdown(variants, info, args), MARKER_BEGIN, MARKER_END)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
