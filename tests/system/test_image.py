"""Node images under a real systemd (docs/install.md, "Building a node image"): a joined
machine whose disk boots as another machine, and an image prepared with
`join-agent reset --for-image`. The machine id is systemd's own /etc/machine-id."""

from __future__ import annotations

import hashlib

import pytest

from tests.system.conftest import SystemNode

pytestmark = pytest.mark.system

CURRENT = "/var/lib/kubelet/pki/kubelet-client-current.pem"


def join(node: SystemNode) -> str:
    """Config, secret and CA, the service started: the node joins; its credentials' hash."""
    kubelet = node.config()["kubelet"]
    node.write_config(
        kubelet={"command": [*kubelet["command"], f"--standin-credentials={CURRENT}"]}
    )
    node.write_credential()
    node.start_ca()
    node.machine.run("systemctl", "start", "join-agent")
    node.wait_status_text("the join", f"joined as {node.name}")
    return credentials(node)


def credentials(node: SystemNode) -> str:
    return hashlib.sha256(node.machine.run("cat", CURRENT).stdout.encode()).hexdigest()


def test_a_joined_disk_booted_as_another_machine_enrolls_afresh(system_node: SystemNode) -> None:
    """A clone: the same disk, another machine id. Its agent never hands the template's
    credentials to the kubelet; it says why, enrolls with a new key, then runs the kubelet."""
    m = system_node.machine
    template = join(system_node)
    m.poweroff()
    m.write("/etc/machine-id", "0c10ae00000000000000000000000001\n", 0o444)
    assert m.boot() == "running"
    system_node.wait_status_text(
        "the clone noticed", "not joined yet (the credentials on disk are another machine's)"
    )
    code, doc = system_node.status()
    assert code == 2 and doc["state"] == "mismatched", doc
    assert system_node.kubelet_starts() == []
    system_node.start_ca()
    system_node.wait_status_text("the clone's own join", f"joined as {system_node.name}")
    fresh = credentials(system_node)
    assert fresh != template
    starts = system_node.wait_kubelet_starts()
    assert [s["credentials_sha256"] for s in starts] == [fresh] * len(starts)
    assert "credentials_of_another_machine" in system_node.agent_log(200)


def test_an_image_prepared_for_cloning_joins_on_first_boot(system_node: SystemNode) -> None:
    """What install.md tells image builders to run last, then the first boot of a machine
    made from the image: a new machine id, nothing but the config and the secret, joined."""
    m = system_node.machine
    builder = join(system_node)
    m.run("systemctl", "stop", "join-agent")
    said = m.run("join-agent", "reset", "--for-image").stdout
    assert "truncate -s 0 /etc/machine-id" in said
    builder_id = m.run("cat", "/etc/machine-id").stdout.strip()
    m.run("truncate", "-s", "0", "/etc/machine-id")
    left = m.run("find", "/var/lib/kubelet/pki", "/var/lib/join-agent", "-type", "f").stdout
    assert left.split() == [], left
    m.poweroff()
    assert m.boot() == "running"
    assert m.run("cat", "/etc/machine-id").stdout.strip() not in ("", builder_id)
    system_node.start_ca()
    system_node.wait_status_text("the first boot's join", f"joined as {system_node.name}")
    assert credentials(system_node) != builder
    code, doc = system_node.status()
    assert code == 0, doc
