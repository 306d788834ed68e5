"""Process identity on illumos, from /proc/<pid>/psinfo (host/proc.py): a pidfile whose pid
now belongs to another process (after a panic, a SIGKILL, a reboot) is not the agent, so
`run` does not refuse to start (SMF would restart it into maintenance) and `renew` sends
no SIGUSR1 to a stranger.

Nothing here boots illumos: the psinfo files are built with the layout of psinfo_t in
illumos-gate's usr/src/uts/common/sys/procfs.h for a 64-bit reader (pr_pid at byte 8,
pr_start at byte 88), in a fake /proc whose pids are real live processes (kill(pid, 0) is
what tells illumos that a pid runs)."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from join_agent.host import proc


def psinfo(pid: int, start_s: int, start_ns: int) -> bytes:
    ids = struct.pack("=10i", 0, 1, pid, 1, pid, pid, 0, 0, 0, 0)
    words = struct.pack("=4Q", 0, 4096, 1024, 0) + struct.pack("=Q", 0xFFFFFFFFFFFFFFFF)
    pct = struct.pack("=HH", 0, 0) + b"\0" * 4
    start = struct.pack("=qq", start_s, start_ns)
    raw = ids + words + pct + start
    assert len(ids + words + pct) == 88  # pr_start's offset, as sys/procfs.h lays it out
    return raw + b"\0" * (416 - len(raw))  # the rest of psinfo_t: pr_time, pr_fname, …


@pytest.fixture
def live() -> Iterator[int]:
    p = subprocess.Popen(["sleep", "60"])
    yield p.pid
    p.kill()
    p.wait()


def fake_proc(root: Path, pid: int, raw: bytes) -> Path:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "psinfo").write_bytes(raw)
    return root  # no self/stat: not Linux's /proc


def test_the_start_time_is_pr_start_to_the_nanosecond(tmp_path: Path, live: int) -> None:
    root = fake_proc(tmp_path, live, psinfo(live, 1_796_571_763, 875_797_181))
    assert proc.start_time(live, root) == "psinfo=1796571763.875797181"


def test_a_pid_reused_by_another_process_is_not_the_agent(tmp_path: Path, live: int) -> None:
    root = fake_proc(tmp_path, live, psinfo(live, 1_796_571_763, 875_797_181))
    assert proc.alive(live, "psinfo=1796571763.875797181", root)
    # The same pid, started a nanosecond later: another process.
    assert not proc.alive(live, "psinfo=1796571763.875797182", root)
    assert not proc.alive(live, "psinfo=1796000000.000000000", root)


def test_a_layout_it_does_not_know_is_never_guessed(tmp_path: Path, live: int) -> None:
    # pr_pid is not the pid asked for: another layout (a 32-bit one, another OS).
    root = fake_proc(tmp_path, live, psinfo(live + 1, 1_796_571_763, 0))
    assert (proc.start_time(live, root) or "").startswith("stime=")  # ps, coarser
    short = fake_proc(tmp_path / "short", live, psinfo(live, 1, 0)[:90])
    assert (proc.start_time(live, short) or "").startswith("stime=")


def test_a_pidfile_written_with_ps_stime_is_still_compared_by_it(tmp_path: Path, live: int) -> None:
    """A running agent of the version before (its pidfile says stime=…) is still known
    after the package is updated and before the service restarts."""
    root = fake_proc(tmp_path, live, psinfo(live, 1_796_571_763, 0))
    by_ps = proc._ps_stime(live)
    assert by_ps is not None and by_ps.startswith("stime=")
    assert proc.alive(live, by_ps, root)
    assert not proc.alive(live, "stime=00:00:01", root)
