"""The bench's lab: a real one-year ``cfssl serve`` on 127.0.0.1, a node's sandbox (its
config, auth key and every path the agent writes) and a real ``join-agent run`` with the
stand-in kubelet, started and stopped as systemd would. bench/footprint.py and
bench/status_time.py measure on it.

Every process started here is stopped by pid in a ``finally``: never a broad kill, never
a recycled pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import BenchError
from tests.lab import toml
from tests.lab.cfssl_ca import CfsslCA, free_port
from tests.standins import KUBELET as STANDIN_KUBELET

NODE_NAME = "bench-node-1"


@dataclass
class Node:
    """One node's sandbox: config.toml, auth key and every path join-agent writes."""

    root: Path
    ca: CfsslCA
    pin: str
    addresses: tuple[str, ...] = ()  # () = discovered from the interfaces (the default)
    healthz_port: int = field(default_factory=free_port)

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubelet_record(self) -> Path:
        return self.root / "kubelet.jsonl"

    def write(self) -> Node:
        self.root.mkdir(parents=True)
        auth_key = self.ca.write_auth_key(self.root / "cfssl-auth-key")
        node: dict[str, Any] = {"name": NODE_NAME}
        if self.addresses:
            node["addresses"] = list(self.addresses)
        tables: dict[str, dict[str, Any]] = {
            "cluster": {"server": "https://127.0.0.1:6443", "name": "bench"},
            "node": node,
            "signer": {"kind": "cfssl"},
            "signer.cfssl": {
                "urls": [self.ca.url],
                "profile": "kubelet",
                "auth_key_file": str(auth_key),
                "ca_pins": [self.pin],
            },
            "paths": {
                "pki_dir": str(self.pki),
                "kubeconfig": str(self.root / "etc" / "kubelet.conf"),
                "ca_file": str(self.root / "etc" / "ca.crt"),
                "state_dir": str(self.state),
            },
            "kubelet": {
                "command": [
                    sys.executable,
                    str(STANDIN_KUBELET),
                    f"--standin-record={self.kubelet_record}",
                    f"--standin-healthz-port={self.healthz_port}",
                ],
                "healthz_url": f"http://127.0.0.1:{self.healthz_port}/healthz",
                # Stable (state "running") 2 s after a start instead of 30 s: only shortens
                # the set-up; the window starts after it either way.
                "stable_after": "2s",
            },
        }
        self.config.write_text(toml.document(tables))
        return self

    def status(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def kubelet_pids(self) -> list[int]:
        try:
            lines = self.kubelet_record.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [int(json.loads(line)["pid"]) for line in lines if line.strip()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (/proc/PID/task/*/children), depth first."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            out.append(kid)
            out.extend(descendants(kid))
    return out


def kill_pid(pid: int, needle: str) -> None:
    """SIGKILL ``pid`` if it is still the process we started (its command line names
    ``needle``): never a broad kill, never a recycled pid."""
    if needle in cmdline(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Agent:
    """One ``join-agent run`` process (and the kubelet and workers it starts)."""

    def __init__(
        self,
        argv: Sequence[str],
        node: Node,
        env: Mapping[str, str],
        log: Path,
        *,
        watchdog_pid: bool = False,
    ) -> None:
        self.node = node
        self.log_path = log
        full = [*argv, "--config", str(node.config), "run"]
        if watchdog_pid:
            # systemd sets WATCHDOG_PID to the service's main pid; `exec` keeps sh's pid.
            full = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *full]
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=dict(env)
        )
        self.seen_children: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_running(self, timeout: float = 60) -> dict[str, Any]:
        """Until status.json says the agent runs and the kubelet is stable."""
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.seen_children.update(descendants(self.pid))
            if self.proc.poll() is not None:
                raise BenchError(
                    f"join-agent run exited ({self.proc.returncode}) before running:\n"
                    + self.logs()
                )
            doc = self.node.status()
            agent = doc.get("agent") or {}
            kubelet = doc.get("kubelet") or {}
            if (
                agent.get("state") == "running"
                and kubelet.get("state") == "running"
                and not (doc.get("renewal") or {}).get("in_progress")
            ):
                if agent.get("pid") != self.pid:
                    raise BenchError(
                        f"status.json names agent pid {agent.get('pid')}, we started {self.pid}"
                    )
                return doc
            time.sleep(0.1)
        raise BenchError(
            f"join-agent run not running after {timeout:.0f} s; status.json: "
            f"{json.dumps(doc)[:1500]}\n{self.logs()}"
        )

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd stops it; SIGKILL after ``timeout``. Its exit code."""
        self.seen_children.update(descendants(self.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"join-agent run ignored SIGTERM for {timeout:.0f} s") from None

    def cleanup(self) -> None:
        """Whatever is left: the agent, its workers, the kubelet(s) it started."""
        if self.proc.poll() is None:
            self.seen_children.update(descendants(self.pid))
            self.proc.kill()
            self.proc.wait()
        for pid in self.seen_children:
            kill_pid(pid, "join_agent")
        for pid in self.node.kubelet_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if STANDIN_KUBELET.name in cmdline(pid):
                    os.killpg(pid, signal.SIGKILL)  # it leads its own session
        self.log.close()


@contextlib.contextmanager
def running_agent(
    argv: Sequence[str],
    node: Node,
    env: Mapping[str, str],
    log: Path,
    *,
    watchdog_pid: bool = False,
) -> Iterator[Agent]:
    """An agent that is running; stopped (and checked to exit 0) on the way out."""
    agent = Agent(argv, node, env, log, watchdog_pid=watchdog_pid)
    try:
        agent.wait_running()
        yield agent
        code = agent.stop()
        if code != 0:
            raise BenchError(f"join-agent run exited {code} on SIGTERM:\n{agent.logs()}")
        leftover = [p for p in node.kubelet_pids() if STANDIN_KUBELET.name in cmdline(p)]
        if leftover:
            raise BenchError(f"the kubelet (pid {leftover}) outlived the agent")
    finally:
        agent.cleanup()


@contextlib.contextmanager
def lab(prefix: str) -> Iterator[tuple[Path, CfsslCA, str]]:
    """A temporary directory and a running one-year CFSSL CA; both gone afterwards."""
    if not shutil.which("cfssl"):
        raise BenchError("cfssl is not installed: apt-get install golang-cfssl")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    ca = CfsslCA(tmp / "ca", expiry="8760h")
    try:
        ca.start()
        yield tmp, ca, ca.pin
    finally:
        ca.stop()
        shutil.rmtree(tmp, ignore_errors=True)
