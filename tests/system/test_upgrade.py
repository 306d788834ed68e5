"""An upgrade of a running node from the previous package to this one, then a purge, under
a real systemd and apt: apt never waits for the service, the agent restarts once, the
node's credentials and status come through, and a purge stops everything but leaves the
credentials (debian/join-agent.postrm says which files stay and why)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.lab import deb as packages
from tests.system.conftest import DEB_IN_MACHINE, SystemNode

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
# The previous package's label: older than any release in dpkg's order, valid for Python.
PREVIOUS_VERSION = "0.0.0+previous"
# What the node keeps across an upgrade and a purge, byte for byte.
KEPT = (
    "etc/kubernetes/kubelet.conf",
    "etc/kubernetes/pki/ca.crt",
    "var/lib/kubelet/pki/kubelet-client-current.pem",
)


def previous_revision() -> str:
    """The previous release: $JOIN_AGENT_PREVIOUS_REV, else the newest tag, else main's
    parent (the project tags no releases yet)."""
    given = os.environ.get("JOIN_AGENT_PREVIOUS_REV")
    if given:
        return given
    tag = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--tags", "--abbrev=0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return tag.stdout.strip() if tag.returncode == 0 else "HEAD^"


@pytest.fixture(scope="module")
def previous_deb(tmp_path_factory: pytest.TempPathFactory, deb: Path) -> Path:
    del deb  # built first: the same build dependencies, installed once
    return packages.build_revision(
        previous_revision(), tmp_path_factory.mktemp("previous"), version=PREVIOUS_VERSION
    )


def agent_starts(node: SystemNode) -> list[dict[str, object]]:
    import json

    starts = []
    for e in node.machine.journal("-u", "join-agent"):
        try:
            doc = json.loads(str(e["MESSAGE"]))
        except ValueError:
            continue
        if doc.get("event") == "starting":
            starts.append(doc)
    return starts


def test_upgrade_while_running_then_purge(
    system_node: SystemNode, deb: Path, previous_deb: Path
) -> None:
    node, m = system_node, system_node.machine
    m.run("apt-get", "purge", "-y", "-q", "join-agent", env={"DEBIAN_FRONTEND": "noninteractive"})
    node.install(previous_deb)
    node.write_config()
    node.write_credential()
    node.start_ca()
    m.run("systemctl", "enable", "--now", "--no-block", "join-agent")
    node.wait_status_text("the join on the previous package", f"joined as {node.name}")
    m.wait("the kubelet", node.kubelet_starts, 30)
    (old,) = agent_starts(node)
    assert old["version"] == PREVIOUS_VERSION
    kept = {p: (m.root / p).read_bytes() for p in KEPT}

    r = node.install(deb)  # apt-get install, bounded inside install(): apt never waits
    assert f"over ({PREVIOUS_VERSION})" in r.stdout, r.stdout  # dpkg: an upgrade
    starts = m.wait("the new agent", lambda: agent_starts(node)[1:] or None, 60)
    assert starts[0]["version"] != PREVIOUS_VERSION
    node.wait_active("join-agent")
    node.wait_status_text("the agent after the upgrade", f"joined as {node.name}")
    assert len(agent_starts(node)) == 2  # restarted exactly once
    code, doc = node.status()
    assert code == 0, doc
    assert {p: (m.root / p).read_bytes() for p in KEPT} == kept  # no new enrollment
    assert (m.root / DEB_IN_MACHINE.lstrip("/") / deb.name).is_file()

    m.run("apt-get", "purge", "-y", "-q", "join-agent", env={"DEBIAN_FRONTEND": "noninteractive"})
    assert node.unit()["ActiveState"] == "inactive"
    assert m.run("pgrep", "-f", "join-agent|kubelet-standin", check=False).stdout.strip() == ""
    assert {p: (m.root / p).read_bytes() for p in KEPT} == kept
    assert not (m.root / "var/lib/join-agent/status.json").exists()
