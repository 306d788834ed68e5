"""Which machine made the credentials (host/machine.py): the fingerprint from real files,
the record beside the credentials, and the verdict a clone gets."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
from pathlib import Path

import pytest

from join_agent.core import judging, schedule
from join_agent.core.protocol import CredentialFacts
from join_agent.host import machine
from join_agent.storage import guard, names

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)
NOBODY = pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def ids(root: Path, machine_id: str, uuid: str = "") -> tuple[Path, Path]:
    """A machine-id and a product_uuid stand-in, as root writes them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "machine-id").write_text(machine_id + "\n")
    (root / "product_uuid").write_text(uuid + "\n" if uuid else "")
    return root / "machine-id", root / "product_uuid"


def test_the_fingerprint_keeps_no_id_and_skips_what_holds_none(tmp_path: Path) -> None:
    sources = ids(tmp_path, "0123456789abcdef0123456789abcdef")  # product_uuid empty
    found = machine.fingerprint([*sources, tmp_path / "missing"])
    assert list(found) == [str(sources[0])]
    assert "0123456789abcdef" not in json.dumps(found)  # machine-id(5): keep it private
    # Case and the newline do not count; "uninitialized" (first boot) is no id.
    sources[0].write_text("0123456789ABCDEF0123456789ABCDEF")
    assert machine.fingerprint(sources) == found
    sources[0].write_text("uninitialized\n")
    assert machine.fingerprint(sources) == {}


@pytest.mark.skipif(NOBODY is None, reason="chown to another user needs root")
def test_a_machine_id_someone_else_could_write_is_refused(tmp_path: Path) -> None:
    assert NOBODY is not None
    source, _ = ids(tmp_path / "etc", "abc")
    os.chown(source, NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(guard.UnsafePath, match=r"the machine id .* is owned by uid"):
        machine.fingerprint([source])


def test_a_clone_is_told_apart_and_a_copy_without_a_record_is_not(tmp_path: Path) -> None:
    sources = ids(tmp_path / "etc", "aaaa", "uuid-a")
    state = tmp_path / "state"
    state.mkdir()
    machine.write_record(state, sources, "1f", NOW)
    assert machine.judge(state, sources, "1f") is None  # made here
    clone = ids(tmp_path / "etc", "aaaa", "uuid-b")  # a VM clone: machine-id kept, UUID not
    why = machine.judge(state, clone, "1f")
    assert why is not None and "another machine" in why
    assert f"({clone[1]} differs: a clone" in why
    assert machine.judge(state, clone, "2e") is None  # a record of other credentials
    assert machine.judge(state, [tmp_path / "gone"], "1f") is None  # nothing to compare
    (state / names.MACHINE_RECORD).write_text("{not json")
    assert machine.judge(state, clone, "1f") is None  # damaged: no evidence
    (state / names.MACHINE_RECORD).unlink()
    assert machine.judge(state, clone, "1f") is None  # made before records were kept


def test_the_record_on_disk(tmp_path: Path) -> None:
    sources = ids(tmp_path, "aaaa", "uuid-a")
    machine.write_record(tmp_path, sources, "1f", NOW)
    path = tmp_path / names.MACHINE_RECORD
    assert path.stat().st_mode & 0o777 == 0o644
    doc = json.loads(path.read_text())
    assert doc["serial"] == "1f" and doc["written_at"] == "2026-12-06T12:00:00Z"
    assert sorted(doc["fingerprint"]) == sorted(str(s) for s in sources)
    assert machine.read_record(tmp_path) == doc


def facts(foreign: str | None) -> CredentialFacts:
    return {
        "credentials": "/p/kubelet-client-current.pem",
        "present": True,
        "error": None,
        "key_mismatch": False,
        "issued_by_ca_file": True,
        "foreign": foreign,
        "node": "worker-1",
        "subject": "CN=system:node:worker-1,O=system:nodes",
        "issuer": "CN=ca",
        "serial": "1f",
        "sans": {"dns": ["worker-1"], "ip": []},
        "not_before": "2026-12-01T00:00:00Z",
        "not_after": "2027-12-01T00:00:00Z",
        "kubeconfig": {
            "path": "/k", "present": True, "error": None, "ca_matches": True,
            "current_context": "default", "server": "https://s", "user": "default",
            "client_certificate": "/p/kubelet-client-current.pem",
            "client_key": "/p/kubelet-client-current.pem",
        },
        "ca_file": {"path": "/ca", "present": True, "subjects": ["CN=ca"], "error": None},
    }  # fmt: skip


def test_status_calls_another_machines_credentials_mismatched() -> None:
    ours = judging.judge(facts(None), server="https://s", now=NOW)
    assert (ours.state, ours.exit_code) == ("valid", judging.EXIT_HEALTHY)
    why = "the credentials were made on another machine (/etc/machine-id differs: …)"
    theirs = judging.judge(facts(why), server="https://s", now=NOW)
    assert (theirs.state, theirs.exit_code) == ("mismatched", judging.EXIT_BROKEN)
    assert theirs.problems == (f"{why} (or run `join-agent join`)",)
    # Nothing is held: no renewal deadline is drawn for another machine's certificate.
    assert schedule.held(facts(why)) is None and schedule.held(facts(None)) is not None


def test_a_node_object_is_matched_with_the_ids_its_kubelet_reads() -> None:
    mine = {"/etc/machine-id": "a" * 32, "/sys/class/dmi/id/product_uuid": "4c4c-0001"}
    assert machine.same_machine(("A" * 32, "4C4C-0001"), mine) is None  # case does not count
    assert machine.same_machine(("", ""), mine) is None  # a kubelet that said nothing
    assert machine.same_machine(("b" * 32, "4c4c-0002"), mine) == (
        f"its machine-id is {'b' * 32}; its product_uuid is 4c4c-0002"
    )
    assert machine.same_machine(("b" * 32, "x"), {}) is None  # nothing to compare here
