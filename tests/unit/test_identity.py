"""identity: which addresses go into the CSR (pure), node names, and resolve()."""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from join_agent.config.model import DEFAULT_EXCLUDE_INTERFACES, NodeConfig
from join_agent.errors import IdentityError
from join_agent.host.identity import Identity, resolve, select_addresses, validate_node_name
from join_agent.host.netlink import InterfaceAddress

RT_SCOPE_UNIVERSE, RT_SCOPE_SITE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 200, 253, 254


def rec(
    address: str,
    interface: str = "eth0",
    *,
    up: bool = True,
    scope: int = RT_SCOPE_UNIVERSE,
    temporary: bool = False,
    deprecated: bool = False,
    tentative: bool = False,
) -> InterfaceAddress:
    a = ipaddress.ip_address(address)
    return InterfaceAddress(
        interface=interface,
        index=2,
        up=up,
        address=a,
        prefixlen=24 if a.version == 4 else 64,
        scope=scope,
        temporary=temporary,
        deprecated=deprecated,
        tentative=tentative,
    )


def ips(*texts: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    return tuple(ipaddress.ip_address(t) for t in texts)


def select(*records: InterfaceAddress) -> tuple[str, ...]:
    return tuple(str(a) for a in select_addresses(records, DEFAULT_EXCLUDE_INTERFACES))


KEEP = rec("192.0.2.10")  # one ordinary address, so "nothing selected" cannot pass by accident


@pytest.mark.parametrize(
    "record",
    [
        rec("127.0.0.1", "lo"),
        rec("127.0.0.1", "eth0"),
        rec("127.1.2.3", "eth0"),
        rec("::1", "eth0"),
        rec("169.254.10.20"),
        rec("169.254.0.1", scope=RT_SCOPE_LINK),
        rec("fe80::1"),
        rec("fe80::abcd:1234", scope=RT_SCOPE_LINK),
        rec("febf::1"),
        rec("10.0.0.7", up=False),
        rec("2001:db8::99", temporary=True),
        rec("2001:db8::98", deprecated=True),
        rec("10.0.0.8", scope=RT_SCOPE_LINK),
        rec("10.0.0.9", scope=RT_SCOPE_HOST),
        rec("2001:db8::97", scope=RT_SCOPE_HOST),
        rec("0.0.0.0"),  # noqa: S104 - an address to filter out, not a bind
        rec("::"),
        rec("224.0.0.1"),
        rec("ff02::1"),
    ],
    ids=lambda r: f"{r.interface}-{r.address}",
)
def test_unreachable_or_unstable_addresses_are_left_out(record: InterfaceAddress) -> None:
    assert select(KEEP, record) == ("192.0.2.10",)


@pytest.mark.parametrize(
    "interface",
    [
        "lo",
        "docker0",
        "cni0",
        "cilium_host",
        "flannel.1",
        "veth123",
        "vethab12cd",
        "lxc8f2e",
        "kube-ipvs0",
        "cali1234abcd",
        "tunl0",
        "vxlan.calico",
        "br-0123456789ab",
        "virbr0",
        "weave",
    ],
)
def test_default_excluded_interfaces(interface: str) -> None:
    assert select(KEEP, rec("10.99.0.1", interface)) == ("192.0.2.10",)


@pytest.mark.parametrize("interface", ["eth0", "ens3", "enp0s31f6", "bond0", "wlan0", "br0"])
def test_ordinary_interfaces_are_kept(interface: str) -> None:
    assert select(rec("10.99.0.1", interface)) == ("10.99.0.1",)


def test_exclusion_uses_the_given_patterns_only() -> None:
    records = [rec("10.0.0.1", "docker0"), rec("10.0.0.2", "eth0")]
    assert select_addresses(records, []) == ips("10.0.0.1", "10.0.0.2")
    assert select_addresses(records, ["eth*"]) == ips("10.0.0.1")


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "100.64.0.1",
        "fd00::1",
        "fd12:3456:789a::1",
        "203.0.113.5",
        "2001:db8::1",
    ],
)
def test_private_ranges_and_ula_are_included(address: str) -> None:
    assert select(rec(address, "eth1")) == (address,)


def test_site_scope_is_kept() -> None:
    assert select(rec("fec0::1", scope=RT_SCOPE_SITE)) == ("fec0::1",)


def test_duplicates_are_removed() -> None:
    records = [rec("10.0.0.7", "eth0"), rec("10.0.0.7", "eth1"), rec("fd00::7"), rec("fd00::7")]
    assert select(*records) == ("10.0.0.7", "fd00::7")


def test_order_is_ipv4_first_then_numeric_and_independent_of_input() -> None:
    texts = ["fd00::10", "10.0.0.10", "2001:db8::1", "10.0.0.9", "192.168.0.1", "fd00::9"]
    expected = ("10.0.0.9", "10.0.0.10", "192.168.0.1", "2001:db8::1", "fd00::9", "fd00::10")
    rng = random.Random(1)
    orders = [texts, texts[::-1]] + [rng.sample(texts, len(texts)) for _ in range(20)]
    for order in orders:
        assert select(*(rec(t) for t in order)) == expected


def test_every_permutation_of_a_small_set_gives_the_same_answer() -> None:
    records = [rec("fd00::1"), rec("10.0.0.2"), rec("10.0.0.1", "eth1"), rec("fe80::1")]
    answers = {select(*p) for p in itertools.permutations(records)}
    assert answers == {("10.0.0.1", "10.0.0.2", "fd00::1")}


# -- node names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "node-1",
        "n",
        "node-1.example.com",
        "Worker-01.Example.COM".lower(),
        "1node",
        "a" * 52,  # CN=system:node:<name> at X.509's 64 characters exactly
        ".".join(["a" * 25, "b" * 26]),
    ],
)
def test_valid_node_names(name: str) -> None:
    assert validate_node_name(name, "[node] name") == name


@pytest.mark.parametrize(
    "name",
    [
        "Node-1",
        "node_1",
        "a" * 254,
        "-node",
        "node-",
        "node..example",
        ".node",
        "node.",
        "node 1",
        "nöde",
    ],
)
def test_invalid_node_names(name: str) -> None:
    with pytest.raises(IdentityError) as info:
        validate_node_name(name, "the hostname")
    message = str(info.value)
    assert repr(name) in message
    assert "the hostname" in message
    assert "set [node] name" in message


def test_empty_node_name() -> None:
    with pytest.raises(IdentityError, match=r"from the hostname is empty: set \[node\] name"):
        validate_node_name("", "the hostname")


# -- resolve ---------------------------------------------------------------------------


def node_config(name: str = "", addresses: tuple[str, ...] = ()) -> NodeConfig:
    return NodeConfig(
        name=name,
        addresses=ips(*addresses),
        exclude_interfaces=DEFAULT_EXCLUDE_INTERFACES,
        key="ecdsa-p256",
        fingerprint_files=(),
    )


def discovered() -> list[InterfaceAddress]:
    return [
        rec("127.0.0.1", "lo"),
        rec("fd00::7", "eth0"),
        rec("10.0.0.7", "eth0"),
        rec("172.17.0.1", "docker0"),
        rec("fe80::1", "eth0", scope=RT_SCOPE_LINK),
    ]


def test_resolve_from_hostname_and_interfaces() -> None:
    got = resolve(node_config(), hostname=lambda: " Worker-1.Example\n", discover=discovered)
    assert got == Identity(
        name="worker-1.example",
        dns_names=("worker-1.example",),
        addresses=ips("10.0.0.7", "fd00::7"),
    )
    assert got.common_name == "system:node:worker-1.example"


def test_resolve_prefers_configured_name_and_addresses() -> None:
    def no_discovery() -> list[InterfaceAddress]:
        raise AssertionError("configured addresses must not trigger discovery")

    got = resolve(
        node_config("node-9", ("192.0.2.9",)),
        hostname=lambda: "ignored_because_configured",
        discover=no_discovery,
    )
    assert got == Identity(name="node-9", dns_names=("node-9",), addresses=ips("192.0.2.9"))


def test_resolve_refuses_a_bad_hostname() -> None:
    with pytest.raises(IdentityError, match=r"'bad_host' from the hostname"):
        resolve(node_config(), hostname=lambda: "bad_host", discover=discovered)


def test_resolve_without_any_usable_address() -> None:
    def only_local() -> list[InterfaceAddress]:
        return [rec("127.0.0.1", "lo"), rec("fe80::1", "eth0"), rec("172.17.0.1", "docker0")]

    with pytest.raises(IdentityError, match=r"found no usable address.*set \[node\] addresses"):
        resolve(node_config(), hostname=lambda: "node-1", discover=only_local)


def test_resolve_reports_a_failed_discovery() -> None:
    def broken() -> list[InterfaceAddress]:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(IdentityError, match=r"cannot list the node's addresses \(Permission"):
        resolve(node_config(), hostname=lambda: "node-1", discover=broken)
