"""illumos address discovery (host/ipadm.py): ``ipadm show-addr -p -o
addrobj,state,current,addr`` parsed, and the addresses a certificate gets from it.

No illumos machine runs here, so the input is written to the format illumos' own sources
define (see host/ipadm.py): libofmt separates fields with ":" and escapes ":" and "\\"
inside one; ipadm prints ADDR as addr/prefixlen, local->remote or "?". The escaping is
the form SmartOS prints for the loopback's IPv6 address, ``lo0/v6:\\:\\:1/128``.
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest

from join_agent.config.model import DEFAULT_EXCLUDE_INTERFACES
from join_agent.host import identity, ipadm

# An OmniOS node (tests/data/ipadm-show-addr.txt): static and DHCP IPv4, addrconf IPv6
# (link-local, a stable and a temporary address), a tunnel, an address that is down, one
# still in duplicate address detection, and a DHCP address not bound yet.
SHOW_ADDR = (Path(__file__).parents[1] / "data" / "ipadm-show-addr.txt").read_text()


def test_fields_are_split_with_their_escapes_undone() -> None:
    assert ipadm.split_fields(r"lo0/v6:ok:U:\:\:1/128") == ["lo0/v6", "ok", "U", "::1/128"]
    assert ipadm.split_fields(r"a/b:ok::back\\slash") == ["a/b", "ok", "", "back\\slash"]


def test_every_address_is_read_with_its_state() -> None:
    found = {str(a.address): a for a in ipadm.parse(SHOW_ADDR)}
    assert len(found) == 11  # all but the unbound DHCP address ("?")
    assert found["192.168.1.20"].interface == "vioif0" and found["192.168.1.20"].prefixlen == 24
    assert found["2001:db8:1:2::20"].up and not found["2001:db8:1:2::20"].temporary
    assert found["2001:db8:1:2:a1b2:c3d4:e5f6:789"].temporary
    assert found["2001:db8:1:2:8:20ff:fe3a:1b2c"].deprecated
    assert not found["198.51.100.7"].up
    assert found["192.168.1.21"].tentative and not found["192.168.1.21"].up
    assert found["172.16.111.5"].interface == "iptun0"  # the local end of the tunnel


def test_the_certificate_gets_what_other_hosts_reach() -> None:
    chosen = identity.select_addresses(ipadm.parse(SHOW_ADDR), DEFAULT_EXCLUDE_INTERFACES)
    assert chosen == tuple(
        ipaddress.ip_address(a)
        for a in ("10.0.2.15", "172.16.111.5", "192.168.1.20", "2001:db8:1:2::20")
    )


def test_a_line_that_is_not_an_address_is_skipped() -> None:
    assert ipadm.parse("garbage\nnet0/v4:ok:U:not-an-address/24\n\n") == []


def stand_in(tmp_path: Path, body: str) -> str:
    """A stand-in ipadm: a script that answers as the real one would, or fails."""
    tool = tmp_path / "ipadm"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(stat.S_IRWXU)
    return str(tool)


def test_the_tool_runs_with_the_parsable_fields(tmp_path: Path) -> None:
    tool = stand_in(
        tmp_path,
        '[ "$*" = "show-addr -p -o addrobj,state,current,addr" ] || exit 9\n'
        "echo 'vioif0/v4:ok:U:192.168.1.20/24'\n",
    )
    (only,) = ipadm.interface_addresses(tool)
    assert str(only.address) == "192.168.1.20" and only.up


def test_a_failing_tool_is_one_sentence(tmp_path: Path) -> None:
    tool = stand_in(tmp_path, "echo 'ipadm: cannot get address information' >&2\nexit 1\n")
    with pytest.raises(OSError, match="show-addr failed: ipadm: cannot get address information"):
        ipadm.interface_addresses(tool)


def test_check_says_what_an_enrollment_would_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`join-agent check` resolves the node's identity as the worker does: an illumos host
    without ipadm (or without [node] addresses) hears it before an enrollment fails."""
    from join_agent.config import loading
    from join_agent.host import platform
    from join_agent.verbs import check_node

    cfssl = {"urls": ["http://10.0.0.2:8888"], "ca_pins": ["sha256:" + "ab" * 32]}
    doc = {"cluster": {"server": "https://10.0.0.1:6443"}, "signer": {"cfssl": cfssl}}
    cfg = loading.parse({**doc, "node": {"name": "cp-1"}})
    monkeypatch.setattr(platform, "current", lambda: platform.ILLUMOS)
    monkeypatch.setattr(platform, "tool", lambda name: None)
    (line,) = check_node.identity(cfg)
    assert (line.level, line.name) == ("FAIL", "identity")
    assert "neither netlink nor /usr/sbin/ipadm" in line.message
    assert "set [node] addresses" in line.message
    recorded = Path(__file__).parents[1] / "data" / "ipadm-show-addr.txt"
    ipadm_stand_in = tmp_path / "ipadm"
    ipadm_stand_in.write_text(f"#!/bin/sh\ncat {recorded}\n")
    ipadm_stand_in.chmod(0o755)
    monkeypatch.setattr(platform, "tool", lambda name: str(ipadm_stand_in))
    (line,) = check_node.identity(cfg)
    assert line.level == "PASS"
    want = "enrolls as cp-1 (10.0.2.15, 172.16.111.5, 192.168.1.20, 2001:db8:1:2::20)"
    assert line.message == want
