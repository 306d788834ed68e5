"""Processes by pid: whether one still runs, and whether it is still the process that was
recorded. A pidfile holds ``<pid> <start time>``: a pid the kernel gave to another process
since (after a crash, a reboot) must never be taken for ours, nor signalled.

Linux: /proc/<pid>/stat (its state, its start in clock ticks after boot) and the boot id.
Elsewhere (illumos): ``kill(pid, 0)`` and what ``ps -o stime=`` shows, marked ``stime=``
so that a reader can tell how coarse the comparison was. Standard library only, and no
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
    return recorded is None or same(recorded, start_time(pid, proc))
