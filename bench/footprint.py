"""Idle footprint of ``join-agent run``: memory, CPU time and wake-ups of the resident loop.

On the lab of bench/lab.py (a real one-year ``cfssl serve``, so that nothing is renewed
while measuring, and the stand-in kubelet), ``join-agent run`` started as systemd starts a
``Type=notify`` service with ``WatchdogSec=``: ``NOTIFY_SOCKET`` is a real AF_UNIX
datagram socket this script listens on, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are set.
The agent enrolls (in its worker child), starts the kubelet and reports ``running`` in
its status.json; once the kubelet is stable too, it is left alone to settle, then
watched through /proc for a window (60 s by default). Only the agent's own process is
measured, never the kubelet or the worker children:

- memory: VmRSS and VmHWM (/proc/PID/status), PSS (/proc/PID/smaps_rollup);
- CPU: utime+stime (/proc/PID/stat, clock ticks) and the scheduler's run time
  (/proc/PID/task/*/schedstat, ns), over the window;
- wake-ups: voluntary + involuntary context switches summed over every thread
  (/proc/PID/task/*/status), over the window, sampled every 0.1 s so that each wake-up
  can be matched with the sd_notify message it sent;
- sd_notify: every message received during the window (WATCHDOG=1 and anything else),
  and every rewrite of status.json.

Then, what the resident process holds: the shared objects mapped in it
(/proc/PID/maps: cryptography's ``_rust`` or ``_cffi_backend`` would show that the loop
loaded cryptography), the modules a fresh interpreter loads for the daemon's imports
(``python -X importtime -c "import join_agent.daemon, …"``), and the modules a real
``join-agent run`` imports over its life up to the idle loop (the same agent run under
``python -X importtime -m join_agent``; the worker children do not inherit ``-X``).

Every process this script starts is stopped by pid in a ``finally``; any failure (the
agent exits, a renewal or a kubelet restart during the window) aborts the benchmark.

    PYTHONPATH=. .venv/bin/python bench/footprint.py \\
        --bookworm-join-agent .venv-bookworm/bin/join-agent --write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from bench.harness import (
    BenchError,
    Report,
    agents_of,
    finish,
    interpreter_of,
    load_average,
    machine,
    parser,
    python_env,
    table,
    versions_of,
)
from bench.lab import Agent, Node, lab, running_agent
from tests.lab.cfssl_ca import CfsslCA

from bench import importtime

RSS_TARGET_MIB = 20.0  # issue 17 (issue 3 asked 30)
# What `join-agent run` imports before its first log line, as it imports it: the command
# line, the config, the daemon, with structlog's asyncio deferred (log.defer_asyncio).
RESIDENT_STATEMENT = (
    "from join_agent import cli, log, usage; log.defer_asyncio(); "
    "import join_agent.config.loading, join_agent.daemon.startup"
)
# Third-party or heavy stdlib packages the resident loop should not need.
HEAVY = (
    "cryptography", "cffi", "_cffi_backend", "httpx", "httpcore", "h11", "anyio", "sniffio",
    "idna", "certifi", "rfc3986", "yaml", "_yaml", "ssl", "_ssl", "structlog", "asyncio",
    "tenacity", "prometheus_client", "email", "http",
)  # fmt: skip
# Shared objects that betray a heavy import (httpx/httpcore are pure Python: see imports).
HEAVY_SO = {
    "_rust": "cryptography",
    "_openssl": "cryptography (old releases)",
    "_cffi_backend": "cffi (cryptography)",
    "_ssl": "ssl",
    "_yaml": "PyYAML's C loader",
    "_asyncio": "asyncio",
    "libssl": "OpenSSL (with ssl or cryptography)",
    "libcrypto": "OpenSSL (with ssl, hashlib or cryptography)",
}


class NotifyListener:
    """A real NOTIFY_SOCKET: an AF_UNIX datagram socket, read by a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []  # (monotonic time, one line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in data.decode("utf-8", "replace").splitlines():
                self.messages.append((now, line))

    def between(self, start: float, end: float) -> list[tuple[float, str]]:
        return [(t, m) for t, m in list(self.messages) if start <= t <= end]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# ----------------------------------------------------------------------------- /proc


def proc_status(pid: int | str, tid: str | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def kib(value: str) -> int:
    return int(value.split(maxsplit=1)[0])


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic
    voluntary: int
    involuntary: int
    threads: int
    run_ns: int  # schedstat: time on a CPU, all threads
    ticks: int  # utime + stime, the whole thread group
    status_mtime: int  # status.json's st_mtime_ns (0: none)


def sample(pid: int, status_file: Path) -> Sample:
    t = time.monotonic()
    vol = invol = run_ns = threads = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = proc_status(pid, tid)
            run_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between listdir and read
        vol += int(st["voluntary_ctxt_switches"])
        invol += int(st["nonvoluntary_ctxt_switches"])
        threads += 1
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    try:
        mtime = status_file.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = 0
    return Sample(
        t=t,
        voluntary=vol,
        involuntary=invol,
        threads=threads,
        run_ns=run_ns,
        ticks=int(fields[11]) + int(fields[12]),
        status_mtime=mtime,
    )


def memory(pid: int) -> dict[str, int | None]:
    st = proc_status(pid)
    mem: dict[str, int | None] = {
        "rss_kib": kib(st["VmRSS"]),
        "hwm_kib": kib(st["VmHWM"]),
        "rss_anon_kib": kib(st["RssAnon"]),
        "rss_file_kib": kib(st["RssFile"]),
        "pss_kib": None,
        "pss_anon_kib": None,
        "pss_file_kib": None,
    }
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return mem
    for line in rollup.splitlines():
        key, _, value = line.partition(":")
        if key in ("Pss", "Pss_Anon", "Pss_File"):
            mem[key.lower() + "_kib"] = kib(value)
    return mem


def mapped_objects(pid: int) -> list[str]:
    """Every shared object (.so) mapped in ``pid``, by path."""
    seen: dict[str, None] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and ".so" in Path(parts[5]).name:
            seen[parts[5]] = None
    return list(seen)


def heavy_objects(paths: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for p in paths:
        name = Path(p).name
        for stem, what in HEAVY_SO.items():
            if name.startswith(stem + ".") or name.startswith(stem + "-"):
                out.append((p, what))
    return out


def missing(python: Path, names: Sequence[str], env: Mapping[str, str]) -> set[str]:
    """Names -X importtime lists that are not installed: failed optional imports."""
    code = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]))\n"
    )
    r = subprocess.run(
        [str(python), "-c", code, *names],
        capture_output=True,
        text=True,
        env=dict(env),
        check=True,
    )
    return set(json.loads(r.stdout))


def heavy_in(packages: Mapping[str, Any]) -> list[str]:
    return [p for p in HEAVY if p in packages]


def fresh_imports(python: Path, env: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    argv = [str(python), "-X", "importtime", "-c", RESIDENT_STATEMENT]
    return importtime.by_package(importtime.run(argv, env))


def rss_of_statement(python: Path, statement: str, env: Mapping[str, str]) -> dict[str, int | None]:
    """Memory of a fresh interpreter that ran ``statement`` and waits."""
    code = f"{statement}\nimport sys\nprint('ready', flush=True)\nsys.stdin.read()\n"
    proc = subprocess.Popen(
        [str(python), "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    try:
        line = cast(IO[bytes], proc.stdout).readline()
        if line.strip() != b"ready":
            err = cast(IO[bytes], proc.stderr).read().decode(errors="replace")
            raise BenchError(f"python -c {statement!r} failed: {err[-1500:]}")
        return memory(proc.pid)
    finally:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------- measuring


@dataclass
class Footprint:
    label: str
    join_agent: Path
    python: Path
    versions: dict[str, str]
    window_s: float
    nominal_window_s: float
    sample_every: float
    watchdog_half_s: float
    mem_start: dict[str, int | None]
    mem_end: dict[str, int | None]
    first: Sample
    last: Sample
    wake_times: list[float]  # seconds into the window, one per burst of switches
    watchdog_times: list[float]
    other_messages: list[tuple[float, str]]
    status_writes: int
    mapped: list[str]
    resident_packages: dict[str, tuple[int, int]]
    chains: dict[str, list[str]]
    not_installed: set[str]
    fresh_packages: dict[str, tuple[int, int]]
    bare_mem: dict[str, int | None]
    modules_mem: dict[str, int | None]
    heavy_mem: dict[str, dict[str, int | None]]

    @property
    def cpu_s(self) -> float:
        return (self.last.run_ns - self.first.run_ns) / 1e9

    @property
    def cpu_ticks_s(self) -> float:
        return (self.last.ticks - self.first.ticks) / os.sysconf("SC_CLK_TCK")

    @property
    def voluntary(self) -> int:
        return self.last.voluntary - self.first.voluntary

    @property
    def involuntary(self) -> int:
        return self.last.involuntary - self.first.involuntary

    @property
    def wakeups(self) -> int:
        return self.voluntary + self.involuntary

    @property
    def allowed_wakeups(self) -> int:
        # The nominal window: the measured one overshoots it by a sampling interval.
        return math.ceil(self.nominal_window_s / self.watchdog_half_s - 1e-9)

    @property
    def unexplained_wakes(self) -> list[float]:
        return [
            t for t in self.wake_times if not any(abs(t - w) < 0.5 for w in self.watchdog_times)
        ]

    @property
    def rss_mib(self) -> float:
        return (self.mem_end["rss_kib"] or 0) / 1024

    @property
    def hwm_mib(self) -> float:
        return (self.mem_end["hwm_kib"] or 0) / 1024

    @property
    def rss_met(self) -> bool:
        return self.hwm_mib <= RSS_TARGET_MIB

    @property
    def wakeups_met(self) -> bool:
        """Each voluntary switch is one sleep that ended (a wake-up); each burst of
        switches one wake-up as seen from outside."""
        return (
            self.voluntary <= self.allowed_wakeups
            and len(self.wake_times) <= self.allowed_wakeups
            and not self.stray_messages
            and self.status_writes == 0
            and not self.unexplained_wakes
        )

    @property
    def stray_messages(self) -> list[tuple[float, str]]:
        """Messages other than WATCHDOG=1 sent away from a watchdog tick (a wake-up of
        their own); those sent in the same tick ride on it."""
        return [
            (t, m) for t, m in self.other_messages
            if not any(abs(t - w) < 0.5 for w in self.watchdog_times)
        ]  # fmt: skip


def watch(
    agent: Agent, listener: NotifyListener, window: float, every: float = 0.1
) -> tuple[list[Sample], list[tuple[float, str]]]:
    """Sample the agent for ``window`` seconds; every notify message in that time."""
    status_file = agent.node.state / "status.json"
    serial = (agent.node.status().get("credentials") or {}).get("serial")
    kubelets = agent.node.kubelet_pids()
    samples = [sample(agent.pid, status_file)]
    end = samples[0].t + window
    while True:
        time.sleep(max(0.0, min(every, end - time.monotonic())))
        if agent.proc.poll() is not None:
            raise BenchError(f"join-agent run exited during the window:\n{agent.logs()}")
        samples.append(sample(agent.pid, status_file))
        if samples[-1].t >= end:
            break
    doc = agent.node.status()
    if (doc.get("credentials") or {}).get("serial") != serial:
        raise BenchError("the certificate was renewed during the window: not idle")
    if agent.node.kubelet_pids() != kubelets:
        raise BenchError(f"the kubelet was restarted during the window: {agent.logs()}")
    if (doc.get("agent") or {}).get("state") != "running":
        raise BenchError(f"the agent left 'running' during the window: {json.dumps(doc)[:800]}")
    return samples, listener.between(samples[0].t, samples[-1].t)


def wake_bursts(samples: Sequence[Sample]) -> list[float]:
    """Seconds into the window of each burst of context switches (adjacent samples that
    saw switches are one burst: one wake-up of the loop may block more than once)."""
    out: list[float] = []
    last_hit = -1
    for i in range(1, len(samples)):
        a, b = samples[i - 1], samples[i]
        if (b.voluntary + b.involuntary) > (a.voluntary + a.involuntary):
            if last_hit != i - 1:
                out.append(b.t - samples[0].t)
            last_hit = i
    return out


def measure_one(
    label: str,
    join_agent: Path,
    *,
    tmp: Path,
    ca: CfsslCA,
    args: argparse.Namespace,
) -> Footprint:
    pin = ca.pin
    python = interpreter_of(join_agent)
    slug = label.replace(" ", "-")
    env = python_env(tmp / f"pycache-{slug}")
    addresses = tuple(args.addresses or ())
    versions = versions_of(python, env)
    print(f"[{label}] {join_agent} (python {versions['python']})", file=sys.stderr)

    # Warm-up: a whole enrollment and start, to fill the bytecode cache.
    warm = Node(tmp / f"warm-{slug}", ca, pin, addresses).write()
    with running_agent([str(join_agent)], warm, env, tmp / f"warm-{slug}.log"):
        pass

    # The measured run: a fresh node, so the resident process enrolled (in its worker) too.
    node = Node(tmp / f"node-{slug}", ca, pin, addresses).write()
    sock = tmp / f"notify-{slug}.sock"
    listener = NotifyListener(sock)
    run_env = {**env, "NOTIFY_SOCKET": str(sock), "WATCHDOG_USEC": str(args.watchdog_usec)}
    try:
        with running_agent(
            [str(join_agent)], node, run_env, tmp / f"node-{slug}.log", watchdog_pid=True
        ) as agent:
            print(f"[{label}] running; settling {args.settle:g} s", file=sys.stderr)
            time.sleep(args.settle)
            mem_start = memory(agent.pid)
            print(f"[{label}] watching for {args.window:g} s", file=sys.stderr)
            samples, messages = watch(agent, listener, args.window, args.sample_every)
            mem_end = memory(agent.pid)
            mapped = mapped_objects(agent.pid)
            watchdog = [t - samples[0].t for t, m in messages if m == "WATCHDOG=1"]
            others = [(t - samples[0].t, m) for t, m in messages if m != "WATCHDOG=1"]
            writes = len({s.status_mtime for s in samples}) - 1
            if not any(m == "READY=1" for _, m in listener.messages):
                raise BenchError("the agent never sent READY=1")
    finally:
        listener.close()

    # What a real `join-agent run` imports over its life, up to the idle loop.
    imp = Node(tmp / f"imports-{slug}", ca, pin, addresses).write()
    log = tmp / f"imports-{slug}.log"
    with running_agent([str(python), "-X", "importtime", "-m", "join_agent"], imp, env, log):
        time.sleep(args.settle)
        entries = importtime.parse(log.read_text(errors="replace"))
    resident = importtime.by_package(entries)
    if "join_agent" not in resident:
        raise BenchError(f"no -X importtime output from the agent in {log}")

    fresh = fresh_imports(python, env)
    chains = {p: importtime.import_chain(entries, p) for p in heavy_in(resident)}
    # The root imports that brought heavy packages in (structlog brings asyncio and ssl):
    # what each adds, measured once per root so nothing is counted twice.
    roots = sorted({c[-1].split(".")[0] for c in chains.values() if c})
    roots = [r for r in roots if r != "join_agent"]
    return Footprint(
        label=label,
        join_agent=join_agent,
        python=python,
        versions=versions,
        window_s=samples[-1].t - samples[0].t,
        nominal_window_s=args.window,
        sample_every=args.sample_every,
        watchdog_half_s=args.watchdog_usec / 2e6,
        mem_start=mem_start,
        mem_end=mem_end,
        first=samples[0],
        last=samples[-1],
        wake_times=wake_bursts(samples),
        watchdog_times=watchdog,
        other_messages=others,
        status_writes=writes,
        mapped=mapped,
        resident_packages=resident,
        chains=chains,
        not_installed=missing(python, list(resident), env),
        fresh_packages=fresh,
        bare_mem=rss_of_statement(python, "pass", env),
        modules_mem=rss_of_statement(python, RESIDENT_STATEMENT, env),
        heavy_mem={
            p: rss_of_statement(python, f"{RESIDENT_STATEMENT}; import {p}", env) for p in roots
        },
    )


# ----------------------------------------------------------------------------- report


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f}"


def yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def by_agent(
    fps: Sequence[Footprint], rows: Sequence[tuple[str, Callable[[Footprint], str]]], align: str
) -> list[str]:
    """A table with one row per figure and one column per agent."""
    return table(
        ["", *(f.label for f in fps)],
        [[name, *(get(f) for f in fps)] for name, get in rows],
        "l" + align * len(fps),
    )


def results_table(fps: Sequence[Footprint]) -> list[str]:
    return by_agent(fps, [
        ("window, s", lambda f: f"{f.window_s:.1f}"),
        ("VmRSS at window end, MiB", lambda f: mib(f.mem_end["rss_kib"])),
        ("VmRSS at window start, MiB", lambda f: mib(f.mem_start["rss_kib"])),
        ("VmHWM (peak RSS), MiB", lambda f: mib(f.mem_end["hwm_kib"])),
        ("RssAnon / RssFile, MiB",
         lambda f: f"{mib(f.mem_end['rss_anon_kib'])} / {mib(f.mem_end['rss_file_kib'])}"),
        ("PSS (smaps_rollup), MiB", lambda f: mib(f.mem_end["pss_kib"])),
        ("CPU over the window (schedstat), ms", lambda f: f"{f.cpu_s * 1000:.1f}"),
        ("CPU over the window (utime+stime), s", lambda f: f"{f.cpu_ticks_s:.2f}"),
        ("threads", lambda f: str(f.last.threads)),
        ("voluntary context switches", lambda f: str(f.voluntary)),
        ("involuntary context switches", lambda f: str(f.involuntary)),
        ("**wake-ups** (voluntary + involuntary)", lambda f: f"**{f.wakeups}**"),
        ("wake-ups per minute", lambda f: f"{f.wakeups * 60 / f.window_s:.1f}"),
        ("wake-ups per watchdog half-period",
         lambda f: f"{f.wakeups * f.watchdog_half_s / f.window_s:.2f}"),
        (f"bursts of switches (sampled every {fps[0].sample_every:g} s)",
         lambda f: str(len(f.wake_times))),
        ("WATCHDOG=1 received", lambda f: str(len(f.watchdog_times))),
        ("bursts of switches not within 0.5 s of a WATCHDOG=1",
         lambda f: str(len(f.unexplained_wakes))),
        ("other sd_notify messages (away from a WATCHDOG=1)",
         lambda f: f"{len(f.other_messages)} ({len(f.stray_messages)})"),
        ("status.json rewrites", lambda f: str(f.status_writes)),
        ("bare `python -c pass`: VmRSS, MiB", lambda f: mib(f.bare_mem["rss_kib"])),
        ("fresh python after the daemon's imports: VmRSS, MiB",
         lambda f: mib(f.modules_mem["rss_kib"])),
        (f"peak RSS ≤ {RSS_TARGET_MIB:.0f} MiB", lambda f: yes(f.rss_met)),
        ("wake-ups: ≤ 1 per watchdog half-period, nothing else", lambda f: yes(f.wakeups_met)),
        ("switches at, s", lambda f: ", ".join(f"{t:.1f}" for t in f.wake_times) or "none"),
        ("WATCHDOG=1 at, s", lambda f: ", ".join(f"{t:.1f}" for t in f.watchdog_times) or "none"),
        ("other messages",
         lambda f: "; ".join(f"{t:.1f} `{m[:60]}`" for t, m in f.other_messages) or "none"),
    ], "r")  # fmt: skip


def site_packages(f: Footprint) -> list[str]:
    return [p for p in f.mapped if "site-packages" in p]


def names(items: Iterable[str]) -> str:
    return ", ".join(f"`{p}`" for p in items) or "none"


def imports_table(fps: Sequence[Footprint]) -> list[str]:
    def installed(
        packages: Mapping[str, tuple[int, int]], f: Footprint
    ) -> dict[str, tuple[int, int]]:
        return {p: v for p, v in packages.items() if p not in f.not_installed}

    def chains(f: Footprint) -> str:
        res = installed(f.resident_packages, f)
        return (
            "; ".join(
                f"`{p}` ← " + " ← ".join(f.chains[p][1:] or ["(root)"]) for p in heavy_in(res)
            )
            or "none"
        )

    def root_mem(f: Footprint) -> str:
        base = f.modules_mem["rss_kib"] or 0
        return (
            "; ".join(
                f"`{p}` +{((m['rss_kib'] or 0) - base) / 1024:.1f}" for p, m in f.heavy_mem.items()
            )
            or "none"
        )

    def modules(packages: Mapping[str, tuple[int, int]]) -> str:
        return f"{sum(v[0] for v in packages.values())} from {len(packages)} packages"

    def held(f: Footprint, packages: set[str]) -> str:
        return "**yes**" if packages & set(installed(f.resident_packages, f)) else "no"

    return by_agent(fps, [
        ("modules the resident process imported",
         lambda f: modules(installed(f.resident_packages, f))),
        ("modules the daemon's own imports load in a fresh interpreter",
         lambda f: modules(installed(f.fresh_packages, f))),
        ("heavy packages in that fresh import",
         lambda f: names(heavy_in(installed(f.fresh_packages, f)))),
        ("heavy packages in the resident process ← first importer", chains),
        ("imported at run time only (not by that fresh import)",
         lambda f: names(p for p in installed(f.resident_packages, f)
                         if p not in f.fresh_packages)),
        ("tried but not installed", lambda f: names(sorted(f.not_installed))),
        ("heaviest packages by self import time, µs",
         lambda f: ", ".join(f"`{p}` {us}" for p, (_, us) in
                             list(installed(f.resident_packages, f).items())[:12])),
        ("VmRSS a heavy root import adds to the daemon's imports, MiB", root_mem),
        ("cryptography imported", lambda f: held(f, {"cryptography"})),
        ("httpx / httpcore imported", lambda f: held(f, {"httpx", "httpcore"})),
        ("PyYAML imported", lambda f: held(f, {"yaml"})),
        ("shared objects mapped (from site-packages)",
         lambda f: f"{len(f.mapped)} ({names(Path(p).name for p in site_packages(f))})"),
        ("mapped objects that betray a heavy import",
         lambda f: ", ".join(f"`{Path(p).name}` ({w})" for p, w in heavy_objects(f.mapped))
         or "none"),
    ], "l")  # fmt: skip


def report(fps: Sequence[Footprint], facts: dict[str, str], args: argparse.Namespace) -> Report:
    for f in fps:
        facts[f"{f.label}: Python / cryptography / structlog"] = (
            f"{f.versions['python']} / {f.versions['cryptography']} / {f.versions['structlog']}"
        )
    facts["settings"] = (
        f"window {args.window:g} s after {args.settle:g} s idle, counters read every "
        f"{args.sample_every:g} s, WATCHDOG_USEC={args.watchdog_usec}, node addresses "
        + ("set" if args.addresses else "discovered")
    )
    return Report("footprint", facts, [*results_table(fps), "", *imports_table(fps)])


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--window", type=float, default=60, help="seconds measured (default 60)")
    p.add_argument("--settle", type=float, default=5, help="seconds idle first (default 5)")
    p.add_argument(
        "--sample-every",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="how often the counters are read during the window (default 0.1)",
    )
    p.add_argument(
        "--watchdog-usec",
        type=int,
        default=20_000_000,
        help="WATCHDOG_USEC given to the agent (default 20 s: half-period 10 s)",
    )
    p.add_argument(
        "--addresses",
        nargs="+",
        metavar="IP",
        help="set [node] addresses (default: discovered, as in the default config)",
    )
    args = p.parse_args(argv)
    if args.window < 10 or args.settle < 0 or args.watchdog_usec < 1_000_000:
        p.error("need --window >= 10, --settle >= 0 and --watchdog-usec >= 1000000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine({"cfssl": ["cfssl", "version"]})
    try:
        with lab("footprint-") as (tmp, ca, _):
            fps = [
                measure_one(label, exe, tmp=tmp, ca=ca, args=args) for label, exe in agents_of(args)
            ]
    except BenchError as e:
        print(f"footprint: {e}", file=sys.stderr)
        return 1
    facts["load average at end (1/5/15 min)"] = load_average()
    finish(report(fps, facts, args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
