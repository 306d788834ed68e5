"""The OS side of supervising the kubelet: the process facade the supervisor calls
(Processes; OsProcesses for real), the kubelet's pidfile, and the stale kubelet a killed
agent left behind (reap_stale). Standard library only."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from join_agent.errors import JoinAgentError
from join_agent.host import children, proc
from join_agent.log import get_logger
from join_agent.storage import files, guard

log = get_logger("join_agent.kubelet")


class KubeletError(JoinAgentError):
    """The kubelet cannot be run as we need it (a stale one survives SIGKILL)."""


class Processes(Protocol):
    """The OS calls the supervisor makes, so that a unit test can replace them."""

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Start ``argv`` in a new session (its own process group); its pid. OSError if not."""
        ...

    def poll(self, pid: int) -> int | None:
        """Reap our child without blocking: its exit code, -N for signal N, None if alive."""
        ...

    def send(self, pid: int, sig: int) -> None:
        """Signal the process group that ``pid`` leads (or ``pid`` alone); gone is fine."""
        ...

    def alive(self, pid: int) -> bool:
        """Whether ``pid`` exists and is not a zombie (for any process, not only ours)."""
        ...

    def start_time(self, pid: int) -> str | None:
        """An opaque token for when ``pid`` started, equal only for the same process."""
        ...


class OsProcesses:
    """The real thing: subprocess.Popen, waitpid, killpg, /proc (or ``ps`` without it)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        # stdout/stderr inherited: the kubelet's own logs go to journald / the SMF log.
        child = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
            cwd=children.WORKING_DIRECTORY,
        )
        self._children[child.pid] = child
        return child.pid

    def poll(self, pid: int) -> int | None:
        child = self._children.get(pid)
        if child is not None:
            code = child.poll()
            if code is not None:
                del self._children[pid]
            return code
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 255  # not our child, or reaped by someone else: gone, status unknown
        return None if done == 0 else os.waitstatus_to_exitcode(status)

    def send(self, pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def alive(self, pid: int) -> bool:
        return proc.running(pid, self._proc)

    def start_time(self, pid: int) -> str | None:
        return proc.start_time(pid, self._proc)


# --- pidfile ------------------------------------------------------------------------------


def write_pidfile(pidfile: Path, pid: int, start_time: str | None) -> None:
    """``<pid> <start token>``, through the one atomic writer; StoreError if it cannot."""
    line = f"{pid} {start_time}\n" if start_time else f"{pid}\n"
    files.atomic_write(pidfile, line.encode(), 0o644)


def read_pidfile(pidfile: Path) -> tuple[int, str | None] | None:
    """(pid, start token) from a pidfile; None if absent; ValueError if garbled.

    UnsafePath when someone but root could have written it: whoever writes it chooses
    whom root signals.
    """
    try:
        text = guard.read_text(pidfile, "the kubelet pidfile", cap=guard.SMALL_CAP)
    except OSError:
        return None
    parts = text.strip().split(maxsplit=1)
    if not parts or not parts[0].isdigit() or int(parts[0]) <= 1:
        raise ValueError(f"{pidfile} does not start with a pid")
    return int(parts[0]), parts[1] if len(parts) > 1 else None


def remove_pidfile(pidfile: Path) -> None:
    """Remove the pidfile if it is there (a failure is logged, not raised)."""
    try:
        pidfile.unlink(missing_ok=True)
    except OSError as e:
        log.warning("kubelet_pidfile_not_removed", pidfile=str(pidfile), error=e.strerror)


def reap_stale(
    pidfile: Path,
    *,
    stop_grace: dt.timedelta,
    procs: Processes,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """At start-up: stop a kubelet that a previous, crashed agent left running.

    Only the process the pidfile names AND whose start time still matches is signalled
    (SIGTERM to its group, ``stop_grace``, SIGKILL); a pid since given to another process
    is left alone. The pidfile is removed. Returns a sentence saying what was done, None
    if there was no pidfile. Raises KubeletError if the old kubelet survives SIGKILL.
    """
    try:
        entry = read_pidfile(pidfile)
    except ValueError as e:
        remove_pidfile(pidfile)
        return f"removed the unreadable kubelet pidfile ({e})"
    if entry is None:
        return None
    pid, recorded = entry
    if not procs.alive(pid):
        remove_pidfile(pidfile)
        return f"the kubelet of a previous run (pid {pid}) is gone; removed {pidfile}"
    current = procs.start_time(pid)
    if recorded is None or current is None:
        remove_pidfile(pidfile)
        return (
            f"pid {pid} from {pidfile} is alive but its start time is unknown, so it may "
            "not be our kubelet: left it alone"
        )
    if current != recorded:
        remove_pidfile(pidfile)
        return (
            f"pid {pid} from {pidfile} now belongs to another process (started {current}, "
            f"our kubelet {recorded}): left it alone"
        )
    coarse = (
        " (matched only by ps's start time: this system has no /proc/<pid>/stat)"
        if recorded.startswith("stime=")
        else ""
    )
    procs.send(pid, signal.SIGTERM)
    how = "SIGTERM"
    if not _wait_gone(procs, pid, stop_grace.total_seconds(), monotonic, sleep):
        procs.send(pid, signal.SIGKILL)
        how = f"SIGKILL after {stop_grace.total_seconds():g}s of SIGTERM"
        if not _wait_gone(procs, pid, 5.0, monotonic, sleep):
            raise KubeletError(
                f"the kubelet left by a previous run (pid {pid}) survives SIGKILL; "
                "not starting a second one: stop it, then restart join-agent"
            )
    remove_pidfile(pidfile)
    return f"stopped the kubelet left by a previous run (pid {pid}) with {how}{coarse}"


def _wait_gone(
    procs: Processes,
    pid: int,
    seconds: float,
    monotonic: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    deadline = monotonic() + seconds
    while procs.alive(pid):
        left = deadline - monotonic()
        if left <= 0:
            return False
        sleep(min(0.05, left))
    return True
