"""Who the node is: its name and the addresses that go into its certificate.

The choice of addresses is pure (``select_addresses``); reading the OS is a thin edge.
"""

from __future__ import annotations

import fnmatch
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from join_agent.config.model import IPAddress, NodeConfig, node_name_problem
from join_agent.errors import IdentityError

if TYPE_CHECKING:  # netlink is imported only when addresses are discovered
    from join_agent.host.netlink import InterfaceAddress


@dataclass(frozen=True)
class Identity:
    """The node's name and the SANs its certificate must carry, exactly."""

    name: str
    dns_names: tuple[str, ...]
    addresses: tuple[IPAddress, ...]

    @property
    def common_name(self) -> str:
        return f"system:node:{self.name}"


def validate_node_name(name: str, origin: str) -> str:
    """Return ``name`` if it can be a node's name (``config.node_name_problem``)."""
    if not name:
        raise IdentityError(f"the node name from {origin} is empty: set [node] name")
    problem = node_name_problem(name)
    if problem is not None:
        raise IdentityError(
            f"node name {name!r} from {origin} cannot be used: {problem}; set [node] name"
        )
    return name


def select_addresses(
    records: Iterable[InterfaceAddress], exclude_interfaces: Iterable[str]
) -> tuple[IPAddress, ...]:
    """The addresses a node is reached at, in a stable order (IPv4 first, then IPv6).

    Private ranges and ULAs stay in (homelabs live there), so this is not ``is_global``.
    Temporary (privacy) and deprecated IPv6 addresses change by themselves: keeping them
    out keeps the certificate's SANs stable.
    """
    patterns = tuple(exclude_interfaces)
    chosen: set[IPAddress] = set()
    for r in records:
        a = r.address
        if not r.up or r.temporary or r.deprecated:
            continue
        if a.is_loopback or a.is_link_local or a.is_multicast or a.is_unspecified:
            continue
        if r.scope >= 253:  # link or host scope: not reachable from other hosts
            continue
        if any(fnmatch.fnmatchcase(r.interface, p) for p in patterns):
            continue
        chosen.add(a)
    return tuple(sorted(chosen, key=lambda a: (a.version, int(a))))


def name_of(node: NodeConfig, hostname: Callable[[], str] = socket.gethostname) -> str:
    """The node's name: ``[node] name``, else the hostname, lowercased; checked."""
    if node.name:
        return validate_node_name(node.name, "[node] name")
    return validate_node_name(hostname().strip().lower(), "the hostname")


def _discovery() -> Callable[[], list[InterfaceAddress]]:
    """How this system lists its addresses (platform.py): netlink on Linux, ipadm on
    illumos."""
    from join_agent.host import platform

    if platform.current().addresses_from == "netlink":
        from join_agent.host.netlink import interface_addresses

        return interface_addresses
    tool = platform.tool("ipadm")
    if tool is None:
        raise IdentityError(
            "this system has neither netlink nor /usr/sbin/ipadm, so join-agent cannot list "
            "its addresses: set [node] addresses"
        )
    from join_agent.host import ipadm

    return lambda: ipadm.interface_addresses(tool)


def resolve(
    node: NodeConfig,
    hostname: Callable[[], str] = socket.gethostname,
    discover: Callable[[], list[InterfaceAddress]] | None = None,
) -> Identity:
    """The node's identity from config, falling back to the OS for what config leaves open."""
    name = name_of(node, hostname)
    if node.addresses:
        addresses = node.addresses
    else:
        if discover is None:
            discover = _discovery()
        try:
            records = discover()
        except OSError as e:
            raise IdentityError(
                f"cannot list the node's addresses ({e.strerror or e}): set [node] addresses"
            ) from None
        addresses = select_addresses(records, node.exclude_interfaces)
    if not addresses:
        raise IdentityError(
            "found no usable address on any up interface (loopback, link-local and "
            "excluded interfaces do not count): set [node] addresses or check "
            "[node] exclude_interfaces"
        )
    return Identity(name=name, dns_names=(name,), addresses=tuple(addresses))
