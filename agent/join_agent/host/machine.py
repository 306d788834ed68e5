"""Which machine made the node's credentials (docs/install.md, "Building a node image").

An image baked after a join, or a joined VM cloned, carries one private key to every
copy. So every enrollment records, beside the credentials, a fingerprint of the machine
that made them (``[node] fingerprint_files``: /etc/machine-id and the DMI product UUID on
Linux, /etc/hostid on illumos) and the serial of the certificate it made. Credentials
whose record names another machine are not this node's: they are never presented, and
the node enrolls afresh with a new key.

Only keyed hashes of the ids are kept: machine-id(5) asks that the id itself not leave
the machine. A source that is missing or empty (an image whose machine-id was emptied)
counts for neither side; credentials without a record (made before records were kept, or
by hand) are taken as this machine's, and the next enrollment records them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

from join_agent.core.wire import iso
from join_agent.errors import StoreError
from join_agent.storage import guard, names

# The ids are hashed with this key, so the record cannot be matched with the same id hashed
# elsewhere (systemd's app-specific ids follow the same idea).
_KEY = b"join-agent: the machine that made these credentials"
_UNSET = ("", "uninitialized")  # machine-id(5): the first-boot placeholder


class Record(TypedDict):
    schema: int
    serial: str  # the certificate made on that machine (pki/facts.py's form)
    fingerprint: dict[str, str]  # source path -> keyed hash of its content
    written_at: str


def ids(sources: Sequence[Path]) -> dict[str, str]:
    """Each source that holds an id, by path: its id, lowercased. A source that someone
    other than root could have written is refused (UnsafePath), like every file that
    decides."""
    out: dict[str, str] = {}
    for path in sources:
        try:
            text = guard.read_text(path, "the machine id", cap=guard.SMALL_CAP)
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            continue
        except OSError as e:
            raise StoreError(f"cannot read the machine id {path}: {e.strerror or e}") from None
        value = text.strip().lower()
        if value not in _UNSET:
            out[str(path)] = value
    return out


def fingerprint(sources: Sequence[Path]) -> dict[str, str]:
    """A keyed hash of each id, by path: what the record keeps."""
    return {
        path: hmac.new(_KEY, value.encode(), hashlib.sha256).hexdigest()
        for path, value in ids(sources).items()
    }


def same_machine(node_info: tuple[str, str], mine: dict[str, str]) -> str | None:
    """Where a Node's ``nodeInfo`` (machineID, systemUUID, as its kubelet read them from
    /etc/machine-id and the DMI product_uuid) names another machine than ``ids`` found
    here; None when nothing on both sides differs (pure)."""
    theirs = {"machine-id": node_info[0].lower(), "product_uuid": node_info[1].lower()}
    differ = [  # theirs only: the cluster shows it anyway; ours stays on the node
        f"its {kind} is {theirs[kind]}"
        for path, value in sorted(mine.items())
        for kind in theirs
        if path.endswith(kind) and theirs[kind] and theirs[kind] != value
    ]
    return "; ".join(differ) or None


def foreign(record: Record | None, serial: str, current: Mapping[str, str]) -> str | None:
    """Why the certificate ``serial`` was made on another machine, or None when it was made
    here or nothing says otherwise (pure)."""
    if record is None or record["serial"] != serial:
        return None  # no record of these credentials: see the module's docstring
    differ = sorted(p for p, h in record["fingerprint"].items() if p in current and current[p] != h)
    if not differ:
        return None
    return (
        f"the credentials were made on another machine ({', '.join(differ)} "
        f"{'differs' if len(differ) == 1 else 'differ'}: a clone, or an image built after a "
        "join), so they are not presented; the node enrolls afresh with a new key"
    )


def read_record(state_dir: Path) -> Record | None:
    """The recorded machine, or None when there is none or it cannot be read as one (a
    damaged record is no evidence: the next enrollment rewrites it)."""
    path = state_dir / names.MACHINE_RECORD
    try:
        doc = json.loads(guard.read(path, "the machine record", cap=guard.SMALL_CAP))
    except (OSError, ValueError):  # UnsafePath is neither: someone else's file is refused
        return None
    ok = (
        isinstance(doc, dict)
        and isinstance(doc.get("serial"), str)
        and isinstance(doc.get("fingerprint"), dict)
        and all(isinstance(v, str) for v in doc["fingerprint"].values())
    )
    if not ok:
        return None
    return Record(
        schema=1, serial=doc["serial"], fingerprint=doc["fingerprint"],
        written_at=str(doc.get("written_at", "")),
    )  # fmt: skip


def judge(state_dir: Path, sources: Sequence[Path], serial: str) -> str | None:
    """``foreign`` for the credentials on disk (the edge: reads the record and the ids)."""
    record = read_record(state_dir)
    if record is None or record["serial"] != serial:
        return None
    return foreign(record, serial, fingerprint(sources))


def write_record(state_dir: Path, sources: Sequence[Path], serial: str, now: dt.datetime) -> None:
    """Record that the certificate ``serial`` was made on this machine."""
    from join_agent.storage import files

    doc = Record(schema=1, serial=serial, fingerprint=fingerprint(sources), written_at=iso(now))
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    files.atomic_write(state_dir / names.MACHINE_RECORD, data, 0o644)
