"""A machine with a real systemd as PID 1: a copy of the Debian bookworm tree that
.ci/build-rootfs makes, booted with systemd-nspawn and driven from inside with nsenter.

Each machine is an overlay on the cached tree (the tree is never written), with
``--private-network``: only its own loopback, so whatever it serves stays inside it.
Everything it starts is stopped by ``destroy``; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
T = TypeVar("T")


class MachineError(AssertionError):
    """Something the machine did not do in time (a test failure, with what it printed)."""


class Machine:
    """One container: ``root`` is its ``/`` as seen from the host."""

    def __init__(self, rootfs: Path, workdir: Path, name: str) -> None:
        self.rootfs = rootfs
        self.name = name
        self.workdir = workdir
        self.root = workdir / "root"
        self.console = workdir / "console.log"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self._mounted = False
        upper, work = workdir / "upper", workdir / "work"
        for d in (upper, work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        # The whole tree is lowerdir: a copy per test would cost 340 MB and seconds.
        options = f"lowerdir={rootfs},upperdir={upper},workdir={work}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)],
            check=True,
            capture_output=True,
        )
        self._mounted = True
        (self.root / "etc/hostname").write_text(f"{name}\n")

    # ---------------------------------------------------------------- power

    def boot(self, timeout: float = 60) -> str:
        """Boot and wait for the boot to finish; returns `is-system-running`'s answer."""
        if self.nspawn is not None:
            raise MachineError(f"{self.name} is already running")
        env = {
            "PATH": PATH,
            "LC_ALL": "C.UTF-8",
            # Pure cgroup v2 inside: one tree to look at for "nothing left in the cgroup".
            "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
        }
        with self.console.open("ab") as console:
            self.nspawn = subprocess.Popen(
                [
                    "systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                    "--private-network", "--console=read-only", f"--machine={self.name}",
                    "-D", str(self.root),
                ],
                stdin=subprocess.DEVNULL, stdout=console, stderr=console, env=env,
                start_new_session=True,
            )  # fmt: skip
        self.pid1 = self.wait("systemd as PID 1", self._find_pid1, 30)
        # Bounded: `--wait` returns once the boot has finished, whatever its verdict.
        r = self.run("timeout", str(int(timeout)), "systemctl", "is-system-running", "--wait",
                     check=False, timeout=timeout + 10)  # fmt: skip
        if r.returncode == 124:  # still booting when the bound passed: say where it stands
            r = self.run("systemctl", "is-system-running", check=False)
        return r.stdout.strip()

    def _find_pid1(self) -> int | None:
        assert self.nspawn is not None
        if self.nspawn.poll() is not None:
            raise MachineError(f"systemd-nspawn exited: {self.console_tail()}")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.nspawn.pid and (entry / "comm").read_text().strip() == "systemd":
                    return int(entry.name)
        return None

    def poweroff(self, timeout: float = 60) -> None:
        """A clean shutdown; SIGKILL to nspawn only when the machine does not stop in time."""
        if self.nspawn is None:
            return
        self.run("systemctl", "poweroff", "--no-block", check=False)
        try:
            self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nspawn.pid, signal.SIGKILL)
            self.nspawn.wait(10)
            raise MachineError(f"{self.name} did not power off in {timeout:g}s") from None
        finally:
            self.nspawn = None
            self.pid1 = 0

    def reboot(self, timeout: float = 60) -> str:
        self.poweroff()
        return self.boot(timeout)

    def destroy(self) -> None:
        try:
            self.poweroff()
        finally:
            if self._mounted:
                subprocess.run(["umount", str(self.root)], check=False, capture_output=True)
                self._mounted = False
            shutil.rmtree(self.workdir / "work", ignore_errors=True)

    def console_tail(self, chars: int = 3000) -> str:
        try:
            return self.console.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no console output)"

    # ---------------------------------------------------------------- inside

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the machine (all its namespaces, its root, a clean environment)."""
        if not self.pid1:
            raise MachineError(f"{self.name} is not running")
        variables = {"PATH": PATH, "LC_ALL": "C.UTF-8", **(env or {})}
        inner_env = [f"{k}={v}" for k, v in variables.items()]
        r = subprocess.run(
            [
                "nsenter", f"--target={self.pid1}", "--mount", "--uts", "--ipc", "--net",
                "--pid", "--cgroup", "--root", "--wd", "env", "-i", *inner_env, *argv,
            ],
            capture_output=True, text=True, timeout=timeout, input=input, check=False,
        )  # fmt: skip
        if check and r.returncode != 0:
            raise MachineError(
                f"{' '.join(argv)} exited {r.returncode} in {self.name}:\n{r.stdout}\n{r.stderr}"
            )
        return r

    def sh(self, script: str, *, check: bool = True, timeout: float = 60) -> str:
        return self.run("sh", "-ec", script, check=check, timeout=timeout).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show``: the unit's properties as systemd holds them."""
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> list[dict[str, object]]:
        """``journalctl -o json`` entries (after a sync, so nothing is still in flight)."""
        self.run("journalctl", "--sync", check=False)
        out = self.run("journalctl", "--no-pager", "-o", "json", *args, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def write(self, path: str, text: str, mode: int = 0o644) -> Path:
        """A file inside the machine, written from the host: root's, with ``mode``."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chown(target, 0, 0)
        target.chmod(mode)
        return target

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float) -> T:
        """Poll ``probe`` until it returns something true; returns that."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(0.2)
        raise MachineError(f"{self.name}: {what} not seen within {timeout:g}s (last: {last!r})")


def pids_in_cgroup(machine: Machine, unit: str) -> list[int]:
    """Every process in ``unit``'s cgroup, its sub-cgroups included (the kubelet's)."""
    group = machine.show(unit, "ControlGroup").get("ControlGroup", "")
    if not group:
        return []
    out = machine.sh(
        f"find /sys/fs/cgroup{group} -name cgroup.procs -exec cat {{}} + 2>/dev/null || true"
    )
    return [int(p) for p in out.split()]
