"""Stand-ins for what a test cannot run for real: the kubelet (a script) and the OS process
table (a recording fake of join_agent.kubelet.Processes).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

KUBELET = Path(__file__).with_name("kubelet.py")


def kubelet_command(*flags: str) -> list[str]:
    """A ``[kubelet] command`` that runs the stand-in kubelet with ``flags``."""
    return [sys.executable, str(KUBELET), *flags]


@dataclass
class FakeProcesses:
    """Records every call; a test decides when a child exits and how it answers signals.

    ``exit(pid, code)`` makes the next ``poll`` report ``code``; a signal in ``dies_on``
    makes the child exit with -signal. ``spawn_error`` makes the next spawns fail.
    """

    calls: list[tuple[object, ...]] = field(default_factory=list)
    dies_on: set[int] = field(default_factory=set)
    spawn_error: OSError | None = None
    next_pid: int = 1000
    running: set[int] = field(default_factory=set)
    exited: dict[int, int] = field(default_factory=dict)
    foreign: dict[int, str] = field(default_factory=dict)  # other processes: pid -> start time
    sent: list[tuple[int, int]] = field(default_factory=list)  # (pid, signal)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        self.calls.append(("spawn", list(argv), dict(env)))
        if self.spawn_error is not None:
            raise self.spawn_error
        self.next_pid += 1
        self.running.add(self.next_pid)
        return self.next_pid

    def exit(self, pid: int, code: int) -> None:
        self.running.discard(pid)
        self.foreign.pop(pid, None)
        self.exited[pid] = code

    def poll(self, pid: int) -> int | None:
        self.calls.append(("poll", pid))
        return self.exited.pop(pid, None)

    def send(self, pid: int, sig: int) -> None:
        self.calls.append(("send", pid, sig))
        self.sent.append((pid, sig))
        if sig in self.dies_on and (pid in self.running or pid in self.foreign):
            self.exit(pid, -sig)

    def alive(self, pid: int) -> bool:
        return pid in self.running or pid in self.foreign

    def start_time(self, pid: int) -> str | None:
        if pid in self.foreign:
            return self.foreign[pid]
        return f"t{pid}" if pid in self.running else None

    @property
    def spawns(self) -> int:
        return sum(1 for c in self.calls if c[0] == "spawn")
