"""A real address change under a running `join-agent run`: in a network namespace the test
makes, with a real `cfssl serve` on that namespace's loopback, the agent renews early
soon after an address is added or removed, with and without a watchdog waking its loop.

Before the kernel's notifications were read, the loop looked at the addresses only when
it woke for something else: up to 15 minutes without a watchdog, and a minute or two
with the shipped unit's (WatchdogSec=2min). The waits below are far shorter than either,
so this fails if the agent goes back to finding changes by chance.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from join_agent.daemon import identity_watch
from tests.conftest import Node, stop
from tests.lab.cfssl_ca import CfsslCA

pytestmark = pytest.mark.root

CA_PORT = 8888  # on the namespace's own loopback: nothing else listens there
# What the README promises (BURST_SECONDS after the first of a burst), plus an enrollment
# on a loaded machine; the old behaviour took a minute or more.
WITHIN = identity_watch.BURST_SECONDS + 15


def ip(netns: str, *args: str) -> str:
    r = subprocess.run(
        ["ip", "-n", netns, *args], capture_output=True, text=True, timeout=30, check=False
    )
    if r.returncode != 0:
        raise AssertionError(f"ip -n {netns} {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but this needs root and iproute2")
        pytest.skip("needs root and iproute2 for a network namespace")
    name = f"ja{secrets.token_hex(3)}aw"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        ip(name, "link", "set", "lo", "up")
        # eth0 is the node's NIC; its peer carries no address. (veth, not dummy: some
        # kernels are built without the dummy driver.)
        ip(name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        for dev in ("eth0", "eth1"):
            ip(name, "link", "set", dev, "up")
        ip(name, "addr", "add", "198.18.7.11/24", "dev", "eth0")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


@pytest.fixture
def ca_in(netns: str, tmp_path: Path) -> Iterator[CfsslCA]:
    ca = CfsslCA(tmp_path / "ca")
    ca.port = CA_PORT
    with ca.log_file.open("ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *ca.serve_argv()],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not ca.answers_from(netns, ca.url):
            assert proc.poll() is None, ca.log_file.read_text()[-2000:]
            assert time.monotonic() < deadline, "cfssl serve did not answer in the namespace"
            time.sleep(0.2)
        yield ca
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Agent:
    """`join-agent run` inside the namespace, its log in a file."""

    def __init__(self, node: Node, netns: str, env: dict[str, str]) -> None:
        self.log = node.root / "agent.log"
        full = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")
        }
        with self.log.open("ab") as log:
            # `ip netns exec` execs the command: the Popen pid is the agent's.
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-m", "join_agent",
                 "--config", str(node.config), "run"],
                stdout=log, stderr=log, env={**full, **env},
            )  # fmt: skip

    def lines(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and doc.get("event") == event:
                    out.append(doc)
        return out

    def stop(self) -> None:
        stop(self.proc)


def ips(doc: dict[str, Any]) -> list[str]:
    return sorted(doc["certificate"]["sans"]["ip"])


def renewed_to(node: Node, agent: Agent, before: str, want: list[str]) -> tuple[str, float]:
    """Wait for a certificate other than ``before`` that names ``want``: (serial, seconds)."""
    start = time.monotonic()
    try:
        doc = node.wait_status(
            lambda d: d["certificate"]["serial"] != before and ips(d) == want, timeout=WITHIN
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- agent log:\n{agent.log.read_text()[-4000:]}") from None
    return str(doc["certificate"]["serial"]), time.monotonic() - start


@pytest.mark.parametrize("watchdog", [False, True], ids=["no-watchdog", "shipped-watchdog"])
def test_an_address_change_renews_soon_after_it_happens(
    netns: str, ca_in: CfsslCA, tmp_path: Path, watchdog: bool
) -> None:
    node = Node(root=tmp_path / "node", ca=ca_in)
    node.root.mkdir()
    ca_in.write_auth_key(node.auth_key)
    node.write_config(
        node={"addresses": []},  # discovered over netlink, inside the namespace
        kubelet={"manage": False},
        renewal={"retry_min": "1s", "retry_max": "3s"},
    )
    env: dict[str, str] = {}
    notify = None
    if watchdog:
        # As the shipped unit has it: WatchdogSec=2min, a ping every minute.
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify"))
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "120000000"}
    agent = Agent(node, netns, env)
    try:
        first = node.wait_status(
            lambda d: d["state"] == "valid" and d["agent"]["state"] == "running"
        )
        assert ips(first) == ["198.18.7.11"]
        serial = str(first["certificate"]["serial"])

        ip(netns, "addr", "add", "198.18.7.12/24", "dev", "eth0")
        serial, added = renewed_to(node, agent, serial, ["198.18.7.11", "198.18.7.12"])

        # Noise: a container's veth pair with an address, which exclude_interfaces keeps
        # out. The agent looks (the kernel told of a change) and finds nothing to renew.
        ip(netns, "link", "add", "veth9", "type", "veth", "peer", "name", "veth8")
        ip(netns, "addr", "add", "10.99.0.1/32", "dev", "veth9")
        ip(netns, "link", "set", "veth9", "up")
        time.sleep(identity_watch.QUIET_SECONDS * 2 + 1)
        assert json.loads(node.run("status", "--json").stdout)["certificate"]["serial"] == serial

        ip(netns, "addr", "del", "198.18.7.12/24", "dev", "eth0")
        serial, removed = renewed_to(node, agent, serial, ["198.18.7.11"])

        changed = agent.lines("identity_changed")
        assert [c["addresses"] for c in changed] == [
            ["198.18.7.11", "198.18.7.12"],
            ["198.18.7.11"],
        ], changed
        assert agent.proc.poll() is None
        print(f"renewed {added:.1f} s after the address was added, {removed:.1f} s after removed")
    finally:
        agent.stop()
        if notify is not None:
            notify.close()
    assert agent.proc.returncode == 0
