"""`join-agent run` as a real process: a real CFSSL with short-lived certificates, the
stand-in kubelet (tests/standins/kubelet.py), sd_notify on a real AF_UNIX socket.

CFSSL rounds notBefore to the minute, so nothing here predicts a time from the wall
clock: every expectation is read back from what was issued or recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Node, alive, kubectl_view, need
from tests.lab.cfssl_ca import CfsslCA, free_port, seed_config
from tests.standins import kubelet_command

pytestmark = pytest.mark.integration

# A 60 s certificate: renewal comes 42-54 s after notBefore, so a test sees rotations
# within a couple of minutes. CFSSL rounds notBefore to the nearest minute and subtracts
# the backdate: with 1 s, a certificate has 30-88 s left when issued (with 30 s it could
# have 1 s). retry_min/max are seconds so outages resolve quickly.
SHORT = {"expiry": "60s", "backdate": "1s"}


@pytest.fixture(scope="module")
def short_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CfsslCA]:
    import shutil

    if not shutil.which("cfssl"):
        need("cfssl", "apt-get install golang-cfssl")
    ca = CfsslCA(tmp_path_factory.mktemp("short-ca"), **SHORT)
    ca.start()
    yield ca
    ca.stop()


class Agent:
    """One `join-agent run` process and what it leaves behind."""

    def __init__(self, node: Node, env: dict[str, str] | None = None) -> None:
        self.node = node
        full = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        full.update(env or {})
        self.log = (node.root / "agent.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "join_agent", "--config", str(node.config), "run"],
            stdout=self.log,
            stderr=self.log,
            env=full,
        )

    def status(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.node.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc

    def wait(
        self, what: str, cond: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.status()
            if doc and cond(doc):
                return doc
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the agent exited ({self.proc.returncode}) waiting for {what}:\n{self.logs()}"
                )
            time.sleep(0.2)
        last = json.dumps(self.status())[:2000]
        pytest.fail(f"timed out after {timeout}s waiting for {what}; status: {last}\n{self.logs()}")

    def logs(self) -> str:
        return (self.node.root / "agent.log").read_text()[-4000:]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_for_record(node: Node, pid: int, timeout: float = 10) -> None:
    """The stand-in writes its record line just after it starts: wait for it."""
    deadline = time.monotonic() + timeout
    while pid not in [s["pid"] for s in node.kubelet_starts()]:
        if time.monotonic() > deadline:
            pytest.fail(f"the stand-in kubelet {pid} wrote no record in {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def daemon_node(tmp_path: Path, short_ca: CfsslCA) -> Iterator[Node]:
    n = Node(root=tmp_path / "node", ca=short_ca)
    n.root.mkdir()
    short_ca.write_auth_key(n.auth_key)
    configure(n, free_port())
    yield n
    # Whatever a test left running (an agent, a kubelet) goes with it.
    for pidfile in (n.state / "agent.pid", n.state / "kubelet.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
    for start in n.kubelet_starts():
        with contextlib.suppress(OSError):
            os.kill(start["pid"], signal.SIGKILL)


def configure(n: Node, healthz_port: int, **extra: dict[str, Any]) -> None:
    n.write_config(
        renewal={"retry_min": "1s", "retry_max": "3s"},
        kubelet={
            "command": kubelet_command(
                f"--standin-record={n.kubelet_record}",
                f"--standin-healthz-port={healthz_port}",
            ),
            "healthz_url": f"http://127.0.0.1:{healthz_port}/healthz",
            "stop_grace": "5s",
            "restart_min": "0.2s",
            "restart_max": "1s",
            "stable_after": "2s",
        },
        **extra,
    )


def seconds_left(doc: dict[str, Any]) -> float:
    import datetime as dt

    from join_agent.core.wire import parse_iso

    na = (doc.get("credentials") or {}).get("not_after")
    now = dt.datetime.now(dt.timezone.utc)
    return (parse_iso(na) - now).total_seconds() if na else 0.0


def serial(doc: dict[str, Any]) -> str | None:
    return (doc.get("credentials") or {}).get("serial")


def test_rotations_move_the_symlink_and_never_restart_the_kubelet(
    daemon_node: Node, kubectl: str
) -> None:
    node = daemon_node
    agent = Agent(node)
    try:
        first = agent.wait("the first certificate", lambda d: d["agent"]["state"] == "running", 30)
        seen = [serial(first)]
        links = [os.readlink(node.current)]
        for _ in range(2):
            doc = agent.wait(
                "a rotation", lambda d: serial(d) not in seen and serial(d) is not None, 120
            )
            seen.append(serial(doc))
            links.append(os.readlink(node.current))
        assert len(set(links)) == 3, links
        # The kubelet was started once: client-certificate rotations need no restart.
        starts = node.kubelet_starts()
        assert len(starts) == 1, starts
        assert alive(starts[0]["pid"])
        assert f"--kubeconfig={node.kubeconfig}" in starts[0]["argv"]
        assert "--hostname-override=worker-1" in starts[0]["argv"]
        # The kubeconfig still works for the real kubectl, through the moved symlink.
        flat = kubectl_view(kubectl, node.kubeconfig, flatten=True)
        import base64

        data = flat["users"][0]["user"]["client-certificate-data"]
        assert base64.b64decode(data) == node.current.read_bytes()
        # status agrees with the files, from the daemon's record (no PEM parsed).
        r = node.run("status", "--json")
        report = json.loads(r.stdout)
        assert r.returncode == 0, r.stdout
        assert report["source"] == "daemon"
        assert report["certificate"]["serial"] == seen[-1]
        assert report["kubelet"]["healthz"] == "ok"
    finally:
        code = agent.stop()
    assert code == 0


def test_ca_outage_keeps_the_kubelet_and_heals(daemon_node: Node, short_ca: CfsslCA) -> None:
    node = daemon_node
    agent = Agent(node)
    try:
        # Enough certificate left to live through the outage: status must say degraded,
        # not expired.
        doc = agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        doc = agent.wait("a certificate with 25 s left", lambda d: seconds_left(d) >= 25, 120)
        kubelet_pid = doc["kubelet"]["pid"]
        before = serial(doc)
        short_ca.stop()
        try:
            os.kill(agent.proc.pid, signal.SIGUSR1)  # renew now, into the outage
            failed = agent.wait(
                "a failed renewal", lambda d: (d["renewal"]["failures"] or 0) >= 2, 30
            )
            assert "no CFSSL server answered" in failed["last_error"]["message"]
            r = node.run("status", "--json")
            report = json.loads(r.stdout)
            assert r.returncode == 1, r.stdout
            assert report["health"] == "degraded"
            assert any("the last renewal failed" in p for p in report["problems"])
            time.sleep(4)  # longer than retry_max: the kubelet must not notice
            assert alive(kubelet_pid)
            assert agent.status()["kubelet"]["pid"] == kubelet_pid
        finally:
            short_ca.start(port=short_ca.port)
        healed = agent.wait(
            "a renewal after the outage",
            lambda d: d["renewal"]["failures"] == 0 and serial(d) != before,
            60,
        )
        assert healed["kubelet"]["pid"] == kubelet_pid
        assert node.run("status").returncode == 0
    finally:
        assert agent.stop() == 0


def test_the_resident_daemon_holds_no_tls_library(daemon_node: Node) -> None:
    """structlog imports asyncio, and asyncio ssl and OpenSSL; the daemon uses none of them
    (its TLS is in the worker child) and keeps them out (log.defer_asyncio): ≈ 5.8 MiB of
    its resident memory (docs/benchmarks.md). Looked at where the kernel says what is
    mapped, after an enrollment (in a worker child) and a kubelet start."""
    agent = Agent(daemon_node)
    try:
        agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        mapped = Path(f"/proc/{agent.proc.pid}/maps").read_text()
        held = sorted({ln.rsplit("/", 1)[-1] for ln in mapped.splitlines() if "/" in ln})
        assert [f for f in held if f.startswith(("_ssl", "libssl", "libcrypto", "_asyncio"))] == []
        assert any(f.startswith("libpython") or f.startswith("python3") for f in held)
    finally:
        assert agent.stop() == 0


def test_kubelet_is_restarted_and_stopped_before_the_agent_exits(daemon_node: Node) -> None:
    node = daemon_node
    agent = Agent(node)
    try:
        doc = agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        first = doc["kubelet"]["pid"]
        wait_for_record(node, first)  # killed before it wrote its line, it would leave none
        os.kill(first, signal.SIGKILL)
        again = agent.wait(
            "a restarted kubelet", lambda d: d["kubelet"].get("pid") not in (None, first), 20
        )
        assert again["kubelet"]["restarts"] >= 1
        second = again["kubelet"]["pid"]
        wait_for_record(node, second)
        assert [s["pid"] for s in node.kubelet_starts()] == [first, second]
    finally:
        code = agent.stop()
    assert code == 0
    assert not alive(second), "the kubelet outlived the agent"
    assert agent.status()["agent"]["state"] == "stopped"
    assert not (node.state / "agent.pid").exists()


def test_stale_kubelet_of_a_killed_agent_is_stopped_at_start(daemon_node: Node) -> None:
    node = daemon_node
    agent = Agent(node)
    doc = agent.wait("running", lambda d: d["kubelet"].get("pid") is not None, 30)
    orphan = doc["kubelet"]["pid"]
    agent.kill()  # SIGKILL: the kubelet is left behind
    assert alive(orphan)
    agent = Agent(node)
    try:
        doc = agent.wait(
            "a new kubelet", lambda d: d["kubelet"].get("pid") not in (None, orphan), 30
        )
        assert not alive(orphan)
        assert "stale_kubelet" in agent.logs()
    finally:
        assert agent.stop() == 0


def test_sd_notify_ready_status_watchdog_stopping(daemon_node: Node, tmp_path: Path) -> None:
    node = daemon_node
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    messages: list[tuple[float, str]] = []

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                messages.append((time.monotonic(), sock.recv(4096).decode()))

    agent = Agent(node, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
    try:
        drain(8)
        ready = [m for _, m in messages if "READY=1" in m]
        assert len(ready) == 1, messages
        # READY=1 once the agent has read the node's state (a fresh node here: before the
        # join, which a start job must not wait for); STATUS= then follows the join.
        assert "STATUS=not joined yet" in ready[0]
        assert any(m.startswith("STATUS=joined as worker-1") for _, m in messages), messages
        statuses = [m for _, m in messages if m.startswith("STATUS=") or "\nSTATUS=" in m]
        assert statuses and "starting" in messages[0][1]
        dogs = [t for t, m in messages if m == "WATCHDOG=1"]
        # WATCHDOG_USEC=2 s: a ping about every second, none much faster.
        assert len(dogs) >= 5, messages
        gaps = [b - a for a, b in itertools.pairwise(dogs)]
        assert min(gaps) > 0.5 and max(gaps) < 1.8, gaps
        # The kubelet inherited neither the socket nor the watchdog.
        start = node.kubelet_starts()[0]
        assert "NOTIFY_SOCKET" not in start["env"] and "WATCHDOG_USEC" not in start["env"]
    finally:
        agent.proc.send_signal(signal.SIGTERM)
        drain(2)
        assert agent.stop() == 0
        sock.close()
    assert any("STOPPING=1" in m for _, m in messages)


def test_reload_keeps_the_old_config_when_the_new_one_is_bad(daemon_node: Node) -> None:
    node = daemon_node
    agent = Agent(node)
    try:
        agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        good = node.config.read_text()
        node.config.write_text(good + "\n[nonsense]\n")
        os.kill(agent.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload_refused" not in agent.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "reload_refused" in agent.logs()
        assert agent.proc.poll() is None
        node.config.write_text(good.replace('retry_max = "3s"', 'retry_max = "4s"'))
        os.kill(agent.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while '"event": "reloaded"' not in agent.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert '"event": "reloaded"' in agent.logs()
    finally:
        assert agent.stop() == 0


def test_reload_and_wait_verbs_against_a_running_daemon(daemon_node: Node) -> None:
    """`join-agent reload` reports the daemon's verdict (what `systemctl reload` shows);
    `join-agent wait` returns once the node has joined."""
    node = daemon_node
    r = node.run("wait", "--timeout", "1s")
    assert r.returncode == 1
    assert r.stderr.startswith("join-agent: not joined after 1s: no certificate at ")
    r = node.run("reload")
    assert r.returncode == 1 and "join-agent run is not running for" in r.stderr
    agent = Agent(node)
    try:
        r = node.run("wait", "--timeout", "60s")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("joined as worker-1; the certificate is valid until ")
        good = node.config.read_text()
        node.config.write_text(good.replace('retry_max = "3s"', 'retry_max = "4s"'))
        r = node.run("reload", "--pid", str(agent.proc.pid))
        assert (r.returncode, r.stdout.strip()) == (0, f"reloaded {node.config}"), r.stderr
        moved = good.replace(str(node.state), str(node.root / "elsewhere"))
        node.config.write_text(moved)
        r = node.run("reload")  # the config names another state_dir: no daemon there
        assert r.returncode == 1 and "is not running for" in r.stderr
        r = node.run("reload", "--pid", str(agent.proc.pid))
        assert r.returncode == 1
        node.config.write_text(good + "\n[nonsense]\n")
        r = node.run("reload", "--pid", str(agent.proc.pid))
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1 and "the running agent keeps the config it has" in r.stderr
        doc = agent.wait("the refusal", lambda d: (d.get("reload") or {}).get("ok") is False, 10)
        assert doc["reload"]["count"] == 2
        assert agent.proc.poll() is None
        r = node.run("wait", "--timeout", "nonsense")
        assert r.returncode == 1 and r.stderr.startswith("join-agent: --timeout 'nonsense' is")
    finally:
        assert agent.stop() == 0


def test_renew_verb_asks_the_running_daemon(daemon_node: Node) -> None:
    node = daemon_node
    agent = Agent(node)
    try:
        doc = agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        r = node.run("renew")
        assert r.returncode == 0, r.stderr
        assert "renewed by the running daemon" in r.stdout
        assert serial(agent.status()) != serial(doc)
    finally:
        assert agent.stop() == 0


def test_run_refuses_a_kubelet_that_rotates_its_own_certificates(daemon_node: Node) -> None:
    node = daemon_node
    kubelet_config = node.root / "kubelet-config.yaml"
    kubelet_config.write_text("kind: KubeletConfiguration\nrotateCertificates: true\n")
    node.write_config(kubelet={"command": kubelet_command(f"--config={kubelet_config}")})
    r = node.run("run")
    assert r.returncode != 0
    assert "refusing to run a kubelet that would fight join-agent" in r.stderr
    assert "rotateCertificates" in r.stderr


def test_certificates_only_mode_is_ready_without_a_kubelet(
    daemon_node: Node, short_ca: CfsslCA
) -> None:
    node = daemon_node
    node.write_config(kubelet={"manage": False}, renewal={"retry_min": "1s", "retry_max": "3s"})
    agent = Agent(node)
    try:
        doc = agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        assert doc["kubelet"] == {"managed": False}
        assert node.kubelet_starts() == []
        assert node.run("status").returncode == 0
    finally:
        assert agent.stop() == 0


def test_a_new_ca_that_matches_a_pin_is_added_and_restarts_the_kubelet_once(
    daemon_node: Node, short_ca: CfsslCA, tmp_path: Path
) -> None:
    node = daemon_node
    new_ca = CfsslCA(tmp_path / "new-ca", cn="join-agent test CA 2", **SHORT)
    new_ca.write_config(seed_config(short_ca.auth_key_hex, **SHORT))
    configure(node, free_port(), signer__cfssl={"ca_pins": [short_ca.pin, new_ca.pin]})
    agent = Agent(node)
    try:
        doc = agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        old_kubelet = doc["kubelet"]["pid"]
        port = short_ca.port
        short_ca.stop()
        new_ca.start(port=port)  # the same URL now answers with the new CA
        try:
            os.kill(agent.proc.pid, signal.SIGUSR1)
            doc = agent.wait(
                "a certificate from the new CA",
                lambda d: (
                    (d.get("credentials") or {}).get("issuer") == "CN=join-agent test CA 2"
                    and d["kubelet"].get("pid") not in (None, old_kubelet)
                ),
                60,
            )
        finally:
            new_ca.stop()
            short_ca.start(port=port)
        subjects = [c["subject"] for c in doc["credentials"]["ca"]]
        assert subjects == ["CN=join-agent test CA 2", "CN=join-agent test CA"]
        wait_for_record(node, doc["kubelet"]["pid"])
        time.sleep(1)  # a second restart, if there were one, would show by now
        assert len(node.kubelet_starts()) == 2  # restarted exactly once for the CA change
    finally:
        assert agent.stop() == 0


def test_metrics_endpoint_reports_expiry_and_renewals(daemon_node: Node) -> None:
    import urllib.request

    node = daemon_node
    port = free_port()
    node.write_config(
        kubelet={"manage": False},
        renewal={"retry_min": "1s", "retry_max": "3s"},
        metrics={"listen": f"127.0.0.1:{port}"},
    )
    agent = Agent(node)
    try:
        doc = agent.wait("running", lambda d: d["agent"]["state"] == "running", 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        from join_agent.core.wire import parse_iso

        expiry = parse_iso(doc["credentials"]["not_after"]).timestamp()
        values = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert values["join_agent_certificate_expiry_timestamp_seconds"] == expiry
        assert values['join_agent_renewals_total{result="success"}'] >= 1
        assert "join_agent_next_renewal_timestamp_seconds" in values
        assert values["join_agent_kubelet_up"] == 0
    finally:
        assert agent.stop() == 0


def test_reset_removes_what_join_wrote_but_not_while_the_daemon_runs(daemon_node: Node) -> None:
    node = daemon_node
    agent = Agent(node)
    doc = agent.wait("running", lambda d: d["kubelet"].get("pid") is not None, 30)
    r = node.run("reset", "--force")
    assert r.returncode != 0
    assert "join-agent run is running" in r.stderr
    orphan = doc["kubelet"]["pid"]
    agent.kill()  # SIGKILL: its kubelet is left behind, and reset must stop it
    assert alive(orphan)
    r = node.run("reset")  # no TTY, no --force: refused, nothing removed
    assert r.returncode != 0 and "--force" in r.stderr
    assert node.current.exists()
    r = node.run("reset", "--force")
    assert r.returncode == 0, r.stderr
    assert not alive(orphan)
    assert f"removed {node.kubeconfig}" in r.stdout
    assert not node.current.exists() and not node.kubeconfig.exists()
    assert not node.ca_file.exists()
    assert list(node.pki.glob("kubelet-client-*")) == []
    assert node.run("status").returncode == 2


def test_an_expired_certificate_is_replaced_at_start(daemon_node: Node, short_ca: CfsslCA) -> None:
    """A node that was off for months: its certificate expired; the agent re-enrolls."""
    import datetime as dt

    from cryptography.x509.oid import ExtendedKeyUsageOID

    from join_agent.storage import store
    from tests.lab import certs

    node = daemon_node
    ca = certs.CA.from_files(short_ca.ca_pem, short_ca.ca_key)
    key = certs.ec_key()
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200)
    expired = ca.issue(
        key.public_key(),
        subject=certs.node_subject("worker-1"),
        dns=(),
        ips=(),
        eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        key_usage=None,
        is_ca=None,
        not_before=long_ago,
        not_after=long_ago + dt.timedelta(days=90),
    )
    key_pem = certs.key_pem(key)
    assert node.run("join").returncode == 0  # kubeconfig and CA file, as after a real join
    store.PairStore(node.pki, "kubelet-client").install([expired], key_pem, long_ago)
    assert json.loads(node.run("status", "--json").stdout)["state"] == "expired"
    agent = Agent(node)
    try:
        doc = agent.wait(
            "a fresh certificate",
            lambda d: (
                d["agent"]["state"] == "running" and serial(d) != f"{expired.serial_number:x}"
            ),
            30,
        )
        assert state_of(node) == "valid"
        assert doc["renewal"]["failures"] == 0
    finally:
        assert agent.stop() == 0


def state_of(node: Node) -> str:
    return str(json.loads(node.run("status", "--json").stdout)["state"])
