"""The kubelet as our child: its command and environment, what would fight us, supervision.

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

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from . import children, files, guard, platform, state
from .errors import JoinAgentError, StoreError
from .log import get_logger

log = get_logger("join_agent.kubelet")

State = Literal["stopped", "starting", "running", "backoff", "stopping"]

STOP_POLL = dt.timedelta(milliseconds=100)
"""While stopping, how often ``tick`` wants to look for the child's exit."""


class KubeletError(JoinAgentError):
    """The kubelet cannot be run as we need it (a stale one survives SIGKILL)."""


# --- command, environment, conflicts --------------------------------------------------


def kubelet_argv(command: Sequence[str], kubeconfig: Path, node_name: str) -> list[str]:
    """``[kubelet] command`` with our kubeconfig and node name appended (the last flag wins)."""
    return [*command, f"--kubeconfig={kubeconfig}", f"--hostname-override={node_name}"]


def kubelet_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What the kubelet starts with (``children.kubelet_env``)."""
    from . import children

    return children.kubelet_env(environ)


def flag_value(argv: Sequence[str], name: str, *, boolean: bool = False) -> str | None:
    """The value of ``--name=V`` or ``--name V`` in ``argv`` (the last one wins, as in pflag).
    A boolean flag takes no separate value: a bare ``--name`` reads as "true". Scanning
    stops at ``--``.
    """
    found: str | None = None
    flag = f"--{name}"
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith(flag + "="):
            found = arg[len(flag) + 1 :]
        elif arg == flag:
            nxt = args[i + 1] if i + 1 < len(args) and not boolean else None
            found = nxt if nxt is not None and not nxt.startswith("-") else "true"
    return found


def _is_true(flag: str | None) -> bool | None:
    if flag is None:
        return None
    return flag.strip().lower() in ("true", "1", "t")


def load_kubelet_config(text: str) -> dict[str, Any]:
    """A KubeletConfiguration file, JSON or YAML; ValueError for anything else."""
    try:
        doc: Any = json.loads(text)
    except ValueError:
        import yaml  # only here: the resident daemon must not hold yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"it is neither JSON nor YAML ({_first_line(str(e))})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("it is not a mapping of settings")
    return doc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _config_file(argv: Sequence[str]) -> Path | None:
    value = flag_value(argv, "config")
    return Path(value) if value and value != "true" else None


def _read_config(
    argv: Sequence[str], read_file: Callable[[Path], str | None]
) -> tuple[Path | None, dict[str, Any] | None, str | None]:
    """(path, settings, problem): the kubelet's --config file, parsed, or why it cannot be."""
    path = _config_file(argv)
    if path is None:
        return None, {}, None
    text = read_file(path)
    if text is None:
        return path, None, f"cannot read the kubelet config file {path} given by --config"
    try:
        return path, load_kubelet_config(text), None
    except ValueError as e:
        return path, None, f"the kubelet config file {path} is invalid: {e}"


def conflicts(
    argv: Sequence[str],
    *,
    read_file: Callable[[Path], str | None],
    unit_active: Callable[[str], bool],
) -> list[str]:
    """One sentence for each thing that would fight us over the node's credentials.

    Flags override the config file, as in the kubelet. ``read_file`` returns None for a
    file it cannot read; ``unit_active`` asks the service manager about a unit.
    """
    found: list[str] = []
    if flag_value(argv, "bootstrap-kubeconfig") is not None:
        found.append(
            "the kubelet command has --bootstrap-kubeconfig: the kubelet would request its "
            "own client certificate; remove the flag, join-agent writes the kubeconfig"
        )
    path, settings, problem = _read_config(argv, read_file)
    if problem is not None:
        found.append(problem + "; join-agent must see it to know the kubelet will not rotate")
    checks = (
        ("rotateCertificates", "rotate-certificates", "its client certificate"),
        ("serverTLSBootstrap", "rotate-server-certificates", "its serving certificate"),
    )
    for key, flag, what in checks:
        from_flag = _is_true(flag_value(argv, flag, boolean=True))
        if from_flag:
            found.append(
                f"the kubelet command has --{flag}: the kubelet would rotate {what} itself; "
                "remove the flag"
            )
        elif from_flag is None and settings is not None and settings.get(key) is True:
            found.append(
                f"{key} is true in {path}: the kubelet would rotate {what} itself; set {key}: false"
            )
    if unit_active("kubelet.service"):
        found.append(
            "kubelet.service is active: a second kubelet would fight ours; "
            "run `systemctl disable --now kubelet.service`"
        )
    return found


def serving_cert_file(argv: Sequence[str], read_file: Callable[[Path], str | None]) -> Path | None:
    """The certificate the kubelet serves from a file: ``--tls-cert-file`` or the config's
    ``tlsCertFile`` (relative to the config file, as the kubelet resolves it). None when it
    serves a self-signed or bootstrapped one, or the config cannot be read.
    """
    flag = flag_value(argv, "tls-cert-file")
    if flag and flag != "true":
        return Path(flag)
    path, settings, _ = _read_config(argv, read_file)
    value = (settings or {}).get("tlsCertFile")
    if path is None or not isinstance(value, str) or not value:
        return None
    return path.parent / value  # an absolute value stays as it is


def read_text(path: Path) -> str | None:
    """A regular file's text (at most 1 MiB), or None if it cannot be read (the
    ``read_file`` of ``conflicts``)."""
    try:
        return guard.read_text(path, "the file", cap=guard.CONFIG_CAP, trusted=False)
    except (OSError, StoreError):
        return None


def systemd_unit_active(unit: str) -> bool:
    """``systemctl is-active`` for one unit; False where there is no systemd."""
    systemctl = platform.tool("systemctl")
    if systemctl is None:
        return False
    try:
        done = subprocess.run(
            [systemctl, "is-active", "--quiet", unit],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": children.DEFAULT_PATH, "LC_ALL": "C"},
            cwd=children.WORKING_DIRECTORY,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# --- the process facade -------------------------------------------------------------------


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
        self._linux_proc = (proc / "self" / "stat").is_file()

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

    def _stat(self, pid: int) -> list[str] | None:
        """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
        try:
            raw = (self._proc / str(pid) / "stat").read_bytes()
        except OSError:
            return None
        return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()

    def alive(self, pid: int) -> bool:
        if self._linux_proc:
            fields = self._stat(pid)
            return fields is not None and fields[0] not in ("Z", "X", "x")
        return state.alive(pid, None)

    def start_time(self, pid: int) -> str | None:
        """Linux: /proc/<pid>/stat field 22 (clock ticks after boot) and the boot id, so a
        pid given to another process after a reboot does not match. Elsewhere only what
        ``ps -o stime=`` shows (to the second or minute for today's processes), marked
        ``stime=`` so that a comparison can say how coarse it was.
        """
        if self._linux_proc:
            fields = self._stat(pid)
            if fields is None or len(fields) < 20:
                return None
            boot = read_text(self._proc / "sys" / "kernel" / "random" / "boot_id")
            return fields[19] + (f" boot={boot.strip()}" if boot else "")
        ps = platform.tool("ps")
        if ps is None:
            return None
        try:
            out = subprocess.run(
                [ps, "-o", "stime=", "-p", str(pid)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env={"LC_ALL": "C", "PATH": children.DEFAULT_PATH},
                cwd=children.WORKING_DIRECTORY,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        stime = "_".join(out.stdout.split())
        return f"stime={stime}" if out.returncode == 0 and stime else None


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


def _remove(pidfile: Path) -> None:
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
        _remove(pidfile)
        return f"removed the unreadable kubelet pidfile ({e})"
    if entry is None:
        return None
    pid, recorded = entry
    if not procs.alive(pid):
        _remove(pidfile)
        return f"the kubelet of a previous run (pid {pid}) is gone; removed {pidfile}"
    current = procs.start_time(pid)
    if recorded is None or current is None:
        _remove(pidfile)
        return (
            f"pid {pid} from {pidfile} is alive but its start time is unknown, so it may "
            "not be our kubelet: left it alone"
        )
    if current != recorded:
        _remove(pidfile)
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
    _remove(pidfile)
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


# --- the state machine --------------------------------------------------------------------


def backoff_delay(
    failures: int, draw: float, base: dt.timedelta, cap: dt.timedelta
) -> dt.timedelta:
    """Full jitter between ``base`` and min(cap, base * 2**(failures-1))."""
    base_s = base.total_seconds()
    ceiling = min(cap.total_seconds(), base_s * 2.0 ** min(max(failures - 1, 0), 64))
    floor = min(base_s, ceiling)
    return dt.timedelta(seconds=floor + (ceiling - floor) * draw)


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

    def snapshot(self) -> dict[str, Any]:
        """The supervisor's state for status.json; the keys are an API."""
        return {
            "state": self._state,
            "pid": self._pid,
            "restarts": self.restarts,
            "consecutive_failures": self.consecutive_failures,
            "since": _iso(self._since) if self._since else None,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "next_start": _iso(self._next_start) if self._next_start else None,
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
        _remove(self.pidfile)
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
        delay = backoff_delay(
            self.consecutive_failures, self._draw(), self.backoff_base, self.backoff_cap
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


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
