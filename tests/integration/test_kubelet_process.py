"""The kubelet supervisor with real processes: the stand-in kubelet, OsProcesses, real
signals and the real clock (short durations, bounded waits).

Every process a test starts is killed by a fixture finalizer, even when the test fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from join_agent.kubelet import command, processes
from join_agent.kubelet.processes import OsProcesses
from join_agent.kubelet.supervisor import KubeletSupervisor
from tests.standins import KUBELET, kubelet_command

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="checks processes through Linux /proc"
)

MS = dt.timedelta(milliseconds=1)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_standin(pid: int) -> bool:
    """A live (not zombie) stand-in kubelet with this pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2]
    return str(KUBELET).encode() in cmdline and state not in "ZX"


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def drive(
    sup: KubeletSupervisor,
    what: str,
    until: Callable[[], bool],
    timeout: float = 10.0,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Tick the supervisor as a daemon loop would (with a short poll instead of SIGCHLD)."""
    deadline = time.monotonic() + timeout
    while True:
        wake = sup.tick(utcnow())
        if on_tick is not None:
            on_tick()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {sup.snapshot()}")
        pause = 0.01 if wake is None else (wake - utcnow()).total_seconds()
        time.sleep(min(max(pause, 0.0), 0.01))


class Lab:
    """Makes supervisors and stray processes, and kills whatever is left at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.record = root / "record.jsonl"
        self.pidfile = root / "run" / "kubelet.pid"
        self.supervisors: list[KubeletSupervisor] = []
        self.popens: list[subprocess.Popen[bytes]] = []

    def supervisor(
        self,
        *flags: str,
        env: dict[str, str] | None = None,
        stop_grace: dt.timedelta = dt.timedelta(seconds=5),
        draw: Callable[[], float] = lambda: 0.5,
        **timing: dt.timedelta,
    ) -> KubeletSupervisor:
        argv = command.kubelet_argv(
            kubelet_command(f"--standin-record={self.record}", *flags),
            self.root / "kubelet.conf",
            "worker-1",
        )
        sup = KubeletSupervisor(
            argv,
            env if env is not None else command.kubelet_env(os.environ),
            self.pidfile,
            stop_grace,
            procs=OsProcesses(),
            draw=draw,
            **timing,
        )
        self.supervisors.append(sup)
        return sup

    def popen(self, argv: list[str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        self.popens.append(child)
        return child

    def started(self, count: int) -> dict[str, Any]:
        """Wait for the stand-in's ``count``-th start; its record line."""
        wait_for(f"start #{count} of the stand-in", lambda: len(records(self.record)) >= count)
        return records(self.record)[count - 1]

    def cleanup(self) -> None:
        pids = {r["pid"] for r in records(self.record)}
        pids.update(s.pid for s in self.supervisors if s.pid is not None)
        for pid in pids:
            if is_standin(pid):
                os.killpg(pid, signal.SIGKILL)
        for sup in self.supervisors:
            if sup.pid is not None:
                deadline = time.monotonic() + 5
                while sup.pid is not None and time.monotonic() < deadline:
                    sup.tick(utcnow())
                    time.sleep(0.01)
        for child in self.popens:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    it = Lab(tmp_path)
    try:
        yield it
    finally:
        it.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def healthz(port: int) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return r.status, r.read().decode()


def test_a_started_kubelet_runs_in_its_own_session_with_our_flags(lab: Lab) -> None:
    port = free_port()
    sup = lab.supervisor(f"--standin-healthz-port={port}", "--v=2")
    sup.start(utcnow())
    rec = lab.started(1)
    assert rec["pid"] == sup.pid
    assert rec["pgid"] == rec["sid"] == rec["pid"]  # start_new_session: its own group
    assert rec["argv"][-3:] == [
        "--v=2",
        f"--kubeconfig={lab.root / 'kubelet.conf'}",
        "--hostname-override=worker-1",
    ]
    wait_for("healthz", lambda: _answers(port))
    assert healthz(port) == (200, "ok")
    pid_text, start = lab.pidfile.read_text().split(maxsplit=1)
    assert int(pid_text) == rec["pid"]
    assert start.strip() == OsProcesses().start_time(rec["pid"])
    assert (
        start.split()[0] == Path(f"/proc/{rec['pid']}/stat").read_text().rsplit(")")[1].split()[19]
    )


def _answers(port: int) -> bool:
    try:
        return healthz(port)[0] == 200
    except OSError:
        return False


def test_the_kubelet_environment_lacks_notify_and_watchdog(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/join-agent.service")
    monkeypatch.setenv("LISTEN_FDS", "1")
    sup = lab.supervisor(env=command.kubelet_env(os.environ))
    sup.start(utcnow())
    env = lab.started(1)["env"]
    # Only the entries root alone can write stay (tests/integration/test_node_attacks.py
    # plants one that others can): here, every existing one.
    kept = [e for e in os.environ["PATH"].split(":") if e.startswith("/") and Path(e).is_dir()]
    assert env["PATH"] == ":".join(dict.fromkeys(kept))
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"):
        assert key not in env
    assert "LISTEN_FDS" not in env


def test_the_stand_in_records_what_it_inherits(lab: Lab) -> None:
    """Proves the check above can fail: unfiltered, the variables reach the stand-in."""
    sup = lab.supervisor(env={**os.environ, "NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1"})
    sup.start(utcnow())
    env = lab.started(1)["env"]
    assert env["NOTIFY_SOCKET"] == "/run/x"
    assert env["WATCHDOG_USEC"] == "1"


def test_a_killed_kubelet_is_restarted(lab: Lab) -> None:
    sup = lab.supervisor(backoff_base=50 * MS, backoff_cap=200 * MS)
    sup.start(utcnow())
    first = lab.started(1)["pid"]
    os.kill(first, signal.SIGKILL)
    drive(sup, "a restart", lambda: sup.snapshot()["restarts"] == 1)
    snap = sup.snapshot()
    assert snap["state"] == "starting"
    assert snap["last_exit"] == -signal.SIGKILL
    assert snap["consecutive_failures"] == 1
    second = lab.started(2)["pid"]
    assert second == sup.pid != first
    assert not Path(f"/proc/{first}").exists()  # reaped, not a zombie
    assert lab.pidfile.read_text().split()[0] == str(second)


def test_a_crash_loop_backs_off_up_to_the_cap(lab: Lab) -> None:
    sup = lab.supervisor(
        "--standin-exit-after=0.1",
        "--standin-exit-code=3",
        draw=lambda: 0.999,
        backoff_base=100 * MS,
        backoff_cap=800 * MS,
    )
    delays: list[float] = []

    def note_backoff() -> None:
        snap = sup.snapshot()
        if snap["state"] == "backoff" and len(delays) < snap["consecutive_failures"]:
            delay = snap["restart_delay"]
            assert delay is not None  # drawn for every backoff
            delays.append(delay)

    sup.start(utcnow())
    drive(
        sup,
        "six quick exits",
        lambda: sup.snapshot()["consecutive_failures"] >= 6,
        timeout=30,
        on_tick=note_backoff,
    )
    assert sup.snapshot()["last_exit"] == 3
    assert len(delays) == 6
    assert delays == sorted(delays)  # it only grows...
    assert delays[0] == pytest.approx(0.1, abs=0.01)
    assert delays[-1] == pytest.approx(0.8, abs=0.01)  # ...up to the cap
    assert delays[-2] == pytest.approx(0.8, abs=0.01)  # and stays there
    assert sup.snapshot()["restarts"] >= 5
    assert len(records(lab.record)) == sup.snapshot()["restarts"] + 1


def test_stop_terminates_and_leaves_no_process(lab: Lab) -> None:
    sup = lab.supervisor(stop_grace=dt.timedelta(seconds=5))
    sup.start(utcnow())
    pid = lab.started(1)["pid"]
    t0 = time.monotonic()
    sup.stop(utcnow())
    drive(sup, "stopped", lambda: sup.state == "stopped")
    assert time.monotonic() - t0 < 3  # SIGTERM was enough: no wait for the grace period
    assert sup.snapshot()["last_exit"] == 0
    assert not Path(f"/proc/{pid}").exists()
    assert not _children_in_group(pid)
    assert not lab.pidfile.exists()
    assert sup.stop(utcnow()) is None  # idempotent


def _children_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5: process group
            found.append(int(entry.name))
    return found


def test_stop_escalates_to_sigkill_after_stop_grace(lab: Lab) -> None:
    grace = 0.5
    sup = lab.supervisor("--standin-ignore-sigterm", stop_grace=dt.timedelta(seconds=grace))
    sup.start(utcnow())
    pid = lab.started(1)["pid"]
    t0 = time.monotonic()
    sup.stop(utcnow())
    drive(sup, "stopped", lambda: sup.state == "stopped")
    elapsed = time.monotonic() - t0
    assert grace <= elapsed < grace + 2
    assert sup.snapshot()["last_exit"] == -signal.SIGKILL
    assert not Path(f"/proc/{pid}").exists()
    assert not _children_in_group(pid)


def test_restart_replaces_the_kubelet(lab: Lab) -> None:
    sup = lab.supervisor()
    sup.start(utcnow())
    first = lab.started(1)["pid"]
    sup.restart(utcnow())
    drive(sup, "a new kubelet", lambda: sup.state == "starting" and sup.pid != first)
    second = lab.started(2)["pid"]
    assert second == sup.pid
    assert not Path(f"/proc/{first}").exists()
    snap = sup.snapshot()
    assert snap["restarts"] == 1
    assert snap["consecutive_failures"] == 0
    assert snap["last_exit"] == 0


def test_reap_stale_stops_a_kubelet_left_by_a_previous_agent(lab: Lab) -> None:
    """The previous agent died; its kubelet lives on, named in the pidfile."""
    stale = lab.popen(kubelet_command(f"--standin-record={lab.record}", "--standin-ignore-sigterm"))
    lab.started(1)
    procs = OsProcesses()
    processes.write_pidfile(lab.pidfile, stale.pid, procs.start_time(stale.pid))
    t0 = time.monotonic()
    said = processes.reap_stale(lab.pidfile, stop_grace=dt.timedelta(seconds=0.3), procs=procs)
    assert said == (
        f"stopped the kubelet left by a previous run (pid {stale.pid}) "
        "with SIGKILL after 0.3s of SIGTERM"
    )
    assert time.monotonic() - t0 >= 0.3
    assert stale.wait(5) == -signal.SIGKILL
    assert not lab.pidfile.exists()


def test_reap_stale_with_sigterm(lab: Lab) -> None:
    stale = lab.popen(kubelet_command(f"--standin-record={lab.record}"))
    lab.started(1)
    procs = OsProcesses()
    processes.write_pidfile(lab.pidfile, stale.pid, procs.start_time(stale.pid))
    said = processes.reap_stale(lab.pidfile, stop_grace=dt.timedelta(seconds=5), procs=procs)
    assert said is not None
    assert said.endswith("with SIGTERM")
    assert stale.wait(5) == 0


def test_reap_stale_spares_an_unrelated_process_with_the_pid(lab: Lab) -> None:
    """The pid in the pidfile now belongs to something else: its start time differs."""
    unrelated = lab.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    procs = OsProcesses()
    wait_for("the unrelated process", lambda: procs.start_time(unrelated.pid) is not None)
    real = procs.start_time(unrelated.pid)
    assert real is not None
    ticks, boot = real.split(maxsplit=1)
    processes.write_pidfile(lab.pidfile, unrelated.pid, f"{int(ticks) - 100} {boot}")
    said = processes.reap_stale(lab.pidfile, stop_grace=dt.timedelta(seconds=0.2), procs=procs)
    assert said is not None
    assert "now belongs to another process" in said
    assert "left it alone" in said
    time.sleep(0.3)
    assert unrelated.poll() is None  # still running: never signalled
    assert not lab.pidfile.exists()


def test_reap_stale_after_the_process_is_gone(lab: Lab) -> None:
    gone = lab.popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    processes.write_pidfile(lab.pidfile, gone.pid, "1 boot=x")
    said = processes.reap_stale(
        lab.pidfile, stop_grace=dt.timedelta(seconds=1), procs=OsProcesses()
    )
    assert said is not None
    assert "is gone" in said
    assert not lab.pidfile.exists()


def test_os_processes_reports_signals_as_negative_codes(lab: Lab) -> None:
    procs = OsProcesses()
    pid = procs.spawn(
        kubelet_command("--standin-exit-after=0", "--standin-exit-code=-6"), os.environ
    )
    deadline = time.monotonic() + 10
    code = procs.poll(pid)
    while code is None and time.monotonic() < deadline:
        time.sleep(0.01)
        code = procs.poll(pid)
    assert code == -signal.SIGABRT
    assert not procs.alive(pid)


def test_start_time_without_proc_falls_back_to_ps(lab: Lab, tmp_path: Path) -> None:
    """Where /proc has no <pid>/stat (illumos), ps's STIME is what can be compared."""
    procs = OsProcesses(proc=tmp_path / "no-proc")
    token = procs.start_time(os.getpid())
    if token is None:
        pytest.skip("no usable ps here")
    assert token.startswith("stime=")
    assert token == procs.start_time(os.getpid())
    assert procs.alive(os.getpid())
    assert procs.start_time(2**22 + 12345) is None
