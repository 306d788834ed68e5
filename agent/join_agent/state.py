"""``<state_dir>/status.json``: what the daemon knows, written atomically on every change.

Standard library only: the resident daemon and ``status`` use it without loading
cryptography. Its keys are an API (docs/status.md): add keys, never rename them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
AGENT_PIDFILE = "agent.pid"
SCHEMA = 1


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    """Read back ``iso()``'s "YYYY-MM-DDTHH:MM:SSZ" (no strptime: it costs an import)."""
    if len(text) != 20 or text[10] != "T" or text[19] != "Z":
        raise ValueError(f"not a UTC timestamp: {text!r}")
    return dt.datetime(
        int(text[0:4]), int(text[5:7]), int(text[8:10]),
        int(text[11:13]), int(text[14:16]), int(text[17:19]),
        tzinfo=dt.timezone.utc,
    )  # fmt: skip


def file_identity(path: Path) -> dict[str, Any] | None:
    """What changes whenever a file is replaced: the resolved name, inode, size, mtime."""
    try:
        real = path.resolve(strict=True)
        st = os.stat(real)
    except OSError:
        return None
    return {"file": str(real), "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read(state_dir: Path) -> dict[str, Any] | None:
    """The recorded status, or None when there is none or it cannot be read."""
    try:
        doc = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write(state_dir: Path, doc: dict[str, Any]) -> None:
    from .files import atomic_write

    atomic_write(
        state_dir / STATUS_FILE, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o644
    )


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux /proc), to tell a live process from a
    recycled pid; None where /proc has no such field (illumos) or the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def alive(pid: int, start_time: str | None) -> bool:
    """True when ``pid`` runs and, where we can tell, is the process that was recorded."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if start_time is None:
        return True
    return process_start_time(pid) == start_time


def write_agent_pidfile(state_dir: Path, pid: int) -> None:
    from .files import atomic_write

    text = f"{pid} {process_start_time(pid) or '-'}\n"
    atomic_write(state_dir / AGENT_PIDFILE, text.encode(), 0o644)


def running_agent(state_dir: Path) -> int | None:
    """The pid of a live ``join-agent run`` for this state_dir, or None."""
    try:
        pid_text, _, start = (state_dir / AGENT_PIDFILE).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if alive(pid, None if start in ("", "-") else start) else None


def remove_agent_pidfile(state_dir: Path, pid: int) -> None:
    with contextlib.suppress(OSError):
        path = state_dir / AGENT_PIDFILE
        if path.read_text().split(" ", 1)[0] == str(pid):
            path.unlink()
