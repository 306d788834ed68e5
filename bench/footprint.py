"""Idle footprint of ``join-agent run``: memory, CPU time and wake-ups of the resident loop.

A real ``cfssl serve`` (``tests.lab.cfssl_ca.CfsslCA``) with a one-year profile, so that
nothing is renewed while measuring, on 127.0.0.1; the stand-in kubelet
(``tests/standins/kubelet.py``); and ``join-agent run`` started as systemd starts a
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

Run from the repository root:

    PYTHONPATH=. /tmp/vnew/bin/python bench/footprint.py \\
        --bookworm-join-agent /tmp/vold/bin/join-agent         # writes docs/benchmarks.md
    PYTHONPATH=. /tmp/vnew/bin/python bench/footprint.py --window 20 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from bench.common import write_section
from tests.lab.cfssl_ca import CfsslCA, free_port

REPO = Path(__file__).resolve().parent.parent
STANDIN_KUBELET = REPO / "tests" / "standins" / "kubelet.py"
NODE_NAME = "bench-node-1"
MARKER_BEGIN = "<!-- footprint.py: begin -->"
MARKER_END = "<!-- footprint.py: end -->"
RSS_TARGET_MIB = 30.0
# The brief's "resident" modules: what the loop itself is made of.
RESIDENT_STATEMENT = (
    "import join_agent.daemon, join_agent.kubelet, join_agent.host.notify, "
    "join_agent.storage.state, join_agent.core.schedule"
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
DEPENDENCIES = ("cryptography", "httpx", "structlog", "sdnotify", "PyYAML", "tenacity")


class BenchError(RuntimeError):
    """A run failed or misbehaved: the benchmark stops."""


# ----------------------------------------------------------------------------- the lab


def python_env(pycache: Path, **extra: str) -> dict[str, str]:
    """The environment of every measured process: a private bytecode cache.

    PYTHONPYCACHEPREFIX keeps the .pyc files out of the checkout; with
    PYTHONDONTWRITEBYTECODE unset they are written by the warm-up runs and read by the
    measured ones, as an installed wheel's or .deb's byte-compiled modules are.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PYTHONDONTWRITEBYTECODE",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "CREDENTIALS_DIRECTORY",
            "JOIN_AGENT_CONFIG",
            "PYTHONPROFILEIMPORTTIME",
        )
    }
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


@dataclass
class Node:
    """One node's sandbox: config.toml, auth key and every path join-agent writes."""

    root: Path
    ca: CfsslCA
    pin: str
    addresses: tuple[str, ...] = ()  # () = discovered from the interfaces (the default)
    healthz_port: int = field(default_factory=free_port)

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubelet_record(self) -> Path:
        return self.root / "kubelet.jsonl"

    def write(self) -> Node:
        self.root.mkdir(parents=True)
        auth_key = self.ca.write_auth_key(self.root / "cfssl-auth-key")
        node: dict[str, Any] = {"name": NODE_NAME}
        if self.addresses:
            node["addresses"] = list(self.addresses)
        tables: dict[str, dict[str, Any]] = {
            "cluster": {"server": "https://127.0.0.1:6443", "name": "bench"},
            "node": node,
            "signer": {"kind": "cfssl"},
            "signer.cfssl": {
                "urls": [self.ca.url],
                "profile": "kubelet",
                "auth_key_file": str(auth_key),
                "ca_pins": [self.pin],
            },
            "paths": {
                "pki_dir": str(self.pki),
                "kubeconfig": str(self.root / "etc" / "kubelet.conf"),
                "ca_file": str(self.root / "etc" / "ca.crt"),
                "state_dir": str(self.state),
            },
            "kubelet": {
                "command": [
                    sys.executable,
                    str(STANDIN_KUBELET),
                    f"--standin-record={self.kubelet_record}",
                    f"--standin-healthz-port={self.healthz_port}",
                ],
                "healthz_url": f"http://127.0.0.1:{self.healthz_port}/healthz",
                # Stable (state "running") 2 s after a start instead of 30 s: only shortens
                # the set-up; the window starts after it either way.
                "stable_after": "2s",
            },
        }
        self.config.write_text("".join(_toml_table(k, v) for k, v in tables.items()))
        return self

    def status(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def kubelet_pids(self) -> list[int]:
        try:
            lines = self.kubelet_record.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [int(json.loads(line)["pid"]) for line in lines if line.strip()]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _toml_table(name: str, values: Mapping[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()) + "\n"


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


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (/proc/PID/task/*/children), depth first."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            out.append(kid)
            out.extend(descendants(kid))
    return out


def kill_pid(pid: int, needle: str) -> None:
    """SIGKILL ``pid`` if it is still the process we started (its command line names
    ``needle``): never a broad kill, never a recycled pid."""
    if needle in cmdline(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Agent:
    """One ``join-agent run`` process (and the kubelet and workers it starts)."""

    def __init__(
        self,
        argv: Sequence[str],
        node: Node,
        env: Mapping[str, str],
        log: Path,
        *,
        watchdog_pid: bool = False,
    ) -> None:
        self.node = node
        self.log_path = log
        full = [*argv, "--config", str(node.config), "run"]
        if watchdog_pid:
            # systemd sets WATCHDOG_PID to the service's main pid; `exec` keeps sh's pid.
            full = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *full]
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=dict(env)
        )
        self.seen_children: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_running(self, timeout: float = 60) -> dict[str, Any]:
        """Until status.json says the agent runs and the kubelet is stable."""
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.seen_children.update(descendants(self.pid))
            if self.proc.poll() is not None:
                raise BenchError(
                    f"join-agent run exited ({self.proc.returncode}) before running:\n"
                    + self.logs()
                )
            doc = self.node.status()
            agent = doc.get("agent") or {}
            kubelet = doc.get("kubelet") or {}
            if (
                agent.get("state") == "running"
                and kubelet.get("state") == "running"
                and not (doc.get("renewal") or {}).get("in_progress")
            ):
                if agent.get("pid") != self.pid:
                    raise BenchError(
                        f"status.json names agent pid {agent.get('pid')}, we started {self.pid}"
                    )
                return doc
            time.sleep(0.1)
        raise BenchError(
            f"join-agent run not running after {timeout:.0f} s; status.json: "
            f"{json.dumps(doc)[:1500]}\n{self.logs()}"
        )

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd stops it; SIGKILL after ``timeout``. Its exit code."""
        self.seen_children.update(descendants(self.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"join-agent run ignored SIGTERM for {timeout:.0f} s") from None

    def cleanup(self) -> None:
        """Whatever is left: the agent, its workers, the kubelet(s) it started."""
        if self.proc.poll() is None:
            self.seen_children.update(descendants(self.pid))
            self.proc.kill()
            self.proc.wait()
        for pid in self.seen_children:
            kill_pid(pid, "join_agent")
        for pid in self.node.kubelet_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if STANDIN_KUBELET.name in cmdline(pid):
                    os.killpg(pid, signal.SIGKILL)  # it leads its own session
        self.log.close()


@contextlib.contextmanager
def running_agent(
    argv: Sequence[str],
    node: Node,
    env: Mapping[str, str],
    log: Path,
    *,
    watchdog_pid: bool = False,
) -> Iterator[Agent]:
    """An agent that is running; stopped (and checked to exit 0) on the way out."""
    agent = Agent(argv, node, env, log, watchdog_pid=watchdog_pid)
    try:
        agent.wait_running()
        yield agent
        code = agent.stop()
        if code != 0:
            raise BenchError(f"join-agent run exited {code} on SIGTERM:\n{agent.logs()}")
        leftover = [p for p in node.kubelet_pids() if STANDIN_KUBELET.name in cmdline(p)]
        if leftover:
            raise BenchError(f"the kubelet (pid {leftover}) outlived the agent")
    finally:
        agent.cleanup()


@contextlib.contextmanager
def lab(prefix: str) -> Iterator[tuple[Path, CfsslCA, str]]:
    """A temporary directory and a running one-year CFSSL CA; both gone afterwards."""
    if not shutil.which("cfssl"):
        raise BenchError("cfssl is not installed: apt-get install golang-cfssl")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    ca = CfsslCA(tmp / "ca", expiry="8760h")
    try:
        ca.start()
        yield tmp, ca, ca.pin
    finally:
        ca.stop()
        shutil.rmtree(tmp, ignore_errors=True)


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


# ----------------------------------------------------------------------------- imports


@dataclass(frozen=True)
class ImportEntry:
    name: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(text: str) -> list[ImportEntry]:
    out = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        body = line[len("import time:") :].split("|")
        self_us, cumulative, raw = body[0].strip(), body[1].strip(), body[2]
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        out.append(ImportEntry(raw.strip(), int(self_us), int(cumulative), depth))
    return out


def by_package(entries: Sequence[ImportEntry]) -> dict[str, tuple[int, int]]:
    """Top-level package -> (modules, summed self time in us), heaviest first."""
    acc: dict[str, list[int]] = {}
    for e in entries:
        a = acc.setdefault(e.name.split(".")[0], [0, 0])
        a[0] += 1
        a[1] += e.self_us
    return dict(sorted(((k, (v[0], v[1])) for k, v in acc.items()), key=lambda kv: -kv[1][1]))


def import_chain(entries: Sequence[ImportEntry], package: str) -> list[str]:
    """Who imported ``package`` first: its name, then each importer up to a root import
    (an import at run time, from a function, is a root: depth 0)."""
    for i, e in enumerate(entries):
        if e.name != package:
            continue
        chain, depth = [e.name], e.depth
        for later in entries[i + 1 :]:
            if later.depth < depth:
                chain.append(later.name)
                depth = later.depth
        # Keep only the steps that change top-level package (asyncio.sslproto -> asyncio).
        out = [chain[0]]
        for name in chain[1:]:
            if name.split(".")[0] != out[-1].split(".")[0] or name == chain[-1]:
                out.append(name)
        return out
    return []


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
    r = subprocess.run(
        [str(python), "-X", "importtime", "-c", RESIDENT_STATEMENT],
        capture_output=True,
        text=True,
        env=dict(env),
        check=False,
        timeout=60,
    )
    if r.returncode != 0:
        raise BenchError(f"{RESIDENT_STATEMENT!r} failed: {r.stderr[-2000:]}")
    return by_package(parse_importtime(r.stderr))


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


def versions_of(python: Path, env: Mapping[str, str]) -> dict[str, str]:
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
    return cast(dict[str, str], json.loads(r.stdout))


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
    pin: str,
    args: argparse.Namespace,
) -> Footprint:
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
        entries = parse_importtime(log.read_text(errors="replace"))
    resident = by_package(entries)
    if "join_agent" not in resident:
        raise BenchError(f"no -X importtime output from the agent in {log}")

    fresh = fresh_imports(python, env)
    chains = {p: import_chain(entries, p) for p in heavy_in(resident)}
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


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError):
        mem = f"{_meminfo_mib()} MiB"
    cfssl = subprocess.run(["cfssl", "version"], capture_output=True, text=True, check=False)
    return {
        "load average at start (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "cfssl": (cfssl.stdout.splitlines() or ["?"])[0].replace("Version: ", ""),
    }


def _meminfo_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return kib(line.split(":", 1)[1]) // 1024
    return 0


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f}"


def yes(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def results_table(fps: Sequence[Footprint]) -> list[str]:
    def row(name: str, cells: Sequence[str]) -> str:
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [
        row("", [f"{f.label}" for f in fps]),
        "|---|" + "---:|" * len(fps),
        row("Python / cryptography / structlog", [
            f"{f.versions['python']} / {f.versions['cryptography']} / {f.versions['structlog']}"
            for f in fps
        ]),
        row("window, s", [f"{f.window_s:.1f}" for f in fps]),
        row("VmRSS at window end, MiB", [mib(f.mem_end["rss_kib"]) for f in fps]),
        row("VmRSS at window start, MiB", [mib(f.mem_start["rss_kib"]) for f in fps]),
        row("VmHWM (peak RSS), MiB", [mib(f.mem_end["hwm_kib"]) for f in fps]),
        row("RssAnon / RssFile, MiB", [
            f"{mib(f.mem_end['rss_anon_kib'])} / {mib(f.mem_end['rss_file_kib'])}" for f in fps
        ]),
        row("PSS (smaps_rollup), MiB", [mib(f.mem_end["pss_kib"]) for f in fps]),
        row("CPU over the window (schedstat), ms", [f"{f.cpu_s * 1000:.1f}" for f in fps]),
        row("CPU over the window (utime+stime), s", [f"{f.cpu_ticks_s:.2f}" for f in fps]),
        row("threads", [str(f.last.threads) for f in fps]),
        row("voluntary context switches", [str(f.voluntary) for f in fps]),
        row("involuntary context switches", [str(f.involuntary) for f in fps]),
        row("**wake-ups** (voluntary + involuntary)", [f"**{f.wakeups}**" for f in fps]),
        row("wake-ups per minute", [f"{f.wakeups * 60 / f.window_s:.1f}" for f in fps]),
        row("wake-ups per watchdog half-period", [
            f"{f.wakeups * f.watchdog_half_s / f.window_s:.2f}" for f in fps
        ]),
        row(f"bursts of switches (sampled every {fps[0].sample_every:g} s)", [
            str(len(f.wake_times)) for f in fps
        ]),
        row("WATCHDOG=1 received", [str(len(f.watchdog_times)) for f in fps]),
        row("bursts of switches not within 0.5 s of a WATCHDOG=1", [
            str(len(f.unexplained_wakes)) for f in fps
        ]),
        row("other sd_notify messages", [str(len(f.other_messages)) for f in fps]),
        row("status.json rewrites", [str(f.status_writes) for f in fps]),
        row("bare `python -c pass`: VmRSS, MiB", [mib(f.bare_mem["rss_kib"]) for f in fps]),
        row("fresh python after the daemon's imports: VmRSS, MiB", [
            mib(f.modules_mem["rss_kib"]) for f in fps
        ]),
    ]  # fmt: skip
    return lines


def verdicts(fps: Sequence[Footprint]) -> list[str]:
    out = []
    for f in fps:
        out.append(
            f"- {f.label}: RSS {f.rss_mib:.1f} MiB, peak {f.hwm_mib:.1f} MiB (target ≤ "
            f"{RSS_TARGET_MIB:.0f} MB): {yes(f.rss_met)}. Wake-ups: {f.voluntary} voluntary "
            f"switches (sleeps that ended) and {len(f.wake_times)} bursts of switches in "
            f"{f.nominal_window_s:g} s = {f.allowed_wakeups} watchdog half-periods of "
            f"{f.watchdog_half_s:g} s, {len(f.unexplained_wakes)} bursts away from a "
            f"WATCHDOG=1 ({len(f.watchdog_times)} received), {len(f.other_messages)} other "
            f"messages ({len(f.stray_messages)} away from a watchdog tick), "
            f"{f.status_writes} status.json rewrites: {yes(f.wakeups_met)}. "
            f"Voluntary + involuntary: {f.wakeups} "
            + (
                f"(≤ {f.allowed_wakeups})."
                if f.wakeups <= f.allowed_wakeups
                else f"(> {f.allowed_wakeups}: the {f.involuntary} involuntary switches are "
                "preemptions of a process already awake"
                + (", all inside the watchdog ticks)." if not f.unexplained_wakes else ").")
            )
        )
    return out


def imports_lines(fps: Sequence[Footprint]) -> list[str]:
    lines: list[str] = []
    for f in fps:
        res = {p: v for p, v in f.resident_packages.items() if p not in f.not_installed}
        fresh = {p: v for p, v in f.fresh_packages.items() if p not in f.not_installed}
        lazy = [p for p in res if p not in fresh]
        lines += [
            f"**{f.label}**: a real `join-agent run` imported {sum(v[0] for v in res.values())} "
            f"modules from {len(res)} top-level packages up to the idle loop; a fresh "
            f"interpreter running `{RESIDENT_STATEMENT}` imports "
            f"{sum(v[0] for v in fresh.values())} from {len(fresh)}.",
            "",
            "- heavy packages in the fresh import of the daemon's modules: "
            + (", ".join(f"`{p}`" for p in heavy_in(fresh)) or "none"),
            "- heavy packages in the resident process, and who imported them first (a root "
            "import happened at run time, from a function): "
            + (
                "; ".join(
                    f"`{p}` ← " + " ← ".join(f.chains[p][1:] or ["(root)"]) for p in heavy_in(res)
                )
                or "none"
            ),
            "- imported by the resident process but not by that fresh import (the CLI entry "
            "point: runpy, argparse; and lazy imports at run time): "
            + (", ".join(f"`{p}`" for p in lazy) or "none"),
            "- tried but not installed (optional imports that failed): "
            + (", ".join(f"`{p}`" for p in sorted(f.not_installed)) or "none"),
            "- the resident process's top-level packages by summed self import time "
            "(`-X importtime`, µs): "
            + ", ".join(f"`{p}` {us}" for p, (_, us) in list(res.items())[:20])
            + (f" and {len(res) - 20} more" if len(res) > 20 else ""),
        ]
        base = f.modules_mem["rss_kib"] or 0
        for p, m in f.heavy_mem.items():
            lines.append(
                f"- what `{p}` (a root import above) adds to a fresh interpreter that has "
                f"imported the daemon's modules: +{((m['rss_kib'] or 0) - base) / 1024:.1f} "
                f"MiB VmRSS ({mib(base)} → {mib(m['rss_kib'])} MiB)"
            )
        so = heavy_objects(f.mapped)
        third = [p for p in f.mapped if "site-packages" in p]
        crypto_so = [p for p, w in so if "cryptography" in w and "OpenSSL" not in w]
        lines += [
            "- cryptography in the resident process: "
            + (
                "**yes**"
                if "cryptography" in res or crypto_so
                else "no (not imported; neither `_rust` nor `_cffi_backend` mapped)"
            )
            + "; httpx/httpcore: "
            + ("**yes**" if {"httpx", "httpcore"} & set(res) else "no (not imported)")
            + "; PyYAML: "
            + ("**yes**" if "yaml" in res else "no (not imported)"),
            f"- shared objects mapped in the agent: {len(f.mapped)}; from site-packages: "
            + (", ".join(f"`{Path(p).name}`" for p in third) or "none")
            + "; that betray a heavy import: "
            + (", ".join(f"`{Path(p).name}` ({w})" for p, w in so) or "none"),
            "",
        ]
    return lines


def render_markdown(
    fps: Sequence[Footprint], info: Mapping[str, str], args: argparse.Namespace
) -> str:
    f0 = fps[0]
    lines = [
        MARKER_BEGIN,
        "## Idle footprint of `join-agent run`",
        "",
        f"Generated by `bench/footprint.py` on {time.strftime('%Y-%m-%d')}; re-run with "
        f"`{rerun_command(args, 'footprint.py')}` from the repository root (`--help` for "
        "options).",
        "",
        "### Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "### Method",
        "",
        "- A real `cfssl serve` (`tests/lab/cfssl_ca.py`) on 127.0.0.1 with a one-year "
        "(8760h) profile, so no renewal falls in the window; the stand-in kubelet "
        "(`tests/standins/kubelet.py`, serving /healthz on 127.0.0.1), `[kubelet] "
        'stable_after = "2s"` (only to reach the steady state sooner), node addresses '
        + ("set in the config" if args.addresses else "discovered (the default: netlink)")
        + "; all other settings default.",
        "- `join-agent run` through the console script of each install, started as systemd "
        f"starts a `Type=notify` service: `NOTIFY_SOCKET` is a real AF_UNIX datagram socket "
        f"the bench reads, `WATCHDOG_USEC={args.watchdog_usec}` (watchdog half-period "
        f"{f0.watchdog_half_s:g} s) and `WATCHDOG_PID` = the agent's pid. Each node starts "
        "empty: the agent enrolls (in its `join-agent worker enroll` child), writes the "
        "kubeconfig and starts the kubelet. A first, unmeasured agent on another node fills "
        "the bytecode cache: every measured process runs with a private "
        "`PYTHONPYCACHEPREFIX` and without `PYTHONDONTWRITEBYTECODE`, so modules load from "
        ".pyc as from an installed wheel or .deb.",
        f"- When status.json says `agent.state` and `kubelet.state` are `running`, the agent "
        f"is left alone {args.settle:g} s, then watched for {args.window:g} s. Only the "
        "agent's process is measured (not the kubelet, not the workers): memory at the end "
        "of the window (VmRSS, VmHWM, RssAnon/RssFile from /proc/PID/status, PSS from "
        "/proc/PID/smaps_rollup); CPU over the window as the scheduler's run time "
        "(/proc/PID/task/*/schedstat, ns) and as utime+stime (/proc/PID/stat, 10 ms ticks); "
        "**wake-ups** = voluntary + involuntary context switches summed over all threads "
        "(/proc/PID/task/*/status) over the window. A voluntary switch is the process going "
        "to sleep, so each one is a wake-up to come; an involuntary one is a preemption of "
        "a process that is awake anyway. The counters are read every "
        f"{args.sample_every:g} s, so each burst of switches can be matched with a "
        "WATCHDOG=1 datagram (within 0.5 s); every other sd_notify message and every "
        "rewrite of status.json in the window is counted too.",
        "- The run aborts if the agent exits, renews, restarts the kubelet or leaves "
        "`running` during the window, if it never sent READY=1, or if it does not exit 0 "
        "on SIGTERM with the kubelet gone; every process is stopped by pid afterwards.",
        "- Imports: the same start on a third node under `python -X importtime -m "
        f"join_agent … run` (the workers do not inherit `-X`), read after {args.settle:g} s "
        "of idling, lists everything the resident process imported over its life; "
        f'`python -X importtime -c "{RESIDENT_STATEMENT}"` lists what the daemon\'s '
        "modules import by themselves. /proc/PID/maps of the measured agent shows the "
        "shared objects it holds (cryptography's `_rust` or `_cffi_backend` would "
        "show; httpx and httpcore are pure Python, so only the import list can show them).",
        "",
        "### Results",
        "",
        *results_table(fps),
        "",
        f"Targets (issue 3): RSS ≤ {RSS_TARGET_MIB:.0f} MB (judged on the peak, VmHWM, in "
        "MiB); wake-ups ≤ 1 per watchdog half-period and nothing else. Judged on the "
        "voluntary switches and on the bursts (each ≤ the number of half-periods in the "
        "window), with no burst away from a WATCHDOG=1, no other message away from one (a "
        "message sent in the same tick as a WATCHDOG=1, such as a STATUS= line whose "
        '"expires in 364d 23h" text changed, costs no wake-up) and no status.json '
        "rewrite; the sum with the involuntary switches is given as well.",
        "",
        *verdicts(fps),
        "",
        "Wake-up times in the window (s), and WATCHDOG=1 arrivals:",
        "",
        *[
            f"- {f.label}: switches at "
            + (", ".join(f"{t:.1f}" for t in f.wake_times) or "none")
            + "; WATCHDOG=1 at "
            + (", ".join(f"{t:.1f}" for t in f.watchdog_times) or "none")
            + (
                "; other messages: " + "; ".join(f"{t:.1f} `{m[:80]}`" for t, m in f.other_messages)
                if f.other_messages
                else ""
            )
            for f in fps
        ],
        "",
        "### What the resident process holds",
        "",
        *imports_lines(fps),
        MARKER_END,
        "",
    ]
    return "\n".join(lines)


def rerun_command(args: argparse.Namespace, script: str) -> str:
    """The command line that produced this report (same executables)."""
    cmd = f"PYTHONPATH=. {sys.executable} bench/{script}"
    if args.join_agent != default_join_agent():
        cmd += f" --join-agent {args.join_agent}"
    if args.bookworm_join_agent:
        cmd += f" --bookworm-join-agent {args.bookworm_join_agent}"
    return cmd


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
        help="also measure this one: join-agent over Debian bookworm's dependency versions "
        "(e.g. /tmp/vold/bin/join-agent)",
    )
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
    p.add_argument(
        "--write", type=Path, default=REPO / "docs" / "benchmarks.md", metavar="MARKDOWN"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.window < 10 or args.settle < 0 or args.watchdog_usec < 1_000_000:
        p.error("need --window >= 10, --settle >= 0 and --watchdog-usec >= 1000000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    agents = [("newest deps", args.join_agent)]
    if args.bookworm_join_agent:
        agents.append(("bookworm deps", args.bookworm_join_agent))
    info = machine()
    fps: list[Footprint] = []
    try:
        with lab("footprint-") as (tmp, ca, pin):
            for label, exe in agents:
                fps.append(measure_one(label, exe, tmp=tmp, ca=ca, pin=pin, args=args))
    except BenchError as e:
        print(f"footprint: {e}", file=sys.stderr)
        return 1
    info["load average at end (1/5/15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print("\n".join(results_table(fps)))
    print()
    print("\n".join(verdicts(fps)))
    print()
    print("\n".join(imports_lines(fps)))
    if not args.no_write:
        write_section(args.write, render_markdown(fps, info, args), MARKER_BEGIN, MARKER_END)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
