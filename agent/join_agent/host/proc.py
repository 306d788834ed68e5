"""Processes by pid: whether one still runs, and whether it is still the process that was
recorded. A pidfile holds ``<pid> <start time>``: a pid the kernel gave to another process
since (after a crash, a reboot) must never be taken for ours, nor signalled.

Linux: /proc/<pid>/stat (its state, its start in clock ticks after boot) and the boot id.
illumos: ``kill(pid, 0)`` and the start time in /proc/<pid>/psinfo (``psinfo=``, to the
nanosecond); elsewhere what ``ps -o stime=`` shows, marked ``stime=`` so that a reader
can tell how coarse the comparison was. Standard library only, and no
pathlib: ``status`` asks here on its fast path (docs/benchmarks.md).
"""

from __future__ import annotations

import os

from join_agent import TYPE_CHECKING
from join_agent.storage import guard

if TYPE_CHECKING:
    from join_agent.storage.guard import StrPath

PROC = "/proc"


def _stat(pid: int, proc: StrPath) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def _linux(proc: StrPath) -> bool:
    return os.path.isfile(os.path.join(proc, "self", "stat"))


def running(pid: int, proc: StrPath = PROC) -> bool:
    """``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    if _linux(proc):
        fields = _stat(pid, proc)
        return fields is not None and fields[0] not in ("Z", "X", "x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return True


def start_time(pid: int, proc: StrPath = PROC) -> str | None:
    """What tells this process from a later one with the same pid; None if unknown."""
    if _linux(proc):
        fields = _stat(pid, proc)
        if fields is None or len(fields) < 20:
            return None
        boot = guard.read_text_or_none(os.path.join(proc, "sys", "kernel", "random", "boot_id"))
        return fields[19] + (f" boot={boot.strip()}" if boot else "")
    return _psinfo_start(pid, proc) or _ps_stime(pid)


# illumos' psinfo_t (usr/src/uts/common/sys/procfs.h), as a 64-bit reader gets it: ten
# 4-byte ids (pr_pid at byte 8), four 8-byte words, an 8-byte dev_t, two ushorts, padding,
# then pr_start, a timestruc_t (seconds, nanoseconds) at byte 88.
_PSINFO_PID, _PSINFO_START = 8, 88


def _psinfo_start(pid: int, proc: StrPath) -> str | None:
    """pr_start of /proc/<pid>/psinfo: to the nanosecond, where ``ps -o stime`` shows the
    second (or only the day); None where there is no such file or its layout is not the
    one above (its pr_pid must be ``pid``: never a guess)."""
    try:
        with open(os.path.join(proc, str(pid), "psinfo"), "rb") as f:
            raw = f.read(_PSINFO_START + 16)
    except OSError:
        return None
    if len(raw) < _PSINFO_START + 16:
        return None
    import struct

    (found,) = struct.unpack_from("=i", raw, _PSINFO_PID)
    if found != pid:
        return None
    seconds, nanoseconds = struct.unpack_from("=qq", raw, _PSINFO_START)
    return f"psinfo={seconds}.{nanoseconds:09d}"


def _ps_stime(pid: int) -> str | None:
    """``ps -o stime=``: where /proc has no psinfo, and for pidfiles written with it."""
    from join_agent.host import children, platform  # without /proc only: `status` stays light

    ps = platform.tool("ps")
    if ps is None:
        return None
    try:
        out = children.run_tool([ps, "-o", "stime=", "-p", str(pid)])
    except OSError:
        return None
    stime = "_".join(out.stdout.split())
    return f"stime={stime}" if out.returncode == 0 and stime else None


def same(recorded: str | None, current: str | None) -> bool:
    """Whether a recorded start time names the process that has it now. A record written
    before boot ids were kept (one field) is compared by its first field."""
    if recorded is None or recorded in ("", "-"):
        return True
    if current is None:
        return False
    if " boot=" not in recorded and not recorded.startswith("stime="):
        return recorded == current.split(" ", 1)[0]
    return recorded == current


def alive(pid: int, recorded: str | None = None, proc: StrPath = PROC) -> bool:
    """``pid`` runs and, where that can be told, is the process recorded."""
    if not running(pid, proc):
        return False
    if recorded is not None and recorded.startswith("stime="):
        return same(recorded, _ps_stime(pid))  # a pidfile of a version before psinfo
    return recorded is None or same(recorded, start_time(pid, proc))
