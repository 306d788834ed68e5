"""Tests for join_agent.host.netlink: parsers on hand-built messages, then a real kernel."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from join_agent.host import netlink
from join_agent.host.netlink import InterfaceAddress

# Values from <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_addr.h>; spelled out
# here rather than imported so a wrong constant in the module is caught.
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_NEWADDR = 20
NLM_F_MULTI = 0x02
NLM_F_DUMP_INTR = 0x10
IFLA_IFNAME = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_FLAGS = 8
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFA_F_SECONDARY = 0x01  # == IFA_F_TEMPORARY
IFA_F_NODAD = 0x02
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
IFA_F_MANAGETEMPADDR = 0x100
SEQ = 7


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def nlmsg(mtype: int, payload: bytes, *, flags: int = NLM_F_MULTI, seq: int = SEQ) -> bytes:
    """One netlink message; nlmsg_len excludes the trailing alignment padding."""
    return _pad(struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload)


def rta(atype: int, data: bytes) -> bytes:
    return _pad(struct.pack("=HH", 4 + len(data), atype) + data)


def link(index: int, name: str, flags: int, *extra: bytes) -> bytes:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0)
    return nlmsg(RTM_NEWLINK, body + rta(IFLA_IFNAME, name.encode() + b"\0") + b"".join(extra))


def addr(
    family: int, prefixlen: int, flags8: int, scope: int, index: int, *attrs: bytes, seq: int = SEQ
) -> bytes:
    body = struct.pack("=BBBBI", family, prefixlen, flags8, scope, index)
    return nlmsg(RTM_NEWADDR, body + b"".join(attrs), seq=seq)


def done(seq: int = SEQ) -> bytes:
    return nlmsg(NLMSG_DONE, struct.pack("=i", 0), seq=seq)


def ip4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def parse(link_dump: list[bytes], addr_dump: list[bytes]) -> list[InterfaceAddress]:
    links, _ = netlink._collect_dump(link_dump, SEQ)
    addrs, _ = netlink._collect_dump(addr_dump, SEQ)
    return netlink._parse_addresses(addrs, netlink._parse_links(links))


def rec(
    interface: str,
    index: int,
    address: str,
    prefixlen: int,
    *,
    up: bool = True,
    scope: int = 0,
    temporary: bool = False,
    deprecated: bool = False,
    tentative: bool = False,
) -> InterfaceAddress:
    return InterfaceAddress(
        interface=interface,
        index=index,
        up=up,
        address=ipaddress.ip_address(address),
        prefixlen=prefixlen,
        scope=scope,
        temporary=temporary,
        deprecated=deprecated,
        tentative=tentative,
    )


LINKS = [
    link(1, "lo", IFF_UP | IFF_LOOPBACK) + link(2, "eth0", IFF_UP),
    link(3, "eth1", 0) + done(),
]


# --- parser tests --------------------------------------------------------------------


def test_multipart_dump_across_datagrams() -> None:
    addr_dump = [
        addr(socket.AF_INET, 8, IFA_F_PERMANENT, 254, 1, rta(IFA_ADDRESS, ip4("127.0.0.1")))
        + addr(socket.AF_INET, 24, IFA_F_PERMANENT, 0, 2, rta(IFA_ADDRESS, ip4("192.0.2.10"))),
        addr(socket.AF_INET, 24, IFA_F_PERMANENT, 0, 3, rta(IFA_ADDRESS, ip4("198.51.100.1"))),
        addr(socket.AF_INET6, 64, IFA_F_PERMANENT, 253, 2, rta(IFA_ADDRESS, ip6("fe80::1")))
        + done(),
    ]
    assert parse(LINKS, addr_dump) == [
        rec("lo", 1, "127.0.0.1", 8, scope=254),
        rec("eth0", 2, "192.0.2.10", 24),
        rec("eth1", 3, "198.51.100.1", 24, up=False),
        rec("eth0", 2, "fe80::1", 64, scope=253),
    ]


def test_ifa_flags_attribute_overrides_8bit_flags() -> None:
    addr_dump = [
        # The 8-bit field says nothing; IFA_FLAGS (with a bit above 0xff) says deprecated.
        addr(
            socket.AF_INET6,
            64,
            0,
            0,
            2,
            rta(IFA_ADDRESS, ip6("2001:db8::1")),
            rta(IFA_FLAGS, struct.pack("=I", IFA_F_MANAGETEMPADDR | IFA_F_DEPRECATED)),
        )
        # The 8-bit field says tentative but IFA_FLAGS is authoritative: not tentative.
        + addr(
            socket.AF_INET6,
            64,
            IFA_F_TENTATIVE,
            0,
            2,
            rta(IFA_FLAGS, struct.pack("=I", IFA_F_PERMANENT)),
            rta(IFA_ADDRESS, ip6("2001:db8::2")),
        )
        # Without IFA_FLAGS the 8-bit field is used.
        + addr(
            socket.AF_INET6,
            64,
            IFA_F_TENTATIVE | IFA_F_SECONDARY,
            0,
            2,
            rta(IFA_ADDRESS, ip6("2001:db8::3")),
        )
        + done()
    ]
    assert parse(LINKS, addr_dump) == [
        rec("eth0", 2, "2001:db8::1", 64, deprecated=True),
        rec("eth0", 2, "2001:db8::2", 64),
        rec("eth0", 2, "2001:db8::3", 64, tentative=True, temporary=True),
    ]


def test_unknown_attributes_are_skipped_with_alignment() -> None:
    # Type 99 with a 5-byte (unaligned) payload, and a NLA_F_NESTED-flagged unknown.
    unknown = rta(99, b"\x01\x02\x03\x04\x05") + rta(0x8000 | 98, rta(1, b"xy"))
    addr_dump = [
        addr(
            socket.AF_INET,
            24,
            0,
            0,
            2,
            unknown,
            rta(IFA_LABEL, b"eth0\0"),
            rta(IFA_ADDRESS, ip4("192.0.2.10")),
        )
        + done()
    ]
    links = [link(2, "eth0", IFF_UP, rta(99, b"\xff" * 3)) + done()]
    assert parse(links, addr_dump) == [rec("eth0", 2, "192.0.2.10", 24)]


def test_ifa_local_preferred_over_peer_address() -> None:
    # IPv4 point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL our own address.
    addr_dump = [
        addr(
            socket.AF_INET,
            32,
            0,
            0,
            2,
            rta(IFA_ADDRESS, ip4("10.0.0.2")),
            rta(IFA_LOCAL, ip4("10.0.0.1")),
        )
        + done()
    ]
    assert parse(LINKS, addr_dump) == [rec("eth0", 2, "10.0.0.1", 32)]


def test_ipv4_secondary_is_not_temporary() -> None:
    # 0x01 means IFA_F_SECONDARY for IPv4 and IFA_F_TEMPORARY only for IPv6.
    addr_dump = [
        addr(
            socket.AF_INET,
            24,
            IFA_F_SECONDARY,
            0,
            2,
            rta(IFA_ADDRESS, ip4("192.0.2.11")),
            rta(IFA_FLAGS, struct.pack("=I", IFA_F_SECONDARY)),
        )
        + addr(
            socket.AF_INET6,
            64,
            IFA_F_SECONDARY,
            0,
            2,
            rta(IFA_ADDRESS, ip6("2001:db8::99")),
            rta(IFA_FLAGS, struct.pack("=I", IFA_F_SECONDARY)),
        )
        + done()
    ]
    assert parse(LINKS, addr_dump) == [
        rec("eth0", 2, "192.0.2.11", 24),
        rec("eth0", 2, "2001:db8::99", 64, temporary=True),
    ]


def test_other_families_unknown_links_and_stale_seq_are_ignored() -> None:
    addr_dump = [
        # Reply to an older request on the same socket.
        addr(socket.AF_INET, 24, 0, 0, 2, rta(IFA_ADDRESS, ip4("203.0.113.1")), seq=SEQ - 1)
        # AF_MCTP (45) addresses also come back from an AF_UNSPEC address dump.
        + addr(45, 0, 0, 0, 2, rta(IFA_LOCAL, b"\x08"))
        # ifindex 9 was not in the link dump (created between the two dumps).
        + addr(socket.AF_INET, 24, 0, 0, 9, rta(IFA_ADDRESS, ip4("192.0.2.99")))
        + addr(socket.AF_INET, 24, 0, 0, 2, rta(IFA_ADDRESS, ip4("192.0.2.10")))
        + done()
    ]
    assert parse(LINKS, addr_dump) == [rec("eth0", 2, "192.0.2.10", 24)]


def test_nlmsg_error_raises_oserror_with_errno() -> None:
    error = nlmsg(NLMSG_ERROR, struct.pack("=i", -errno.EPERM) + b"\0" * 16, flags=0)
    with pytest.raises(OSError, match="EPERM") as info:
        netlink._collect_dump([link(1, "lo", IFF_UP), error], SEQ)
    assert info.value.errno == errno.EPERM


def test_ack_is_not_an_error() -> None:
    ack = nlmsg(NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16, flags=0)
    messages, interrupted = netlink._collect_dump([ack + LINKS[0], LINKS[1]], SEQ)
    assert [m.type for m in messages] == [RTM_NEWLINK] * 3
    assert not interrupted


def test_dump_interrupted_flag_is_reported() -> None:
    dump = [link(1, "lo", IFF_UP) + nlmsg(NLMSG_DONE, b"\0" * 4, flags=NLM_F_DUMP_INTR)]
    _, interrupted = netlink._collect_dump(dump, SEQ)
    assert interrupted


def test_nlmsg_len_excludes_padding_of_last_message() -> None:
    # The final message and its final attribute may end without alignment padding.
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 2, IFF_UP, 0)
    message = nlmsg(RTM_NEWLINK, body + rta(IFLA_IFNAME, b"eth0\0")[:9])
    (length,) = struct.unpack_from("=I", message)
    assert length % 4 != 0
    messages, _ = netlink._collect_dump([message[:length], done()], SEQ)
    assert netlink._parse_links(messages) == {2: netlink._Link(2, "eth0", True)}


def _with_len(message: bytes, length: int) -> bytes:
    return struct.pack("=I", length) + message[4:]


GOOD_ADDR = addr(socket.AF_INET, 24, 0, 0, 2, rta(IFA_ADDRESS, ip4("192.0.2.10")))


@pytest.mark.parametrize(
    ("datagrams", "message"),
    [
        pytest.param([GOOD_ADDR[:10]], "truncated netlink header", id="short-header"),
        pytest.param([GOOD_ADDR[:-3]], "bad netlink message length", id="cut-message"),
        pytest.param([_with_len(GOOD_ADDR, 0)], "bad netlink message length", id="len-zero"),
        pytest.param(
            [_with_len(GOOD_ADDR, len(GOOD_ADDR) + 4)], "bad netlink message length", id="len-big"
        ),
        pytest.param([GOOD_ADDR], "without NLMSG_DONE", id="no-done"),
        pytest.param(
            [nlmsg(NLMSG_ERROR, b"\xff\xff", flags=0)], "truncated NLMSG_ERROR", id="short-error"
        ),
    ],
)
def test_malformed_stream_raises_value_error(datagrams: list[bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        netlink._collect_dump(datagrams, SEQ)


@pytest.mark.parametrize(
    ("addr_message", "message"),
    [
        pytest.param(
            addr(socket.AF_INET, 24, 0, 0, 2, struct.pack("=HH", 8, IFA_ADDRESS) + b"\xc0\x00"),
            "bad route attribute length",
            id="attr-cut",
        ),
        pytest.param(
            addr(socket.AF_INET, 24, 0, 0, 2, struct.pack("=HH", 2, 99)),
            "bad route attribute length",
            id="attr-len-below-header",
        ),
        pytest.param(
            addr(socket.AF_INET, 24, 0, 0, 2, b"\x08\x00"),
            "truncated route attribute header",
            id="attr-header-cut",
        ),
        pytest.param(
            nlmsg(RTM_NEWADDR, b"\x02\x18\x00"), "truncated ifaddrmsg", id="short-ifaddrmsg"
        ),
        pytest.param(
            addr(socket.AF_INET, 24, 0, 0, 2, rta(IFA_ADDRESS, ip6("::1"))),
            "address of length 16",
            id="wrong-address-length",
        ),
        pytest.param(
            addr(socket.AF_INET, 24, 0, 0, 2, rta(IFA_LABEL, b"eth0\0")),
            "no address",
            id="no-address",
        ),
        pytest.param(
            addr(
                socket.AF_INET,
                24,
                0,
                0,
                2,
                rta(IFA_ADDRESS, ip4("192.0.2.1")),
                rta(IFA_FLAGS, b"\x01"),
            ),
            "truncated IFA_FLAGS",
            id="short-ifa-flags",
        ),
    ],
)
def test_malformed_address_raises_value_error(addr_message: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(LINKS, [addr_message + done()])


def test_malformed_link_raises_value_error() -> None:
    with pytest.raises(ValueError, match="truncated ifinfomsg"):
        parse([nlmsg(RTM_NEWLINK, b"\0" * 8) + done()], [done()])
    no_name = nlmsg(RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 4, IFF_UP, 0))
    with pytest.raises(ValueError, match="no IFLA_IFNAME"):
        parse([no_name + done()], [done()])


# --- notifications -------------------------------------------------------------------

RTM_DELLINK = 17
RTM_DELADDR = 21
RTM_NEWROUTE = 24
IFF_RUNNING = 0x40
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254


def told(mtype: int, body: bytes) -> bytes:
    """A notification as the kernel multicasts it: no request flags, sequence 0."""
    return nlmsg(mtype, body, flags=0, seq=0)


def ifaddr(mtype: int, family: int, scope: int, raw: bytes) -> bytes:
    return told(mtype, struct.pack("=BBBBI", family, 24, 0, scope, 2) + rta(IFA_ADDRESS, raw))


def iflink(mtype: int, change: int, flags: int = IFF_UP) -> bytes:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 2, flags, change)
    return told(mtype, body + rta(IFLA_IFNAME, b"eth0\0"))


@pytest.mark.parametrize(
    ("datagram", "change"),
    [
        pytest.param(ifaddr(RTM_NEWADDR, socket.AF_INET, RT_SCOPE_UNIVERSE, ip4("10.0.0.5")),
                     True, id="ipv4-added"),
        pytest.param(ifaddr(RTM_DELADDR, socket.AF_INET6, RT_SCOPE_UNIVERSE, ip6("fd00::5")),
                     True, id="ipv6-removed"),
        pytest.param(ifaddr(RTM_NEWADDR, socket.AF_INET6, RT_SCOPE_LINK, ip6("fe80::1")),
                     False, id="link-local"),
        pytest.param(ifaddr(RTM_NEWADDR, socket.AF_INET, RT_SCOPE_HOST, ip4("127.0.0.1")),
                     False, id="loopback"),
        pytest.param(ifaddr(RTM_NEWADDR, socket.AF_INET6, RT_SCOPE_LINK, ip6("fe80::1"))
                     + ifaddr(RTM_NEWADDR, socket.AF_INET6, 0, ip6("fd00::5")),
                     True, id="a-global-one-after-a-link-local-one"),
        pytest.param(iflink(RTM_NEWLINK, IFF_UP), True, id="link-up-or-down"),
        pytest.param(iflink(RTM_NEWLINK, 0xFFFFFFFF), True, id="new-link"),
        pytest.param(iflink(RTM_NEWLINK, 0), False, id="mtu-or-statistics"),
        pytest.param(iflink(RTM_NEWLINK, IFF_RUNNING), False, id="carrier"),
        pytest.param(iflink(RTM_DELLINK, 0), True, id="link-removed"),
        pytest.param(told(RTM_NEWROUTE, b"\0" * 12), False, id="a-route"),
        pytest.param(b"\x01\x02", True, id="truncated-header"),
        pytest.param(told(RTM_NEWADDR, b"\0" * 4), True, id="truncated-ifaddrmsg"),
        pytest.param(told(RTM_NEWLINK, b"\0" * 8), True, id="truncated-ifinfomsg"),
    ],
)  # fmt: skip
def test_which_notifications_may_change_the_addresses(datagram: bytes, change: bool) -> None:
    assert netlink.notices_change(datagram) is change


# --- real kernel ---------------------------------------------------------------------

AGENT_DIR = Path(__file__).resolve().parents[2] / "agent"

CHILD = """
import dataclasses, json
from join_agent.host.netlink import interface_addresses
rows = []
for a in interface_addresses():
    row = dataclasses.asdict(a)
    row["address"] = str(a.address)
    rows.append(row)
print(json.dumps(rows))
"""


def _unavailable(reason: str) -> NoReturn:
    # CI runs as root on purpose; a skip there would hide a broken environment.
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def _check(*args: str) -> str:
    proc = _run(*args)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    if not hasattr(socket, "AF_NETLINK"):
        _unavailable("not Linux (no AF_NETLINK)")
    if os.geteuid() != 0:
        _unavailable("needs root to create a network namespace")
    if shutil.which("ip") is None:
        _unavailable("iproute2 'ip' not found")
    if not Path("/proc/sys/net/ipv6").is_dir():
        _unavailable("kernel without IPv6")
    name = f"ja-netlink-{os.getpid()}-{secrets.token_hex(4)}"
    _check("ip", "netns", "add", name)
    try:
        yield name
    finally:
        # Deleting the namespace also destroys every interface created inside it.
        _check("ip", "netns", "delete", name)


def _add_dummy(ns: str, dev: str, *opts: str) -> str:
    """Create a dummy link; fall back to ifb on kernels built without CONFIG_DUMMY."""
    for kind in ("dummy", "ifb"):
        proc = _run("ip", "-n", ns, "link", "add", dev, *opts, "type", kind)
        if proc.returncode == 0:
            return kind
        if "Unknown device type" not in proc.stderr:
            raise AssertionError(f"ip link add {dev} type {kind}: {proc.stderr}")
    _unavailable("kernel has neither dummy nor ifb links")


def _set_sysctl(ns: str, path: str, value: str) -> None:
    code = f"open({path!r}, 'w').write({value!r})"
    _check("ip", "netns", "exec", ns, sys.executable, "-c", code)


def _discover(ns: str) -> list[dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(AGENT_DIR)}
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, object]] = json.loads(proc.stdout)
    return rows


def _row(record: InterfaceAddress) -> dict[str, object]:
    row = dataclasses.asdict(record)
    row["address"] = str(record.address)
    return row


def _key(row: dict[str, object]) -> tuple[str, str]:
    return (str(row["interface"]), str(row["address"]))


@pytest.mark.root
def test_real_kernel_namespace(netns: str) -> None:
    ip = ("ip", "-n", netns)
    _check(*ip, "link", "set", "lo", "up")
    # A fixed MAC and EUI-64 generation make the link-local address predictable.
    _add_dummy(netns, "d0", "address", "02:00:00:00:77:05")
    _check(*ip, "link", "set", "d0", "addrgenmode", "eui64")
    _check(*ip, "link", "set", "d0", "up")
    _check(*ip, "addr", "add", "10.77.0.5/24", "dev", "d0")
    _check(*ip, "addr", "add", "10.77.0.6/24", "dev", "d0")  # IFA_F_SECONDARY (0x01)
    _check(*ip, "addr", "add", "fd00:77::5/64", "dev", "d0", "nodad")
    _check(*ip, "addr", "add", "fd00:77::6/64", "dev", "d0", "preferred_lft", "0", "nodad")
    _add_dummy(netns, "d1")
    _check(*ip, "addr", "add", "10.78.0.1/24", "dev", "d1")
    # Dummy links are IFF_NOARP, so the kernel never runs DAD on them (accept_dad -1)
    # and nothing there is ever tentative. A veth pair left down with DAD enabled
    # keeps its address tentative forever, and sends nothing.
    _check(*ip, "link", "add", "t0", "type", "veth", "peer", "name", "t1")
    _set_sysctl(netns, "/proc/sys/net/ipv6/conf/t0/accept_dad", "1")
    _check(*ip, "addr", "add", "fd00:79::1/64", "dev", "t0")

    index = {row["ifname"]: row["ifindex"] for row in json.loads(_check(*ip, "-j", "link"))}
    lo, d0, d1, t0 = index["lo"], index["d0"], index["d1"], index["t0"]
    expected = [
        rec("lo", lo, "127.0.0.1", 8, scope=254),
        rec("lo", lo, "::1", 128, scope=254),
        rec("d0", d0, "10.77.0.5", 24),
        rec("d0", d0, "10.77.0.6", 24),
        rec("d0", d0, "fd00:77::5", 64),
        rec("d0", d0, "fd00:77::6", 64, deprecated=True),
        rec("d0", d0, "fe80::ff:fe00:7705", 64, scope=253),
        rec("d1", d1, "10.78.0.1", 24, up=False),
        rec("t0", t0, "fd00:79::1", 64, up=False, tentative=True),
    ]
    want = sorted((_row(r) for r in expected), key=_key)

    # The link-local address and its DAD completion are added from a kernel work
    # queue after "link set up" returns, so allow a moment for them to settle.
    deadline = time.monotonic() + 5
    got = sorted(_discover(netns), key=_key)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.1)
        got = sorted(_discover(netns), key=_key)
    assert got == want


# Subscribes, then for each line on stdin (a number of seconds): waits that long, or until
# a change is told, and prints whether one was.
FEED = """
import json, select, sys, time
from join_agent.host import netlink
sock = netlink.subscribe()
print("ready", flush=True)
for line in sys.stdin:
    end, told = time.monotonic() + float(line), False
    while not told and time.monotonic() < end:
        if select.select([sock], [], [], max(0.0, end - time.monotonic()))[0]:
            told = netlink.changed(sock)
    print(json.dumps(told), flush=True)
"""


@pytest.mark.root
def test_the_kernel_tells_of_address_and_link_changes(netns: str) -> None:
    ip = ("ip", "-n", netns)
    _add_dummy(netns, "d0")
    _check(*ip, "link", "set", "d0", "addrgenmode", "none")  # no link-local of its own
    child = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", FEED],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(AGENT_DIR)},
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"

        def after(*change: str, wait: float = 1.0) -> bool:
            _check(*ip, *change)
            child.stdin.write(f"{wait}\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            told: bool = json.loads(child.stdout.readline())  # type: ignore[union-attr]
            return told

        assert not after("link", "set", "d0", "mtu", "1400")
        assert not after("addr", "add", "fe80::77/64", "dev", "d0")
        assert after("addr", "add", "10.77.0.5/24", "dev", "d0", wait=5)
        assert after("link", "set", "d0", "up", wait=5)
        assert after("addr", "add", "fd00:77::5/64", "dev", "d0", "nodad", wait=5)
        assert after("addr", "del", "10.77.0.5/24", "dev", "d0", wait=5)
        assert after("link", "set", "d0", "down", wait=5)
    finally:
        child.kill()
        child.wait()
