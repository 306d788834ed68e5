"""The node's addresses on illumos, as its own tool reports them: ``ipadm show-addr``.

illumos has no netlink; ``ipadm`` is its stable interface to address configuration
(ipadm(8), illumos-gate usr/src/man/man8/ipadm.8). We ask for the parsable form,
``ipadm show-addr -p -o addrobj,state,current,addr``: one line per address, the fields
separated by ``:``, and a ``:`` or ``\\`` inside a field escaped with ``\\`` (libofmt,
usr/src/lib/libofmt/common/ofmt.c, ``ofmt_print_field``). The fields
(usr/src/cmd/cmd-inet/usr.sbin/ipadm/ipadm.c, ``print_sa_cb``):

- ``addrobj``: ``<interface>/<name>``, or ``<interface>/?`` for an address that was not
  made with ipadm;
- ``state``: ``ok`` (up), ``tentative`` (duplicate address detection running),
  ``duplicate``, ``down``, ``disabled`` or ``inaccessible``;
- ``current``: flags, among them ``U`` up, ``t`` a temporary IPv6 address, ``d``
  deprecated;
- ``addr``: ``<address>/<prefixlen>``, ``<local>-><remote>`` on a point-to-point link, or
  ``?`` for a DHCP address not bound yet.

Parsing is pure (``parse``); running the tool is the edge (``interface_addresses``).
"""

from __future__ import annotations

import ipaddress

from join_agent.host.netlink import InterfaceAddress

FIELDS = "addrobj,state,current,addr"


def split_fields(line: str) -> list[str]:
    """One parsable line's fields, the escapes undone (pure)."""
    fields, current, escaped = [], [], False
    for c in line:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
    fields.append("".join(current))
    return fields


def parse(text: str) -> list[InterfaceAddress]:
    """Every address ``ipadm show-addr -p -o addrobj,state,current,addr`` listed that has
    an address of its own (pure). A line that is not four fields, or whose address does not
    parse, is skipped: it names nothing this node could put in a certificate."""
    out: list[InterfaceAddress] = []
    for line in text.splitlines():
        fields = split_fields(line)
        if len(fields) != 4:
            continue
        addrobj, state, flags, addr = fields
        local = addr.split("->", 1)[0].split("/", 1)[0].split("%", 1)[0]
        try:
            address = ipaddress.ip_address(local)
        except ValueError:
            continue  # "?": a DHCP address not bound yet
        prefix = addr.split("->", 1)[0].partition("/")[2]
        out.append(
            InterfaceAddress(
                interface=addrobj.split("/", 1)[0],
                index=0,
                up=state == "ok" and "U" in flags,
                address=address,
                prefixlen=int(prefix) if prefix.isdigit() else address.max_prefixlen,
                scope=0,  # the address itself says link-local: identity checks it
                temporary="t" in flags,
                deprecated="d" in flags,
                tentative=state == "tentative",
            )
        )
    return out


def interface_addresses(tool: str) -> list[InterfaceAddress]:
    """Run ``tool`` (ipadm, by its absolute path) and parse what it reports. OSError when it
    cannot run or fails, with its own message."""
    from join_agent.host import children

    done = children.run_tool([tool, "show-addr", "-p", "-o", FIELDS])
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise OSError(f"{tool} show-addr failed: {said[0][:200]}")
    return parse(done.stdout)
