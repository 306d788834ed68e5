"""Interface addresses over rtnetlink (Linux only, stdlib only): a dump of them, and the
kernel's notifications of their changes.

The socket I/O (``interface_addresses``, ``subscribe``, ``changed``) is kept apart from
the parsing (``_collect_dump``, ``_parse_links``, ``_parse_addresses``,
``notices_change``), which works on plain bytes so it can be tested with hand-built
messages.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["InterfaceAddress", "changed", "interface_addresses", "notices_change", "subscribe"]

# Netlink is host byte order, hence "=" (native order, standard sizes, no padding).
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLMSGERR = struct.Struct("=i")  # errno (negative) followed by the offending request
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")

_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_RTM_NEWLINK = 16
_RTM_DELLINK = 17
_RTM_GETLINK = 18
_RTM_NEWADDR = 20
_RTM_DELADDR = 21
_RTM_GETADDR = 22

# Multicast groups (bit masks for the bind address): links, and IPv4/IPv6 addresses.
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV6_IFADDR = 0x100
# Scopes at or above this are link-local or host addresses, never the node's.
_RT_SCOPE_LINK = 253

_NLM_F_REQUEST = 0x01
_NLM_F_MULTI = 0x02
_NLM_F_DUMP_INTR = 0x10
_NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH

# Attribute types carry NLA_F_NESTED / NLA_F_NET_BYTEORDER in the top bits.
_NLA_TYPE_MASK = 0x3FFF

_IFLA_IFNAME = 3
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFA_FLAGS = 8

_IFF_UP = 0x1

# 0x01 is IFA_F_TEMPORARY for IPv6 but IFA_F_SECONDARY for IPv4.
_IFA_F_TEMPORARY = 0x01
_IFA_F_DEPRECATED = 0x20
_IFA_F_TENTATIVE = 0x40

_RECV_BUFSIZE = 64 * 1024
_SOCKET_TIMEOUT = 5.0
# A dump that races with address/link changes is flagged NLM_F_DUMP_INTR; retry a few
# times, then accept the last (possibly slightly stale) view rather than fail discovery.
_DUMP_ATTEMPTS = 3
# Notifications read in one go at most: a flood (thousands of pods' veths) is read on the
# next wake-up rather than keep the loop from everything else.
_DRAIN_MAX = 256

_ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}


@dataclass(frozen=True)
class InterfaceAddress:
    """One address assigned to a network interface."""

    interface: str
    index: int
    up: bool
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    prefixlen: int
    scope: int
    temporary: bool
    deprecated: bool
    tentative: bool


@dataclass(frozen=True)
class _Message:
    type: int
    flags: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class _Link:
    index: int
    name: str
    up: bool


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _split_messages(data: bytes) -> Iterator[_Message]:
    """Split one received datagram into netlink messages."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < _NLMSGHDR.size:
            raise ValueError(
                f"truncated netlink header at offset {offset}: "
                f"{len(data) - offset} bytes left, need {_NLMSGHDR.size}"
            )
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        # A length below the header size would never advance the offset.
        if length < _NLMSGHDR.size or length > len(data) - offset:
            raise ValueError(
                f"bad netlink message length {length} at offset {offset} "
                f"({len(data) - offset} bytes left)"
            )
        yield _Message(mtype, flags, seq, data[offset + _NLMSGHDR.size : offset + length])
        offset += _align4(length)


def _parse_attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """Parse route attributes starting at ``offset``; first occurrence of a type wins."""
    attrs: dict[int, bytes] = {}
    while offset < len(data):
        if len(data) - offset < _RTATTR.size:
            raise ValueError(f"truncated route attribute header at offset {offset}")
        length, atype = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or length > len(data) - offset:
            raise ValueError(f"bad route attribute length {length} at offset {offset}")
        attrs.setdefault(atype & _NLA_TYPE_MASK, data[offset + _RTATTR.size : offset + length])
        offset += _align4(length)
    return attrs


def _collect_dump(datagrams: Iterable[bytes], seq: int) -> tuple[list[_Message], bool]:
    """Gather the messages of one dump reply up to NLMSG_DONE.

    Returns the data messages and whether the kernel flagged the dump as interrupted.
    Raises OSError for NLMSG_ERROR and ValueError for malformed input.
    """
    messages: list[_Message] = []
    interrupted = False
    for datagram in datagrams:
        for msg in _split_messages(datagram):
            if msg.seq != seq:
                continue  # stale reply to an earlier request on this socket
            interrupted = interrupted or bool(msg.flags & _NLM_F_DUMP_INTR)
            if msg.type == _NLMSG_DONE:
                return messages, interrupted
            if msg.type == _NLMSG_ERROR:
                if len(msg.payload) < _NLMSGERR.size:
                    raise ValueError("truncated NLMSG_ERROR message")
                (error,) = _NLMSGERR.unpack_from(msg.payload)
                if error == 0:
                    continue  # an ACK, not an error
                raise OSError(-error, f"netlink dump failed: {_errno_name(-error)}")
            messages.append(msg)
            if not msg.flags & _NLM_F_MULTI:
                return messages, interrupted  # a single-part reply needs no NLMSG_DONE
    raise ValueError("netlink dump ended without NLMSG_DONE")


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _parse_links(messages: Iterable[_Message]) -> dict[int, _Link]:
    links: dict[int, _Link] = {}
    for msg in messages:
        if msg.type != _RTM_NEWLINK:
            continue
        if len(msg.payload) < _IFINFOMSG.size:
            raise ValueError("truncated ifinfomsg")
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(msg.payload)
        attrs = _parse_attrs(msg.payload, _IFINFOMSG.size)
        raw_name = attrs.get(_IFLA_IFNAME)
        if raw_name is None:
            raise ValueError(f"link {index} has no IFLA_IFNAME")
        # Interface names are bytes to the kernel; keep odd ones round-trippable.
        name = raw_name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        links[index] = _Link(index, name, bool(flags & _IFF_UP))
    return links


def _parse_addresses(
    messages: Iterable[_Message], links: dict[int, _Link]
) -> list[InterfaceAddress]:
    result: list[InterfaceAddress] = []
    for msg in messages:
        if msg.type != _RTM_NEWADDR:
            continue
        if len(msg.payload) < _IFADDRMSG.size:
            raise ValueError("truncated ifaddrmsg")
        family, prefixlen, flags8, scope, index = _IFADDRMSG.unpack_from(msg.payload)
        addr_len = _ADDR_LEN.get(family)
        if addr_len is None:
            continue  # e.g. AF_MCTP addresses also come back from an AF_UNSPEC dump
        attrs = _parse_attrs(msg.payload, _IFADDRMSG.size)
        # On point-to-point IPv4 links IFA_ADDRESS is the peer and IFA_LOCAL our own;
        # elsewhere only IFA_ADDRESS may be present (always so for IPv6).
        raw = attrs.get(_IFA_LOCAL, attrs.get(_IFA_ADDRESS))
        if raw is None:
            raise ValueError(f"address message for ifindex {index} has no address")
        if len(raw) != addr_len:
            raise ValueError(f"address of length {len(raw)} for family {family}")
        flags = flags8
        raw_flags = attrs.get(_IFA_FLAGS)
        if raw_flags is not None:
            # ifa_flags is only 8 bits; IFA_FLAGS carries the full set.
            if len(raw_flags) < _U32.size:
                raise ValueError("truncated IFA_FLAGS attribute")
            (flags,) = _U32.unpack_from(raw_flags)
        link = links.get(index)
        if link is None:
            continue  # link appeared after the link dump; the next discovery will see it
        address: ipaddress.IPv4Address | ipaddress.IPv6Address
        if family == socket.AF_INET:
            address = ipaddress.IPv4Address(raw)
        else:
            address = ipaddress.IPv6Address(raw)
        result.append(
            InterfaceAddress(
                interface=link.name,
                index=index,
                up=link.up,
                address=address,
                prefixlen=prefixlen,
                scope=scope,
                temporary=family == socket.AF_INET6 and bool(flags & _IFA_F_TEMPORARY),
                deprecated=bool(flags & _IFA_F_DEPRECATED),
                tentative=bool(flags & _IFA_F_TENTATIVE),
            )
        )
    return result


def _dump_request(mtype: int, seq: int, body: bytes) -> bytes:
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
    return header + body


def _receive(sock: socket.socket) -> Iterator[bytes]:
    while True:
        data, _ancdata, msg_flags, _addr = sock.recvmsg(_RECV_BUFSIZE)
        if msg_flags & socket.MSG_TRUNC:
            # Kernel dump datagrams are capped well below the buffer; a truncated one
            # would otherwise be parsed as a corrupt message.
            raise OSError(errno.EMSGSIZE, "netlink datagram larger than receive buffer")
        if not data:
            raise OSError(errno.ECONNRESET, "netlink socket returned no data")
        yield data


def _dump(sock: socket.socket, seq: int, mtype: int, body: bytes) -> tuple[list[_Message], bool]:
    sock.sendall(_dump_request(mtype, seq, body))
    return _collect_dump(_receive(sock), seq)


def interface_addresses() -> list[InterfaceAddress]:
    """Return every IPv4/IPv6 address of the current network namespace, in kernel order."""
    seqs = itertools.count(1)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(_SOCKET_TIMEOUT)
        sock.bind((0, 0))
        link_body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        addr_body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        result: list[InterfaceAddress] = []
        for _attempt in range(_DUMP_ATTEMPTS):
            link_msgs, link_intr = _dump(sock, next(seqs), _RTM_GETLINK, link_body)
            addr_msgs, addr_intr = _dump(sock, next(seqs), _RTM_GETADDR, addr_body)
            result = _parse_addresses(addr_msgs, _parse_links(link_msgs))
            if not (link_intr or addr_intr):
                break
        return result


def notices_change(datagram: bytes) -> bool:
    """Whether a notification datagram may change the node's addresses (pure): an address
    that is not link-local or the host's added, changed or removed, a link gone, or one
    gone up or down. A datagram that cannot be read may have said so: it counts."""
    try:
        return any(_may_change(msg) for msg in list(_split_messages(datagram)))
    except ValueError:
        return True


def _may_change(msg: _Message) -> bool:
    if msg.type in (_RTM_NEWADDR, _RTM_DELADDR):
        if len(msg.payload) < _IFADDRMSG.size:
            raise ValueError("truncated ifaddrmsg")
        return bool(_IFADDRMSG.unpack_from(msg.payload)[3] < _RT_SCOPE_LINK)
    if msg.type == _RTM_NEWLINK:
        # ifi_change holds the flags that changed (all ones for a new link); a link's
        # other news (its MTU, its carrier, its statistics) leaves the addresses alone.
        if len(msg.payload) < _IFINFOMSG.size:
            raise ValueError("truncated ifinfomsg")
        return bool(_IFINFOMSG.unpack_from(msg.payload)[4] & _IFF_UP)
    return msg.type == _RTM_DELLINK


def subscribe() -> socket.socket:
    """A non-blocking socket on which the kernel tells of every address and link change in
    this network namespace (OSError where it cannot be had)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setblocking(False)
        sock.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV6_IFADDR))
    except OSError:
        sock.close()
        raise
    return sock


def changed(sock: socket.socket) -> bool:
    """Read what the kernel has sent on ``sock`` (``subscribe``): whether any of it may
    change the node's addresses. ENOBUFS says notifications were lost: they may have."""
    seen = False
    for _ in range(_DRAIN_MAX):
        try:
            data = sock.recv(_RECV_BUFSIZE)
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            seen = True
            continue
        seen = seen or notices_change(data)
    return seen
