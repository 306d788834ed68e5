"""Wall time of ``join-agent status`` against a bare ``python3 -c pass`` (same interpreter).

On the lab of bench/lab.py (a real one-year ``cfssl serve``, a real ``join-agent run``
with the stand-in kubelet), three situations:

- fast path: the daemon runs and the files are the ones it recorded, so ``status`` reads
  status.json and checks the files' identity, parsing no PEM;
- the same with ``status --json``;
- slow path: the daemon stopped (its files stay), so ``status`` parses the certificate,
  the CA and the kubeconfig itself (and exits 1: degraded, nothing renews).

Every status run alternates with a bare start of the same interpreter and environment,
and each ratio is taken against the bare runs of its own series. Every run's exit code
and output are checked; any failure aborts. One status of each path then runs under
``-X importtime``. docs/benchmarks.md says how to read the figures.

    PYTHONPATH=. .venv/bin/python bench/status_time.py \\
        --bookworm-join-agent .venv-bookworm/bin/join-agent --write
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    BenchError,
    Check,
    Report,
    Stats,
    agents_of,
    expect_code,
    finish,
    interleave,
    interpreter_of,
    load_average,
    machine,
    ms,
    parser,
    python_env,
    table,
    timed,
    versions_of,
)
from bench.lab import Node, lab, running_agent
from tests.lab.cfssl_ca import CfsslCA

from bench import importtime

TARGET = 3.0  # fast-path status / bare interpreter, medians (issue 3)
BARE = "`python3 -c pass`"
VERSION = "`join-agent --version`"
FAST = "`status`, fast path"
JSON = "`status --json`, fast path"
SLOW = "`status`, slow path (no daemon)"
RUNNING, STOPPED = "daemon running", "no daemon"


def check_output(code: int, what: str, needles: Sequence[str]) -> Check:
    exit_code = expect_code(code, what)

    def check(r: subprocess.CompletedProcess[bytes]) -> None:
        exit_code(r)
        out = r.stdout.decode(errors="replace")
        if not all(n in out for n in needles):
            raise BenchError(f"{what}: expected {needles!r} in:\n{out[-1500:]}")

    return check


def check_json(source: str, code: int) -> Check:
    exit_code = expect_code(code, f"join-agent status --json (source {source})")

    def check(r: subprocess.CompletedProcess[bytes]) -> None:
        exit_code(r)
        doc = json.loads(r.stdout)
        if doc.get("source") != source or doc.get("state") != "valid":
            raise BenchError(
                f"status --json: source {doc.get('source')!r}, state {doc.get('state')!r}; "
                f"expected source {source!r}, state 'valid': {json.dumps(doc)[:1500]}"
            )

    return check


FAST_TEXT = check_output(0, "status (daemon running)", ["State:        valid, healthy"])
SLOW_TEXT = check_output(1, "status (no daemon)", ["State:        valid, degraded", "NOT RUNNING"])


@dataclass(frozen=True)
class Imports:
    total_us: int  # every import after start-up
    roots: dict[str, int]  # root import -> cumulative us, heaviest first
    packages: dict[str, int]  # top-level package -> summed self us, heaviest first


@dataclass(frozen=True)
class Variant:
    label: str
    versions: Mapping[str, str]
    series: Mapping[str, Mapping[str, Stats]]  # series -> command -> times
    imports: Mapping[str, Imports]  # FAST / SLOW -> what that path imports

    def ratio(self, series: str, job: str) -> float:
        s = self.series[series]
        return s[job].median / s[BARE].median

    def beyond_bare(self, series: str, job: str) -> float:
        s = self.series[series]
        return s[job].median - s[BARE].median


def imports_of(
    argv: Sequence[str], python: Path, env: Mapping[str, str], *, code: int, runs: int
) -> Imports:
    """Medians of ``runs`` runs of ``argv`` (``python -X importtime …``), without what a
    bare start imports."""
    profiles = [
        importtime.after_startup(python, env, importtime.run(argv, env, code=code))
        for _ in range(runs)
    ]
    roots = [importtime.root_costs(p) for p in profiles]
    packages = [importtime.by_package(p) for p in profiles]
    return Imports(
        total_us=importtime.median_of([importtime.total_us(p) for p in profiles]),
        roots=_heaviest({n: importtime.median_of([r.get(n, 0) for r in roots]) for n in roots[0]}),
        packages=_heaviest(
            {n: importtime.median_of([p.get(n, (0, 0))[1] for p in packages]) for n in packages[0]}
        ),
    )


def _heaviest(costs: dict[str, int]) -> dict[str, int]:
    return dict(sorted(costs.items(), key=lambda kv: -kv[1]))


Job = tuple[Sequence[str], Check]


def measure(
    label: str, join_agent: Path, *, tmp: Path, ca: CfsslCA, args: argparse.Namespace
) -> Variant:
    python = interpreter_of(join_agent)
    slug = label.replace(" ", "-")
    env = python_env(tmp / f"pycache-{slug}")
    versions = versions_of(python, env)
    print(f"[{label}] {join_agent} (python {versions['python']})", file=sys.stderr)
    node = Node(tmp / f"node-{slug}", ca, ca.pin, tuple(args.addresses or ())).write()
    status = [str(join_agent), "--config", str(node.config), "status"]
    traced = [str(python), "-X", "importtime", *status]
    jobs: dict[str, Job] = {
        BARE: ([str(python), "-c", "pass"], expect_code(0, "python3 -c pass")),
        VERSION: ([str(join_agent), "--version"], expect_code(0, "join-agent --version")),
        FAST: (status, FAST_TEXT),
        JSON: ([*status, "--json"], check_json("daemon", 0)),
        SLOW: (status, SLOW_TEXT),
    }

    def run(name: str) -> float:
        return timed(jobs[name][0], env, jobs[name][1])

    def series(names: Sequence[str], what: str) -> dict[str, Stats]:
        return interleave(
            {n: functools.partial(run, n) for n in names},
            rounds=args.runs,
            warmup=args.warmup,
            what=f"[{label}] {what}",
        )

    with running_agent([str(join_agent)], node, env, tmp / f"node-{slug}.log"):
        run(JSON)  # the fast path holds before the series ...
        running = series([BARE, VERSION, FAST, JSON], RUNNING)
        run(JSON)  # ... and after it: the files never changed
        fast = imports_of(traced, python, env, code=0, runs=args.import_runs)
        loaded = [m for m in fast.roots if m.startswith(("join_agent.config", "argparse"))]
        if loaded:  # the figures would be the usual path's, under the fast path's name
            raise BenchError(f"[{label}] the fast path loaded {loaded}: no record used?")
    timed([*status, "--json"], env, check_json("files", 1))
    stopped = series([BARE, SLOW], STOPPED)
    slow = imports_of(traced, python, env, code=1, runs=args.import_runs)
    return Variant(label, versions, {RUNNING: running, STOPPED: stopped}, {FAST: fast, SLOW: slow})


def report(variants: Sequence[Variant], facts: dict[str, str]) -> Report:
    for v in variants:
        facts[f"{v.label}: Python / cryptography / structlog / PyYAML"] = " / ".join(
            v.versions[k] for k in ("python", "cryptography", "structlog", "PyYAML")
        )
    runs = [
        [v.label, name, job, ms(st.median), ms(st.p90), ms(st.min), str(len(st.runs)),
         "1.00" if job == BARE else f"{v.ratio(name, job):.2f}"]
        for v in variants for name, jobs in v.series.items() for job, st in jobs.items()
    ]  # fmt: skip
    targets = [
        [v.label, f"{v.ratio(RUNNING, FAST):.2f}x", f"{v.ratio(RUNNING, JSON):.2f}x",
         f"{v.ratio(STOPPED, SLOW):.2f}x", f"{v.ratio(RUNNING, VERSION):.2f}x",
         "met" if max(v.ratio(RUNNING, FAST), v.ratio(RUNNING, JSON)) <= TARGET else "**not met**"]
        for v in variants
    ]  # fmt: skip
    imports = [
        [v.label, path, ms(v.beyond_bare(RUNNING if path == FAST else STOPPED, path)),
         f"{prof.total_us / 1000:.1f}",
         ", ".join(f"`{n}` {us / 1000:.1f}" for n, us in prof.roots.items() if us >= 500),
         ", ".join(f"`{n}` {us / 1000:.1f}" for n, us in list(prof.packages.items())[:10])]
        for v in variants for path, prof in v.imports.items()
    ]  # fmt: skip
    body = [
        *table(
            ["deps", "series", "command", "median ms", "p90 ms", "min ms", "runs", "x bare"],
            runs,
            "lllrrrrr",
        ),
        "",
        *table(
            ["deps", "fast path", "`--json`", "slow path", VERSION, f"fast path ≤ {TARGET:g}x"],
            targets,
            "lrrrrl",
        ),
        "",
        *table(
            ["deps", "path", "ms beyond bare", "imports ms", "root imports ≥ 0.5 ms",
             "heaviest packages (self ms)"],
            imports,
            "llrrll",
        ),
    ]  # fmt: skip
    return Report("status_time", facts, body)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=30, help="timed rounds per series (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--import-runs", type=int, default=5, help="-X importtime runs (default 5)")
    p.add_argument(
        "--addresses",
        nargs="+",
        metavar="IP",
        help="set [node] addresses (default: discovered, as in the default config)",
    )
    args = p.parse_args(argv)
    if args.runs < 2 or args.warmup < 1 or args.import_runs < 1:
        p.error("need --runs >= 2, --warmup >= 1 and --import-runs >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine({"cfssl": ["cfssl", "version"]})
    try:
        with lab("status-time-") as (tmp, ca, _):
            variants = [
                measure(label, exe, tmp=tmp, ca=ca, args=args) for label, exe in agents_of(args)
            ]
    except BenchError as e:
        print(f"status_time: {e}", file=sys.stderr)
        return 1
    facts["load average at end (1/5/15 min)"] = load_average()
    finish(report(variants, facts), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
