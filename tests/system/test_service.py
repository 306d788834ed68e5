"""join-agent.service under a real systemd: how cloud-init starts it, what it tells systemd
(READY=1, STATUS=), reload, stop, the watchdog, credentials, reboots, journald."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest
import yaml

from tests.system.conftest import DEB_IN_MACHINE, SystemNode
from tests.system.machine import pids_in_cgroup

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
CLIENT = "/var/lib/kubelet/pki/kubelet-client-current.pem"


def joined(node: SystemNode, timeout: float = 60) -> dict[str, object]:
    """Start the service the way cloud-init does and wait until the node has joined."""
    node.machine.run("systemctl", "enable", "--now", "--no-block", "join-agent")
    node.wait_status_text("the join", f"joined as {node.name}", timeout)
    code, doc = node.status()
    assert code == 0, doc
    return doc


def set_up_and_joined(node: SystemNode, **config: dict[str, object]) -> dict[str, object]:
    """The config (with ``config`` over the defaults), the auth key as a credential, the CA
    serving, the service started: a joined node."""
    node.write_config(**config)
    node.write_credential()
    node.start_ca()
    return joined(node)


def assert_nowhere_but_the_agent(node: SystemNode, secret: str) -> None:
    """Not in the journal (every field of every entry), the unit's properties, status.json,
    any process's argv or environment; the kubelet got no credentials directory."""
    m = node.machine
    everything = json.dumps(m.journal())
    assert secret not in everything and secret.upper() not in everything
    assert secret not in m.run("systemctl", "show", "join-agent").stdout
    assert secret not in (m.root / "var/lib/join-agent/status.json").read_text()
    # (The pattern on standard input: on grep's command line it would find itself.)
    grep = "grep -l -a -i -F -f /dev/stdin /proc/[0-9]*/environ /proc/[0-9]*/cmdline || true"
    assert m.run("sh", "-c", grep, input=secret + "\n").stdout.strip() == ""
    assert "/proc/1/cmdline" in m.run("sh", "-c", grep, input="systemd\n").stdout  # it looks
    (start,) = node.wait_kubelet_starts()
    assert "CREDENTIALS_DIRECTORY" not in start["env_names"]


def serial(node: SystemNode) -> str:
    return str(node.status()[1]["certificate"]["serial"])


def test_cloud_init_way(system_node: SystemNode, deb: Path) -> None:
    """examples/cloud-init.yaml's files and runcmd, run in the machine as cloud-init would
    (its four values filled in, the auth key as the systemd credential its comment names):
    the node joins, and `join-agent wait` returns once it has."""
    node, m = system_node, system_node.machine
    m.run("apt-get", "purge", "-y", "-q", "join-agent", env={"DEBIAN_FRONTEND": "noninteractive"})
    doc = yaml.safe_load((REPO / "examples/cloud-init.yaml").read_text())
    node.start_ca()
    for f in doc["write_files"]:
        text = f["content"]
        path = f["path"]
        if path.endswith("config.toml"):
            text = (
                text.replace("https://10.0.0.5:6443", "https://127.0.0.1:6443")
                .replace("http://10.0.0.5:8888", "http://127.0.0.1:8888")
                .replace("sha256:" + "0" * 64, node.ca.pin)
                .replace('"/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"',
                         '"/usr/bin/python3", "/usr/local/libexec/kubelet-standin.py"')
                + '\n[node]\naddresses = ["192.0.2.10"]\n'
            )  # fmt: skip
        else:  # the auth key, as the credential its comment describes
            path, text = "/etc/credstore/cfssl-auth-key", node.ca.auth_key_hex
        assert f["owner"] == "root:root"
        m.write(path, text, int(f["permissions"], 8))
    assert (m.root / DEB_IN_MACHINE.lstrip("/") / deb.name).is_file()
    for command in doc["runcmd"]:
        argv = ["sh", "-c", command] if isinstance(command, str) else command
        m.run(*argv, env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=180)
    r = m.run("join-agent", "wait", "--timeout", "60s", timeout=90)
    assert r.stdout.startswith(f"joined as {node.name};"), r.stdout
    assert node.unit()["ActiveState"] == "active"
    assert node.unit()["StatusText"].startswith(f"joined as {node.name};")
    assert not (m.root / "etc/join-agent/cfssl-auth-key").exists()


def test_ready_and_status_lines_track_what_happens(system_node: SystemNode) -> None:
    """Type=notify: the unit is active as soon as the agent runs (a blocking `systemctl
    start` returns with the CA down), STATUS= says what is true at each step: waiting for
    the CA, joined, renewed, reloaded (good and refused), a failed renewal."""
    node, m = system_node, system_node.machine
    node.write_config()
    node.write_credential()
    started = time.monotonic()
    m.run("systemctl", "start", "join-agent", timeout=60)  # blocking: READY=1 came
    assert time.monotonic() - started < 30
    assert node.unit()["ActiveState"] == "active"
    node.wait_status_text("waiting for the CA", "not joined yet; waiting for the CA")
    m.run("systemctl", "start", "--no-block", "join-agent-wait")
    node.start_ca()
    node.wait_status_text("the join", f"joined as {node.name}; cert expires in")
    node.wait_active("join-agent-wait")
    kubelet = node.status()[1]["kubelet"]["pid"]

    before = serial(node)
    r = m.run("join-agent", "renew", timeout=90)
    assert serial(node) != before, r.stdout
    text = node.unit()["StatusText"]
    assert text.startswith(f"joined as {node.name}; cert expires in") and "failed" not in text

    # A good reload: applied, and STATUS= no longer says "reloading".
    config = m.root / "etc/join-agent/config.toml"
    good = config.read_text()
    config.write_text(good.replace('retry_max = "3s"', 'retry_max = "4s"'))
    m.run("systemctl", "reload", "join-agent", timeout=60)
    text = node.unit()["StatusText"]
    assert text.startswith(f"joined as {node.name}") and "reload" not in text, text
    assert node.unit()["ActiveState"] == "active"

    # A refused reload: `systemctl reload` fails, the old config stays, STATUS= says so.
    config.write_text(good + "\n[nonsense]\n")
    r = m.run("systemctl", "reload", "join-agent", check=False, timeout=60)
    assert r.returncode != 0
    node.wait_status_text("the refusal", f"joined as {node.name}", contains="reload refused")
    assert node.unit()["ActiveState"] == "active"
    config.write_text(good)
    m.run("systemctl", "reload", "join-agent", timeout=60)
    assert "refused" not in node.unit()["StatusText"]

    # The CA goes away: a renewal fails, STATUS= says so, the kubelet keeps running.
    node.stop_ca()
    r = m.run("join-agent", "renew", check=False, timeout=90)
    assert r.returncode == 1
    node.wait_status_text("the failure", f"joined as {node.name}", contains="renewal failed")
    assert node.status()[1]["kubelet"]["pid"] == kubelet
    node.start_ca()
    m.run("join-agent", "renew", timeout=90)
    assert "failed" not in node.unit()["StatusText"]


def test_the_secret_reaches_the_agent_through_the_credentials_directory_only(
    system_node: SystemNode,
) -> None:
    set_up_and_joined(system_node)
    assert not (system_node.machine.root / "etc/join-agent/cfssl-auth-key").exists()
    assert_nowhere_but_the_agent(system_node, system_node.ca.auth_key_hex)


def test_stop_takes_the_kubelet_down_and_leaves_nothing_in_the_cgroup(
    system_node: SystemNode,
) -> None:
    node, m = system_node, system_node.machine
    config = node.config()
    command = [*config["kubelet"]["command"], "--standin-ignore-sigterm"]
    set_up_and_joined(node, kubelet={"command": command, "stop_grace": "2s"})
    kubelet = int(node.status()[1]["kubelet"]["pid"])
    assert len(pids_in_cgroup(m, "join-agent")) >= 2  # the agent and its kubelet
    m.run("systemctl", "stop", "join-agent", timeout=60)
    unit = node.unit()
    assert (unit["ActiveState"], unit["Result"], unit["ExecMainStatus"]) == (
        "inactive", "success", "0"
    ), unit  # fmt: skip
    assert pids_in_cgroup(m, "join-agent") == []
    assert m.run("kill", "-0", str(kubelet), check=False).returncode != 0
    # The kubelet ignored SIGTERM: the agent (not systemd) escalated after stop_grace.
    lines = [e["MESSAGE"] for e in m.journal("-u", "join-agent", "-p", "warning")]
    assert any("kubelet_killed" in str(line) for line in lines), lines


def test_the_watchdog_restarts_a_hung_agent_and_a_killed_one_adopts_its_credentials(
    system_node: SystemNode,
) -> None:
    node, m = system_node, system_node.machine
    m.write(
        "/etc/systemd/system/join-agent.service.d/fast.conf",
        "[Service]\nWatchdogSec=3s\nRestartSec=1s\n",
    )
    m.run("systemctl", "daemon-reload")
    set_up_and_joined(node)
    first = serial(node)
    pid = int(node.unit()["MainPID"])
    m.run("kill", "-STOP", str(pid))
    m.wait("a watchdog restart", lambda: int(node.unit()["NRestarts"]) >= 1, 30)
    messages = " ".join(str(e["MESSAGE"]) for e in m.journal("-u", "join-agent"))
    assert "Watchdog timeout" in messages
    node.wait_status_text("the restarted agent", f"joined as {node.name}")
    second = int(node.unit()["MainPID"])
    assert second != pid
    m.run("kill", "-KILL", str(second))
    m.wait("a restart after SIGKILL", lambda: int(node.unit()["NRestarts"]) >= 2, 30)
    node.wait_status_text("the restarted agent", f"joined as {node.name}")
    assert serial(node) == first  # adopted, not enrolled again
    code, doc = node.status()
    assert code == 0, doc
    assert m.wait("one kubelet", lambda: len(pids_in_cgroup(m, "join-agent")) == 2, 30)


def test_a_reboot_with_valid_credentials_and_no_ca_comes_up_with_its_kubelet(
    system_node: SystemNode,
) -> None:
    node, m = system_node, system_node.machine
    set_up_and_joined(node)
    first = serial(node)
    assert m.reboot() == "running"  # the CA was a transient unit: gone after the reboot
    assert m.run("systemctl", "is-active", "cfssl-ca", check=False).stdout.strip() != "active"
    assert node.unit()["ActiveState"] == "active"
    node.wait_status_text("the joined node", f"joined as {node.name}; cert expires in")
    m.wait("the kubelet running", lambda: node.status()[1]["kubelet"]["state"] == "running", 30)
    assert serial(node) == first
    assert node.status()[0] == 0


def test_an_expired_node_with_its_ca_down_is_active_but_runs_no_kubelet_until_renewed(
    system_node: SystemNode,
) -> None:
    """A node left off past its certificate's end, its CA down (docs/install.md): the unit
    is active (READY=1 once the state is read, so the boot is not held), STATUS= says the
    certificate expired and why it is not renewed, the agent is "starting", no kubelet
    runs on credentials the API server would refuse, and join-agent-wait holds what needs
    a joined node. Once the CA answers, the agent renews and starts the kubelet."""
    import datetime as dt

    from cryptography.x509.oid import ExtendedKeyUsageOID

    from join_agent.storage import store
    from tests.lab import certs

    node, m = system_node, system_node.machine
    set_up_and_joined(node)
    m.run("systemctl", "stop", "join-agent", timeout=60)
    node.stop_ca()
    # Its certificate, as it would be after months switched off.
    ca = certs.CA.from_files(node.ca.ca_pem, node.ca.ca_key)
    key = certs.ec_key()
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200)
    expired = ca.issue(
        key.public_key(), subject=certs.node_subject(node.name), dns=(), ips=(),
        eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), key_usage=None, is_ca=None,
        not_before=long_ago, not_after=long_ago + dt.timedelta(days=90),
    )  # fmt: skip
    pki = m.root / Path(CLIENT).parent.relative_to("/")
    store.PairStore(pki, "kubelet-client").install([expired], certs.key_pem(key), long_ago)
    starts = len(node.kubelet_starts())

    m.run("systemctl", "start", "join-agent", timeout=60)  # blocking: READY=1 came
    assert node.unit()["ActiveState"] == "active"
    text = node.wait_status_text(
        "the failed renewal", f"joined as {node.name}; cert EXPIRED", contains="renewal failed"
    )
    assert "kubelet not started" in text, text
    code, doc = node.status()
    assert (code, doc["state"], doc["agent"]["state"]) == (2, "expired", "starting"), doc
    m.run("systemctl", "start", "--no-block", "join-agent-wait")
    time.sleep(3)  # join-agent wait looks every 2 s: it has looked, and waits on
    assert node.unit("join-agent-wait")["ActiveState"] == "activating"
    assert len(node.kubelet_starts()) == starts  # none on expired credentials

    node.start_ca()
    node.wait_active("join-agent-wait")
    node.wait_status_text("the renewed node", f"joined as {node.name}; cert expires in")
    m.wait("the kubelet started", lambda: len(node.kubelet_starts()) > starts, 30)
    assert node.status()[1]["agent"]["state"] == "running"


def test_journald_gets_each_line_at_its_priority_as_one_json_object(
    system_node: SystemNode,
) -> None:
    node, m = system_node, system_node.machine
    node.write_config()
    node.write_credential()
    m.run("systemctl", "start", "join-agent")  # no CA: enrollments fail
    m.wait("a failed enrollment", lambda: m.journal("-u", "join-agent", "-p", "err"), 30)
    config = m.root / "etc/join-agent/config.toml"
    config.write_text(config.read_text() + "\n[nonsense]\n")
    assert m.run("systemctl", "reload", "join-agent", check=False, timeout=60).returncode != 0
    entries = m.journal("-u", "join-agent", "_PID=" + node.unit()["MainPID"])
    by_event: dict[str, set[tuple[str, int]]] = {}
    for e in entries:
        doc = json.loads(str(e["MESSAGE"]))  # every line one JSON object
        by_event.setdefault(doc["event"], set()).add((doc["level"], int(str(e["PRIORITY"]))))
    assert by_event["renewal_failed"] == {("error", 3)}, by_event
    assert by_event["reload_refused"] == {("error", 3)}, by_event
    assert by_event["starting"] == {("info", 6)}, by_event
    errors = " ".join(str(e["MESSAGE"]) for e in m.journal("-u", "join-agent", "-p", "err"))
    assert "reload_refused" in errors and "renewal_failed" in errors
    # The reload verb's own sentence (ExecReload=) is at err too.
    assert "the running agent keeps the config it has" in errors


def test_the_bootstrap_token_reaches_the_agent_through_the_credentials_directory_only(
    system_node: SystemNode,
) -> None:
    """[signer] kind = "kubernetes" against the stand-in API server running in the machine:
    the token in /etc/credstore/bootstrap-token reaches the agent (LoadCredential=) and
    shows up nowhere else."""
    node, m = system_node, system_node.machine
    token = "abcdef." + secrets.token_hex(8)
    for part in (
        "tests/__init__.py",
        "tests/standins/__init__.py",
        "tests/standins/kube_apiserver.py",
        "tests/system/serve_apiserver.py",
    ):
        m.write(f"/srv/standin/{part}", (REPO / part).read_text())  # fmt: skip
    m.write("/srv/standin/token", token + "\n", 0o600)
    m.run(
        "systemd-run", "--unit=standin-apiserver", "--quiet", "--", "python3",
        "/srv/standin/tests/system/serve_apiserver.py", "/srv/standin/api", "/run/standin.json",
        "/srv/standin/token",
    )  # fmt: skip
    out = m.wait("its address", lambda: m.run("cat", "/run/standin.json", check=False).stdout, 60)
    served = json.loads(out)
    (m.root / "srv/standin/token").unlink()
    node.write_config(
        cluster={"server": served["url"]},
        signer={"kind": "kubernetes"},
        signer__kubernetes={"ca_pins": [served["pin"]]},
    )
    m.write("/etc/credstore/bootstrap-token", token + "\n", 0o600)
    joined(node)
    assert not (m.root / "etc/join-agent/bootstrap-token").exists()
    assert_nowhere_but_the_agent(node, token.split(".")[1])
