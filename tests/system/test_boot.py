"""The .deb under a real systemd as PID 1: install, first boot, reboots, a node that
cannot join. Each test boots its own machine (tests/system/machine.py)."""

from __future__ import annotations

import time

import pytest

from tests.system.conftest import KUBELET_RECORD, STANDIN, SystemNode

pytestmark = pytest.mark.system


def test_install_enables_the_unit_starts_nothing_and_skips_it_without_a_config(
    system_node: SystemNode,
) -> None:
    m = system_node.machine
    assert m.run("systemctl", "is-enabled", "join-agent").stdout.strip() == "enabled"
    assert system_node.unit()["ActiveState"] == "inactive"  # installed, never started
    # The package made /etc/join-agent, root's, for cloud-init or the operator to fill.
    etc = m.root / "etc/join-agent"
    assert etc.is_dir() and etc.stat().st_uid == 0 and etc.stat().st_mode & 0o022 == 0
    # Without a config the start is skipped, not failed, and the boot is clean.
    m.run("systemctl", "start", "join-agent")
    unit = system_node.unit()
    assert (unit["ActiveState"], unit["ConditionResult"]) == ("inactive", "no"), unit
    assert m.run("systemctl", "is-failed", "join-agent", check=False).stdout.strip() != "failed"
    assert m.reboot() == "running"
    assert system_node.unit()["ActiveState"] == "inactive"
    # The joined-gate is not pulled in by anything on a node that runs its own kubelet.
    assert system_node.unit("join-agent-wait")["ActiveState"] == "inactive"


def test_a_node_that_cannot_join_still_finishes_booting(system_node: SystemNode) -> None:
    """The CA is down at boot: multi-user.target is reached, `is-system-running` says
    running, the unit is active and says what it waits for; once the CA answers, the node
    joins by itself."""
    m = system_node.machine
    system_node.write_config()
    system_node.write_credential()
    assert m.reboot() == "running", system_node.agent_log()
    unit = system_node.unit()
    assert unit["ActiveState"] == "active", unit
    text = system_node.wait_status_text("the agent waiting for the CA", "not joined yet")
    assert "waiting for the CA" in text
    code, doc = system_node.status()
    assert code == 2 and doc["state"] == "not-joined"
    assert system_node.kubelet_starts() == []  # no kubelet before credentials
    system_node.start_ca()
    system_node.wait_status_text("the join", f"joined as {system_node.name}")
    code, doc = system_node.status()
    assert code == 0, doc
    assert system_node.wait_kubelet_starts()


def test_the_unmanaged_kubelet_waits_for_the_join_while_the_boot_goes_on(
    system_node: SystemNode,
) -> None:
    """[kubelet] manage = false, the kubelet as its own kubelet.service with the package's
    drop-in: it starts only once the node has joined, also when the agent is reloaded (a
    SIGHUP) before that."""
    m = system_node.machine
    system_node.write_config(kubelet={"manage": False})
    system_node.write_credential()
    m.write(
        "/etc/systemd/system/kubelet.service",
        "[Unit]\nDescription=stand-in kubelet\n[Service]\n"
        f"ExecStart=/usr/bin/python3 {STANDIN} --standin-record={KUBELET_RECORD}\n"
        "[Install]\nWantedBy=multi-user.target\n",
    )
    drop_in = (m.root / "usr/share/doc/join-agent/examples/kubelet-unmanaged.conf").read_text()
    m.write("/etc/systemd/system/kubelet.service.d/10-join-agent.conf", drop_in)
    m.run("systemctl", "daemon-reload")
    m.run("systemctl", "enable", "kubelet.service")
    # The boot now waits for the kubelet, which waits for the join: bounded here.
    state = m.reboot(timeout=10)
    assert state == "starting"
    assert system_node.unit()["ActiveState"] == "active"
    assert system_node.unit("join-agent-wait")["ActiveState"] == "activating"
    assert system_node.unit("kubelet")["ActiveState"] == "inactive"
    # A reload before the join lets nothing through.
    m.run("systemctl", "reload", "join-agent")
    time.sleep(3)
    assert system_node.unit("kubelet")["ActiveState"] == "inactive"
    assert system_node.kubelet_starts() == []
    system_node.start_ca()
    system_node.wait_active("kubelet")
    (start,) = system_node.wait_kubelet_starts()
    cert = m.root / "var/lib/kubelet/pki/kubelet-client-current.pem"
    assert cert.stat().st_mtime <= start["time"]
    assert m.run("systemctl", "is-system-running", "--wait", timeout=30).stdout.strip() == "running"
