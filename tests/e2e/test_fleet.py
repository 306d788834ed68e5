"""A fleet on one machine: the real CFSSL CA and five real `join-agent run` nodes, each in
its own network namespace, joined by veth pairs to a bridge.

Everything network-facing lives in namespaces this test makes and removes: the bridge sits
in a "switch" namespace of its own, so nothing is added to the host's namespace, and every
address is from 198.18.0.0/15, 10.0.0.0/8 or a random ULA, used only on those interfaces.
Each node has its own config with only its name set: its addresses come from netlink
discovery inside its namespace (one more interface, ``cni0``, carries an address that the
default ``exclude_interfaces`` must leave out). The kubelet is the stand-in
(tests/standins/kubelet.py), run by each agent as its child.

Checked: every certificate carries exactly its own node's name and addresses; no node
reads or writes another node's files; cutting the CA namespace's link for longer than
the retry cap leaves every kubelet running with the same pid; restoring the link lets
every node renew.

Needs root (network namespaces), `ip` (iproute2), veth and bridge links, and cfssl.
Outside CI it skips where those are missing; with CI=true it fails (`need`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import Node, alive, need
from tests.lab.cfssl_ca import CfsslCA
from tests.standins import kubelet_command

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NAMES = ("node-alpha", "node-bravo", "node-charlie", "node-delta", "node-echo")
CA_PORT = 8888
HEALTHZ_PORT = 10248  # every namespace has its own loopback, so one port serves all
# 60 s certificates, as in tests/integration/test_daemon.py: renewals come 42-54 s after
# notBefore, and a freshly issued one has 30-88 s left (CFSSL rounds notBefore to the
# minute, backdate 1 s), more than the outage below lasts.
SHORT = {"expiry": "60s", "backdate": "1s"}
RETRY_MIN, RETRY_MAX = 1.0, 3.0
# Paths a misconfigured agent would write to: they must look the same after the test.
SYSTEM_PATHS = (
    "/etc/join-agent",
    "/var/lib/join-agent",
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/pki/ca.crt",
    "/var/lib/kubelet/pki",
)


@dataclass
class Host:
    """One network namespace and the addresses the test put in it."""

    netns: str
    port: str  # its veth peer on the bridge, in the switch namespace
    addresses: list[str] = field(default_factory=list)  # what its certificate must carry
    excluded: list[str] = field(default_factory=list)  # present, but not for the certificate


@dataclass
class Member:
    """One node of the fleet: its sandbox, namespace and `join-agent run` process."""

    name: str
    node: Node
    host: Host
    proc: subprocess.Popen[bytes] | None = None

    def status(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.node.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc

    def logs(self) -> str:
        try:
            return (self.node.root / "agent.log").read_text()[-3000:]
        except OSError:
            return "(no log)"

    def kubelet_starts(self) -> list[dict[str, Any]]:
        return self.node.kubelet_starts()


def run(*argv: str) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


class Network:
    """The namespaces of one test run; ``down`` removes whatever ``up`` got to make."""

    def __init__(self) -> None:
        # A random tag: namespace names are global, and another run may be going on.
        tag = secrets.token_hex(3)
        self.tag = tag
        self.octet = int(tag[:2], 16)  # 198.18.<octet>.0/24 for this run's bridge
        self.ula = f"fd{tag[2:4]}:{tag[4:6]}{tag[:2]}:{self.octet:x}::"
        self.switch = f"ja{tag}sw"
        self.made: list[str] = []
        self.ca = Host(netns=f"ja{tag}ca", port="p0")
        self.nodes = [Host(netns=f"ja{tag}n{i}", port=f"p{i + 1}") for i in range(len(NAMES))]

    def add_netns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def up(self) -> None:
        self.add_netns(self.switch)
        sw = ("ip", "-n", self.switch)
        run(*sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        run(*sw, "link", "set", "br0", "up")
        for host in (self.ca, *self.nodes):
            self.add_netns(host.netns)
            # eth0, not veth*: the default exclude_interfaces leaves veth* out, as it should
            # on a real node (container veths), and a host's own NIC is eth0-like.
            run(*sw, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
                "netns", host.netns)  # fmt: skip
            run(*sw, "link", "set", host.port, "master", "br0", "up")
            run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        self.address(self.ca, "eth0", f"198.18.{self.octet}.1/24")
        ipv6 = self._ipv6_works()
        for i, host in enumerate(self.nodes):
            self.address(host, "eth0", f"198.18.{self.octet}.{11 + i}/24")
            if ipv6:
                # nodad: a tentative address is (rightly) not taken, and DAD takes a second.
                self.address(host, "eth0", f"{self.ula}{11 + i}/64", "nodad")
            # A second NIC, and a CNI bridge whose address must stay out of the certificate:
            # the two ends of one more veth pair (not dummies: some kernels, this CI
            # machine's among them, are built without the dummy driver).
            run("ip", "-n", host.netns, "link", "add", "data0", "type", "veth", "peer", "name",
                "cni0")  # fmt: skip
            for ifname, addr in (
                ("data0", f"10.{self.octet}.{i}.1/32"),
                ("cni0", f"198.19.{self.octet}.{1 + i}/32"),
            ):
                run("ip", "-n", host.netns, "link", "set", ifname, "up")
                self.address(host, ifname, addr)

    def _ipv6_works(self) -> bool:
        try:
            run("ip", "-n", self.ca.netns, "-6", "addr", "add", f"{self.ula}1/64", "dev", "eth0",
                "nodad")  # fmt: skip
        except RuntimeError:
            return False  # IPv6 disabled on this kernel: the IPv4 checks still stand
        return True

    def address(self, host: Host, ifname: str, cidr: str, *flags: str) -> None:
        run("ip", "-n", host.netns, "addr", "add", cidr, "dev", ifname, *flags)
        addr = cidr.split("/", maxsplit=1)[0]
        (host.excluded if ifname == "cni0" else host.addresses).append(addr)

    def link(self, host: Host, state: str) -> None:
        run("ip", "-n", host.netns, "link", "set", "eth0", state)

    def down(self) -> None:
        # Deleting a namespace takes its interfaces (veth ends, the bridge) with it.
        for name in reversed(self.made):
            with contextlib.suppress(RuntimeError):
                run("ip", "netns", "delete", name)
        self.made.clear()


def _can_make_namespaces() -> str:
    """Why this test cannot run here, or "" when it can."""
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if not shutil.which("ip"):
        return "`ip` (iproute2) is not installed"
    probe = f"ja{secrets.token_hex(3)}probe"
    try:
        run("ip", "netns", "add", probe)
    except RuntimeError as e:
        return f"cannot create a network namespace: {e}"
    with contextlib.suppress(RuntimeError):
        run("ip", "netns", "delete", probe)
    return ""


def _stat(path: str) -> tuple[bool, int]:
    try:
        return True, os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return False, 0


def _kill_standin(pid: int, record: Path) -> None:
    """SIGKILL a stand-in kubelet of ours, only if ``pid`` still is one (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if f"--standin-record={record}".encode() in cmdline.split(b"\0"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Fleet:
    net: Network
    ca: CfsslCA
    ca_proc: subprocess.Popen[bytes]
    members: list[Member]

    @property
    def url(self) -> str:
        return f"http://198.18.{self.net.octet}.1:{CA_PORT}"

    def wait_all(
        self, what: str, cond: Callable[[Member, dict[str, Any]], bool], timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Poll every node's status.json until ``cond`` holds for all; fail naming the rest."""
        deadline = time.monotonic() + timeout
        docs: dict[str, dict[str, Any]] = {}
        while True:
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    pytest.fail(f"{m.name}'s agent exited ({m.proc.returncode}):\n{m.logs()}")
                doc = m.status()
                if doc and cond(m, doc):
                    docs[m.name] = doc
                else:
                    docs.pop(m.name, None)
            if len(docs) == len(self.members):
                return docs
            if time.monotonic() > deadline:
                late = [m for m in self.members if m.name not in docs]
                detail = "\n".join(
                    f"--- {m.name}: {json.dumps(m.status())[:1500]}\n{m.logs()}" for m in late
                )
                pytest.fail(f"after {timeout}s, {what} is still not true for:\n{detail}")
            time.sleep(0.25)


def _start_ca(net: Network, workdir: Path) -> tuple[CfsslCA, subprocess.Popen[bytes]]:
    ca = CfsslCA(workdir, **SHORT)  # key and config made here; served in the CA namespace
    ca.port = CA_PORT
    with ca.log_file.open("ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", net.ca.netns, *ca.serve_argv(f"198.18.{net.octet}.1")],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    return ca, proc


def _wait_for_ca(net: Network, ca: CfsslCA, url: str, proc: subprocess.Popen[bytes]) -> None:
    """Ask from the first node's namespace: proves the bridge carries traffic, too."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"cfssl serve exited: {ca.log_file.read_text()[-2000:]}")
        if ca.answers_from(net.nodes[0].netns, url):
            return
        time.sleep(0.2)
    pytest.fail(f"the CA at {url} did not answer node 0's namespace within 20 s")


def _configure(member: Member, fleet_url: str, server: str, pin: str) -> None:
    member.node.write_config(
        cluster={"server": server},  # only written into the kubeconfig, never contacted
        node={"name": member.name, "addresses": []},  # [] = discovered over netlink
        signer__cfssl={"urls": [fleet_url], "ca_pins": [pin]},
        renewal={"retry_min": f"{RETRY_MIN:g}s", "retry_max": f"{RETRY_MAX:g}s"},
        kubelet={
            "command": kubelet_command(
                f"--standin-record={member.node.kubelet_record}",
                f"--standin-healthz-port={HEALTHZ_PORT}",
            ),
            "healthz_url": f"http://127.0.0.1:{HEALTHZ_PORT}/healthz",
            "stop_grace": "5s",
        },
    )


def _start_agent(member: Member) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")
    }
    with (member.node.root / "agent.log").open("ab") as log:
        # `ip netns exec` execs the command: the Popen pid is the agent's.
        member.proc = subprocess.Popen(
            ["ip", "netns", "exec", member.host.netns, sys.executable, "-m", "join_agent",
             "--config", str(member.node.config), "run"],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip


def _stop(members: list[Member], ca_proc: subprocess.Popen[bytes] | None) -> None:
    for m in members:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
    for m in members:
        if m.proc is not None:
            try:
                m.proc.wait(15)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
        # A kubelet left behind by a killed agent goes too.
        for start in m.kubelet_starts():
            _kill_standin(int(start["pid"]), m.node.kubelet_record)
    if ca_proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ca_proc.pid, signal.SIGKILL)
        ca_proc.wait()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    why = _can_make_namespaces()
    if why:
        need("network namespaces", why)
    if not shutil.which("cfssl"):
        need("cfssl", "apt-get install golang-cfssl")
    net = Network()
    members: list[Member] = []
    ca_proc: subprocess.Popen[bytes] | None = None
    try:
        try:
            net.up()
        except RuntimeError as e:
            need("veth and bridge links in a namespace", str(e))
        ca, ca_proc = _start_ca(net, tmp_path / "ca")
        url = f"http://198.18.{net.octet}.1:{CA_PORT}"
        _wait_for_ca(net, ca, url, ca_proc)
        pin = ca.pin
        for name, host in zip(NAMES, net.nodes, strict=True):
            node = Node(root=tmp_path / name, ca=ca)
            node.root.mkdir()
            ca.write_auth_key(node.auth_key)
            member = Member(name=name, node=node, host=host)
            _configure(member, url, f"https://198.18.{net.octet}.1:6443", pin)
            members.append(member)
        yield Fleet(net=net, ca=ca, ca_proc=ca_proc, members=members)
    finally:
        _stop(members, ca_proc)
        net.down()


def _leaf(pem_file: Path) -> x509.Certificate:
    text = pem_file.read_text()
    block = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    assert block, f"no certificate in {pem_file}"
    return x509.load_pem_x509_certificate(block.group(0).encode())


# An IP SAN as cryptography returns it: an address, or (never asked for) a network.
IPSan = (
    ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network
)


def _sans(
    cert: x509.Certificate,
) -> tuple[list[str], set[IPSan]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), set(ext.get_values_for_type(x509.IPAddress))


def _serial(doc: dict[str, Any]) -> str | None:
    return (doc.get("credentials") or {}).get("serial")


def _failures(doc: dict[str, Any]) -> int:
    return int((doc.get("renewal") or {}).get("failures") or 0)


def _netns_of(pid: int) -> str:
    return run("ip", "netns", "identify", str(pid)).strip()


def test_a_fleet_joins_one_ca_keeps_its_kubelets_through_an_outage_and_renews(
    fleet: Fleet,
) -> None:
    members = fleet.members
    system_before = {p: _stat(p) for p in SYSTEM_PATHS}
    for m in members:
        _start_agent(m)

    # 1. Everyone joins and runs its kubelet. status.json names the kubelet's pid as soon as
    #    it is spawned; the stand-in writes its record a moment later (slower on a loaded
    #    CI machine), and step 3 reads that record.
    docs = fleet.wait_all(
        "joined with a kubelet running",
        lambda m, d: (
            d["agent"]["state"] == "running"
            and bool(d["kubelet"].get("pid"))
            and any(s["pid"] == d["kubelet"]["pid"] for s in m.kubelet_starts())
        ),
        60,
    )

    # 2. Each certificate names its own node and carries exactly its namespace's addresses:
    #    the ones discovered over netlink there, not loopback, link-local or cni0.
    for m in members:
        cert = _leaf(m.node.current)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == f"system:node:{m.name}"
        dns, ips = _sans(cert)
        assert dns == [m.name]
        assert ips == {ipaddress.ip_address(a) for a in m.host.addresses}, m.name
        assert not ips & {ipaddress.ip_address(a) for a in m.host.excluded}
        assert docs[m.name]["node"] == m.name

    # 3. Nothing crosses between nodes (the system-wide default paths are checked at the end).
    for m in members:
        _check_isolated(m, [o for o in members if o is not m], docs[m.name])

    # 4. The CA goes away for longer than the retry cap. Every node is told to renew (as
    #    `join-agent renew` does), fails at least twice, and keeps its kubelet.
    docs = fleet.wait_all("a certificate with 25 s left", lambda _m, d: _seconds_left(d) > 25, 90)
    kubelets = {name: d["kubelet"]["pid"] for name, d in docs.items()}
    serials = {name: _serial(d) for name, d in docs.items()}
    fleet.net.link(fleet.net.ca, "down")
    cut = time.monotonic()
    try:
        for m in members:
            os.kill(docs[m.name]["agent"]["pid"], signal.SIGUSR1)
        fleet.wait_all("two failed renewals", lambda _m, d: _failures(d) >= 2, 40)
        time.sleep(max(0.0, RETRY_MAX + 1 - (time.monotonic() - cut)))  # past the cap
        docs = fleet.wait_all("still failing", lambda _m, d: _failures(d) >= 2, 5)
        for name, d in docs.items():
            assert d["kubelet"]["pid"] == kubelets[name], name
            assert alive(kubelets[name]), name
    finally:
        fleet.net.link(fleet.net.ca, "up")
    outage = time.monotonic() - cut

    # 5. The link is back: every node renews by itself, with the same kubelet.
    docs = fleet.wait_all(
        "a renewal after the outage",
        lambda m, d: _failures(d) == 0 and _serial(d) not in (None, serials[m.name]),
        30,
    )
    for m in members:
        assert docs[m.name]["kubelet"]["pid"] == kubelets[m.name]
        assert alive(kubelets[m.name])
        assert len(m.kubelet_starts()) == 1, m.kubelet_starts()
    assert outage > RETRY_MAX

    # 6. A clean stop: every agent exits 0 and takes its kubelet with it.
    _stop(members, None)
    for m in members:
        assert m.proc is not None and m.proc.returncode == 0, m.logs()
        assert not alive(kubelets[m.name])
    assert {p: _stat(p) for p in SYSTEM_PATHS} == system_before


def _check_isolated(m: Member, others: list[Member], doc: dict[str, Any]) -> None:
    """The agent and its kubelet live in the node's own namespace; the kubelet got this
    node's name and kubeconfig; no file of the node mentions another node's name or
    address; no open file of the agent or kubelet is in another node's directory."""
    agent_pid, kubelet_pid = doc["agent"]["pid"], doc["kubelet"]["pid"]
    assert m.proc is not None and agent_pid == m.proc.pid
    assert _netns_of(agent_pid) == m.host.netns
    assert _netns_of(kubelet_pid) == m.host.netns
    (start,) = m.kubelet_starts()
    assert f"--hostname-override={m.name}" in start["argv"]
    assert f"--kubeconfig={m.node.kubeconfig}" in start["argv"]
    foreign = [o.name for o in others] + [a for o in others for a in o.host.addresses]
    # Whole words only: 198.18.5.1 (the CA, shared) must not match inside 198.18.5.11.
    patterns = [re.compile(rf"(?<![\w.:]){re.escape(f)}(?![\w.])") for f in foreign]
    files = [p for p in m.node.root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) >= 5, files  # config, key, cert, kubeconfig, CA, status: not vacuous
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        hits = [p.pattern for p in patterns if p.search(text)]
        assert not hits, f"{path} mentions another node: {hits}"
    roots = tuple(str(o.node.root) + os.sep for o in others)
    for pid in (agent_pid, kubelet_pid):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # an fd closed while we look
                target = os.readlink(fd)
                assert not target.startswith(roots), (m.name, target)


def _seconds_left(doc: dict[str, Any]) -> float:
    import datetime as dt

    from join_agent.core.wire import parse_iso

    na = (doc.get("credentials") or {}).get("not_after")
    now = dt.datetime.now(dt.timezone.utc)
    return (parse_iso(na) - now).total_seconds() if na else 0.0
