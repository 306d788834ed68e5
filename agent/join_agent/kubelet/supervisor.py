"""The kubelet as our child: supervision as a state machine.

``KubeletSupervisor`` is a state machine in the manner of Supervisor's ``process.py``::

    stopped --start--> starting --(alive stable_after)--> running
                          |                                  |
                          +------------- exits --------------+--> backoff --(delay)--> starting
    starting/running --stop--> stopping --(reaped)--> stopped   (SIGKILL after stop_grace)

Every method takes ``now`` (aware UTC) and returns the next time it needs a ``tick``, or
None when only the child's exit can change anything. Nothing here reads the clock: the
daemon wakes on SIGCHLD (e.g. ``signal.set_wakeup_fd``) and at the returned time, and
calls ``tick``. There is no FATAL state: a kubelet that keeps crashing is restarted with
capped, jittered exponential backoff for as long as we run.

Child processes go through the ``Processes`` facade: ``OsProcesses`` for real, a
recording fake in the tests. Standard library only: the resident daemon stays small.
"""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from join_agent.core import schedule
from join_agent.core.wire import iso
from join_agent.errors import StoreError
from join_agent.kubelet.processes import Processes, remove_pidfile, write_pidfile
from join_agent.log import get_logger

if TYPE_CHECKING:
    from join_agent.core.records import KubeletRecord

log = get_logger("join_agent.kubelet")

State = Literal["stopped", "starting", "running", "backoff", "stopping"]

STOP_POLL = dt.timedelta(milliseconds=100)
"""While stopping, how often ``tick`` wants to look for the child's exit."""


class KubeletSupervisor:
    """Runs one kubelet child: restarts it with backoff, stops it cleanly, keeps a pidfile."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        pidfile: Path,
        stop_grace: dt.timedelta,
        *,
        procs: Processes,
        draw: Callable[[], float],
        backoff_base: dt.timedelta = dt.timedelta(seconds=1),
        backoff_cap: dt.timedelta = dt.timedelta(seconds=60),
        stable_after: dt.timedelta = dt.timedelta(seconds=30),
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.pidfile = pidfile
        self.stop_grace = stop_grace
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stable_after = stable_after
        self._procs = procs
        self._draw = draw
        self._state: State = "stopped"
        self._pid: int | None = None
        self._since: dt.datetime | None = None  # when the current state was entered
        self._next_start: dt.datetime | None = None  # backoff
        self._kill_at: dt.datetime | None = None  # stopping, before SIGKILL
        self._killed = False
        self._restart_pending = False
        self._ever_started = False
        self.restarts = 0
        self.consecutive_failures = 0
        self.last_exit: int | None = None
        self.last_error: str | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def pid(self) -> int | None:
        return self._pid

    def start(self, now: dt.datetime) -> dt.datetime | None:
        """Start the kubelet if it is stopped (after a stop in progress, if stopping)."""
        self._clock(now)
        if self._state == "stopped":
            self._spawn(now)
        elif self._state == "stopping":
            self._restart_pending = True
        return self._wake(now)

    def restart(self, now: dt.datetime) -> dt.datetime | None:
        """Stop the kubelet and start it again at once (e.g. the CA changed); a pending
        backoff is cut short.
        """
        self._clock(now)
        if self._state in ("stopped", "backoff"):
            self._spawn(now)
        else:
            self.stop(now)
            self._restart_pending = True
        return self._wake(now)

    def stop(self, now: dt.datetime) -> dt.datetime | None:
        """SIGTERM to the kubelet's process group; ``tick`` until ``state`` is "stopped"
        (SIGKILL after ``stop_grace``). Cancels a pending restart; idempotent.
        """
        self._clock(now)
        self._restart_pending = False
        if self._state == "backoff":
            self._enter("stopped", now)
            self._next_start = None
        elif self._state in ("starting", "running") and self._pid is not None:
            log.info("kubelet_stopping", pid=self._pid, grace=self.stop_grace.total_seconds())
            self._procs.send(self._pid, signal.SIGTERM)
            self._kill_at = now + self.stop_grace
            self._killed = False
            self._enter("stopping", now)
        return self._wake(now)

    def tick(self, now: dt.datetime) -> dt.datetime | None:
        """Reap an exited child, run out timers; the next time a tick is due, or None."""
        self._clock(now)
        if self._pid is not None:
            code = self._procs.poll(self._pid)
            if code is not None:
                self._reaped(now, code)
        if self._state == "starting" and self._since and now - self._since >= self.stable_after:
            self.consecutive_failures = 0
            self._enter("running", now)
            log.info("kubelet_running", pid=self._pid)
        elif (
            self._state == "stopping"
            and self._pid is not None
            and not self._killed
            and self._kill_at is not None
            and now >= self._kill_at
        ):
            log.warning("kubelet_killed", pid=self._pid, grace=self.stop_grace.total_seconds())
            self._procs.send(self._pid, signal.SIGKILL)
            self._killed = True
        elif self._state == "backoff" and self._next_start and now >= self._next_start:
            self._spawn(now)
        return self._wake(now)

    def snapshot(self) -> KubeletRecord:
        """The supervisor's state for status.json's ``kubelet``; the keys are an API."""
        return {
            "state": self._state,
            "pid": self._pid,
            "restarts": self.restarts,
            "consecutive_failures": self.consecutive_failures,
            "since": iso(self._since) if self._since else None,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "next_start": iso(self._next_start) if self._next_start else None,
            # The backoff drawn for this wait, exact (the times above are to the second).
            "restart_delay": (
                round((self._next_start - self._since).total_seconds(), 3)
                if self._state == "backoff" and self._next_start and self._since
                else None
            ),
        }

    # internals

    def _enter(self, state: State, now: dt.datetime) -> None:
        self._state = state
        self._since = now

    def _wake(self, now: dt.datetime) -> dt.datetime | None:
        if self._state == "starting" and self._since:
            return self._since + self.stable_after
        if self._state == "backoff":
            return self._next_start
        if self._state == "stopping":
            poll = now + STOP_POLL
            return poll if self._killed or self._kill_at is None else min(poll, self._kill_at)
        return None

    def _clock(self, now: dt.datetime) -> None:
        """A wall clock stepped back (NTP, RTC): shift our timers so no wait grows."""
        if self._since is not None and now < self._since:
            shift = self._since - now
            self._since -= shift
            if self._next_start is not None:
                self._next_start -= shift
            if self._kill_at is not None:
                self._kill_at -= shift

    def _spawn(self, now: dt.datetime) -> None:
        self._next_start = None
        self._restart_pending = False
        try:
            pid = self._procs.spawn(self.argv, self.env)
        except OSError as e:
            self.last_error = f"cannot start {self.argv[0]}: {e.strerror or e}"
            self._backoff(now, self.last_error)
            return
        if self._ever_started:
            self.restarts += 1
        self._ever_started = True
        self._pid = pid
        self._enter("starting", now)
        log.info("kubelet_started", pid=pid, argv=self.argv, restarts=self.restarts)
        try:
            write_pidfile(self.pidfile, pid, self._procs.start_time(pid))
        except StoreError as e:  # the kubelet runs; only a later stale-reap would miss it
            log.warning("kubelet_pidfile_not_written", error=str(e))

    def _reaped(self, now: dt.datetime, code: int) -> None:
        pid, self._pid = self._pid, None
        self.last_exit = code
        self._kill_at = None
        remove_pidfile(self.pidfile)
        if self._state == "stopping":
            log.info("kubelet_stopped", pid=pid, exit=code)
            if self._restart_pending:
                self._spawn(now)
            else:
                self._enter("stopped", now)
            return
        self.last_error = f"kubelet (pid {pid}) exited with {_describe(code)}"
        self._backoff(now, self.last_error)

    def _backoff(self, now: dt.datetime, why: str) -> None:
        self.consecutive_failures += 1
        delay = schedule.restart_delay(
            self.consecutive_failures, self.backoff_base, self.backoff_cap, self._draw()
        )
        self._next_start = now + delay
        self._enter("backoff", now)
        log.warning(
            "kubelet_backoff",
            error=why,
            consecutive_failures=self.consecutive_failures,
            restart_in=round(delay.total_seconds(), 3),
        )


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
