"""Crash safety: SIGKILL at every point of every write, then a restart; and a full disk.

The real CLI runs against the real CFSSL CA with ``JOIN_AGENT_TEST_FAULT`` naming one
crash point (agent/join_agent/faults.py): the process kills itself there with SIGKILL.
Afterwards the node must hold either its previous credentials or the new ones — a key
that matches its certificate, a kubeconfig that points at them, a CA file that issued
them — and the next run must finish the job and leave no temp file behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from join_agent.pki import compat
from join_agent.storage import store
from join_agent.storage.faults import ENV
from join_agent.worker import kubeconfig
from tests.conftest import IN_CI, Node, stop
from tests.lab.cfssl_ca import CfsslCA

VERSION = "kubelet-client-2*"  # a versioned pair: kubelet-client-<timestamp>.pem
CURRENT = "kubelet-client-current.pem"
ROTATION_POINTS = [
    f"stage-half:{VERSION}",
    f"before-rename:{VERSION}",
    f"after-rename:{VERSION}",
    f"before-switch:{CURRENT}",
    f"after-switch:{CURRENT}",
]
# The CA file and the kubeconfig change on a first join (and on a CA change), not on an
# ordinary rotation.
FIRST_JOIN_POINTS = [
    *ROTATION_POINTS,
    *(f"{step}:{name}" for name in ("ca.crt", "kubelet.conf")
      for step in ("stage-half", "before-rename", "after-rename")),
]  # fmt: skip


def _join(node: Node, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {ENV: fault} if fault else {}
    return node.run("join", env=env)


def _leftovers(node: Node) -> list[str]:
    return [str(p) for p in node.root.rglob(".join-agent-tmp-*")]


def _assert_consistent(node: Node, *, joined: bool) -> int | None:
    """The node's files tell one story; returns the serial it holds (None: not joined)."""
    if not joined and not node.current.exists():
        assert json.loads(node.run("status", "--json").stdout)["state"] == "not-joined"
        return None
    pair = store.parse_pair(node.current, node.current.read_bytes())  # raises on a mismatch
    facts = kubeconfig.facts(kubeconfig.parse(node.kubeconfig.read_text()))
    assert facts["client_certificate"] == facts["client_key"] == str(node.current)
    cas = compat.load_pem_certificates(node.ca_file.read_bytes())
    assert any(compat.signed_by(pair.certificate, ca) for ca in cas)
    doc = json.loads(node.run("status", "--json").stdout)
    assert doc["state"] == "valid", doc["problems"]
    return pair.certificate.serial_number


def _killed(r: subprocess.CompletedProcess[str], point: str) -> None:
    assert r.returncode == -signal.SIGKILL, f"{point} was never reached: {r.returncode} {r.stderr}"


@pytest.mark.parametrize("point", ROTATION_POINTS)
def test_a_rotation_killed_at_each_write_is_finished_by_the_next_run(
    node: Node, point: str
) -> None:
    assert _join(node).returncode == 0
    before = _assert_consistent(node, joined=True)
    _killed(_join(node, point), point)
    # Old or new, but whole: never a key without its certificate.
    _assert_consistent(node, joined=True)
    r = _join(node)
    assert r.returncode == 0, r.stderr
    after = _assert_consistent(node, joined=True)
    assert after != before
    assert _leftovers(node) == []


@pytest.mark.parametrize("point", FIRST_JOIN_POINTS)
def test_a_first_join_killed_at_each_write_is_finished_by_the_next_run(
    node: Node, point: str
) -> None:
    _killed(_join(node, point), point)
    _assert_consistent(node, joined=False)
    r = _join(node)
    assert r.returncode == 0, r.stderr
    assert _assert_consistent(node, joined=True) is not None
    assert _leftovers(node) == []


def test_the_first_use_pin_killed_while_recorded(node: Node) -> None:
    node.write_config(signer__cfssl={"ca_pins": [], "insecure_skip_ca_pin": True})
    point = "before-rename:ca-pin"
    _killed(_join(node, point), point)
    assert not (node.state / "ca-pin").exists()
    _assert_consistent(node, joined=False)
    assert _join(node).returncode == 0
    assert (node.state / "ca-pin").read_text().strip() == node.ca.pin
    assert _leftovers(node) == []


# ---------------------------------------------------------------- the daemon


@pytest.fixture
def daemons() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        stop(p)


def _wait(predicate: object, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_the_daemon_killed_while_writing_status_json_recovers(
    node: Node, daemons: list[subprocess.Popen[str]]
) -> None:
    node.write_config(kubelet={"manage": False})
    assert _join(node).returncode == 0
    first = node.start({ENV: "before-rename:status.json"})
    daemons.append(first)
    assert first.wait(timeout=30) == -signal.SIGKILL
    assert not (node.state / "status.json").exists()
    second = node.start()
    daemons.append(second)

    def running() -> bool:
        r = node.run("status", "--json")
        return bool(r.stdout) and json.loads(r.stdout)["agent"]["running"] is True

    _wait(running)
    json.loads((node.state / "status.json").read_text())  # whole, not torn
    _wait(lambda: _leftovers(node) == [])  # the dead writer's temp file is swept


def test_a_worker_killed_mid_rotation_leaves_the_kubelet_credentials_whole(
    node: Node, daemons: list[subprocess.Popen[str]]
) -> None:
    node.write_config(kubelet={"manage": False}, renewal={"retry_min": "1s", "retry_max": "2s"})
    assert _join(node).returncode == 0
    before = _assert_consistent(node, joined=True)
    daemon = node.start({ENV: f"before-switch:{CURRENT}"})
    daemons.append(daemon)

    def up() -> bool:
        r = node.run("status", "--json")
        return bool(r.stdout) and json.loads(r.stdout)["agent"]["running"] is True

    _wait(up)
    node.run("renew")  # asks the daemon (SIGUSR1); its worker dies at the switch

    def failed_twice() -> bool:
        r = node.run("status", "--json")
        return bool(r.stdout) and (json.loads(r.stdout)["renewal"]["failures"] or 0) >= 2

    _wait(failed_twice)  # every worker dies at the switch; the daemon lives on
    assert daemon.poll() is None
    # Whole, old or new: the next worker's recovery finishes a switch whose new pair was
    # already complete on disk, before it dies again at its own switch.
    held = _assert_consistent(node, joined=True)
    daemon.terminate()
    daemon.wait(timeout=20)
    r = node.run("renew")
    assert r.returncode == 0, r.stderr
    assert _assert_consistent(node, joined=True) not in (before, held)
    assert _leftovers(node) == []


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs in CI: {r.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_a_rotation(small_disk: Path, ca: CfsslCA) -> None:
    node = Node(root=small_disk / "node", ca=ca)
    node.root.mkdir()
    ca.write_auth_key(node.auth_key)
    node.write_config()
    assert _join(node).returncode == 0
    before = node.tree()
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass  # ENOSPC: the disk is full, to the last block
    finally:
        os.close(fd)
    r = _join(node)
    assert r.returncode != 0
    line = r.stderr.strip()
    assert "\n" not in line
    assert "no space left on the device" in line, line
    assert node.tree() == before
    assert _leftovers(node) == []
    filler.unlink()
    assert _join(node).returncode == 0
    _assert_consistent(node, joined=True)
