"""What every child process starts with: a deliberate environment, "/" as its working
directory, an absolute executable (docs/security.md, "On the node").

The agent runs as root, and what a child inherits decides what it runs: the working
directory is on a Python child's import path, PYTHON* and LD_* variables choose code to
load, and a PATH entry that another user can write chooses which ``iptables`` the
kubelet runs. So nothing is inherited by accident. Standard library only; which PATH
entries may stay is guard's rule, read off the file system.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from join_agent.storage import guard

if TYPE_CHECKING:
    import subprocess

WORKING_DIRECTORY = "/"
# systemd's own default PATH (what a unit gets when it sets none).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Ours alone: the service manager's sockets and the secrets' directory (a child that
# inherits NOTIFY_SOCKET can speak for the service).
SERVICE_VARIABLES = frozenset(
    {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"}
)
SERVICE_PREFIXES = ("LISTEN_", "WATCHDOG_")
# Variables that make a program load code from somewhere else.
CODE_PREFIXES = ("PYTHON", "LD_", "DYLD_")
# What the worker (this program, in a child) may see besides the locale (LANG, LC_*) and
# TZ; everything else is left behind.
WORKER_PASSED = frozenset(
    {
        "CREDENTIALS_DIRECTORY",  # the worker reads the secrets from there
        "JOURNAL_STREAM",  # its log lines go to journald too, with their priority
        "JOIN_AGENT_TEST_FAULT",  # faults.py: the crash-point tests' SIGKILL on cue
    }
)


def safe_path(path: str | None) -> str:
    """The entries of ``path`` that are absolute directories only root can write (guard's
    rule), in order; systemd's default PATH when none is left."""
    kept: list[str] = []
    for entry in (path or "").split(":"):
        if not entry.startswith("/") or entry in kept:
            continue
        if Path(entry).is_dir() and guard.problem(Path(entry), "PATH entry", "dir") is None:
            kept.append(entry)
    return ":".join(kept) or DEFAULT_PATH


def worker_argv(config: Path, mode: str) -> list[str]:
    """``join-agent worker MODE`` as a child: this interpreter in isolated mode (-I: no
    working directory or script directory on sys.path, no PYTHON* variables, no user
    site-packages)."""
    return [sys.executable, "-I", "-m", "join_agent", "--config", str(config), "worker", mode]


def worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's whole environment: a safe PATH, the locale, the secrets' directory."""
    env = {
        k: v
        for k, v in environ.items()
        if k in ("LANG", "TZ") or k.startswith("LC_") or k in WORKER_PASSED
    }
    env["PATH"] = safe_path(environ.get("PATH"))
    return env


def kubelet_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The kubelet's environment: ours, minus what belongs to us (sd_notify and watchdog,
    which the kubelet speaks itself and NotifyAccess=main would drop; the secrets'
    directory; socket activation), minus what loads code, with a PATH of trusted entries
    (the kubelet runs iptables, mount and the CNI tools by name)."""
    env = {
        k: v
        for k, v in environ.items()
        if k not in SERVICE_VARIABLES and not k.startswith(SERVICE_PREFIXES + CODE_PREFIXES)
    }
    env["PATH"] = safe_path(environ.get("PATH"))
    return env


def run_tool(argv: list[str], *, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """One of the system's tools (platform.TOOLS, by absolute path), from "/", with nothing
    inherited but a fixed PATH and the C locale; its output captured as text. OSError when
    it cannot start or does not finish within ``timeout`` seconds."""
    import subprocess

    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={"PATH": DEFAULT_PATH, "LC_ALL": "C"},
            cwd=WORKING_DIRECTORY,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"{argv[0]} did not finish within {timeout:g} s") from None
