"""status: judging snapshots (built in memory), exit codes, and the JSON keys as an API."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from join_agent.config import loading
from join_agent.core import judging
from join_agent.errors import StoreError
from join_agent.storage import store
from join_agent.verbs import status_text
from join_agent.worker import inspection, kubeconfig
from join_agent.worker.inspection import Snapshot
from tests.lab.certs import CA, NOW, cert_pem, ec_key, key_pem

CREDS = Path("/var/lib/kubelet/pki/kubelet-client-current.pem")
KC_PATH = Path("/etc/kubernetes/kubelet.conf")
CA_FILE = Path("/etc/kubernetes/pki/ca.crt")
SERVER = "https://10.0.0.5:6443"
DAY = dt.timedelta(days=1)


def kc_doc(ca: CA, server: str = SERVER, credentials: Path = CREDS) -> dict[str, Any]:
    return kubeconfig.parse(
        kubeconfig.render(
            cluster="kubernetes",
            server=server,
            ca_pem=cert_pem(ca.cert),
            node_name="node-1",
            credentials=credentials,
        )
    )


def healthy(ca: CA, key: Any, **cert_changes: Any) -> Snapshot:
    cert = ca.issue(key.public_key(), **cert_changes)
    return Snapshot(
        credentials=CREDS,
        pair=store.Pair(path=CREDS, chain=(cert, ca.cert), key_pem=key_pem(key)),
        pair_error=None,
        kubeconfig_path=KC_PATH,
        kubeconfig=kc_doc(ca),
        kubeconfig_error=None,
        ca_file=CA_FILE,
        ca=(ca.cert,),
        ca_error=None,
    )


def assess(snap: Snapshot, server: str = SERVER) -> judging.Report:
    return inspection.assess(snap, server=server, now=NOW)


def mismatch_message(ca: CA, key: Any) -> str:
    """The message the store really gives for a key that does not match its certificate."""
    data = store.pair_pem([ca.issue(key.public_key())], key_pem(ec_key()))
    with pytest.raises(StoreError) as info:
        store.parse_pair(CREDS, data)
    return str(info.value)


def test_valid(ca: CA, node_key: Any) -> None:
    report = assess(healthy(ca, node_key))
    assert report.state == "valid"
    assert report.exit_code == judging.EXIT_HEALTHY == 0
    assert report.problems == ()


@pytest.mark.parametrize(
    ("cert_changes", "state", "problem"),
    [
        (
            {"not_before": NOW - 30 * DAY, "not_after": NOW - DAY},
            "expired",
            "the certificate expired 1d 0h ago",
        ),
        ({"not_before": NOW - 30 * DAY, "not_after": NOW}, "expired", "expired 0s ago"),
        (
            {"not_before": NOW + dt.timedelta(hours=1)},
            "not-yet-valid",
            "valid only from 2024-06-01T13:00:00Z",
        ),
    ],
    ids=["expired", "expires-now", "not-yet-valid"],
)
def test_certificate_outside_its_validity(
    ca: CA, node_key: Any, cert_changes: dict[str, Any], state: str, problem: str
) -> None:
    report = assess(healthy(ca, node_key, **cert_changes))
    assert report.state == state
    assert report.exit_code == judging.EXIT_BROKEN == 2
    assert any(problem in p for p in report.problems), report.problems


def test_not_joined(ca: CA, node_key: Any) -> None:
    snap = dataclasses.replace(healthy(ca, node_key), pair=None, kubeconfig=None, ca=())
    report = assess(snap)
    assert report.state == "not-joined"
    assert report.exit_code == 2
    assert f"no certificate at {CREDS}: run `join-agent join`" in report.problems


def test_mismatched_key(ca: CA, node_key: Any) -> None:
    snap = dataclasses.replace(
        healthy(ca, node_key),
        pair=None,
        pair_error=mismatch_message(ca, node_key),
        key_mismatch=True,
    )
    report = assess(snap)
    assert report.state == "mismatched"
    assert report.exit_code == 2
    assert report.problems[0] == mismatch_message(ca, node_key)


def test_unreadable_pair(ca: CA, node_key: Any) -> None:
    error = f"{CREDS} does not hold a readable certificate and key"
    report = assess(dataclasses.replace(healthy(ca, node_key), pair=None, pair_error=error))
    assert report.state == "unreadable"
    assert report.exit_code == 2


def test_kubeconfig_missing(ca: CA, node_key: Any) -> None:
    report = assess(dataclasses.replace(healthy(ca, node_key), kubeconfig=None))
    assert report.state == "not-joined"
    assert report.exit_code == 2
    assert report.problems == (f"no kubeconfig at {KC_PATH}: run `join-agent join`",)


def test_kubeconfig_unreadable(ca: CA, node_key: Any) -> None:
    error = f"the kubeconfig {KC_PATH} is not valid YAML (ScannerError)"
    snap = dataclasses.replace(healthy(ca, node_key), kubeconfig=None, kubeconfig_error=error)
    report = assess(snap)
    assert report.state == "unreadable"
    assert report.problems == (error,)


def test_kubeconfig_pointing_elsewhere(ca: CA, node_key: Any) -> None:
    other = kc_doc(ca, credentials=Path("/etc/kubernetes/pki/admin.pem"))
    report = assess(dataclasses.replace(healthy(ca, node_key), kubeconfig=other))
    assert report.state == "mismatched"
    assert report.exit_code == 2
    assert report.problems == (f"the kubeconfig does not point at {CREDS}",)


def test_kubeconfig_with_only_the_key_elsewhere(ca: CA, node_key: Any) -> None:
    doc = kc_doc(ca)
    doc["users"][0]["user"]["client-key"] = "/tmp/other.key"
    report = assess(dataclasses.replace(healthy(ca, node_key), kubeconfig=doc))
    assert report.state == "mismatched"


def test_server_mismatch(ca: CA, node_key: Any) -> None:
    other = kc_doc(ca, server="https://10.9.9.9:6443")
    report = assess(dataclasses.replace(healthy(ca, node_key), kubeconfig=other))
    assert report.state == "mismatched"
    assert report.exit_code == 2
    assert report.problems == (
        f"the kubeconfig names server https://10.9.9.9:6443, the config {SERVER}",
    )


def test_no_configured_server_skips_the_server_check(ca: CA, node_key: Any) -> None:
    other = kc_doc(ca, server="https://10.9.9.9:6443")
    report = assess(dataclasses.replace(healthy(ca, node_key), kubeconfig=other), server="")
    assert report.state == "valid"


def test_a_ca_file_problem_alone_is_degraded(ca: CA, node_key: Any) -> None:
    error = f"cannot read the CA file {CA_FILE}: Permission denied"
    report = assess(dataclasses.replace(healthy(ca, node_key), ca=(), ca_error=error))
    assert report.state == "valid"
    assert report.exit_code == judging.EXIT_DEGRADED == 1
    assert report.problems == (error,)


def test_the_worst_state_wins(ca: CA, node_key: Any) -> None:
    snap = dataclasses.replace(
        healthy(ca, node_key, not_before=NOW - 30 * DAY, not_after=NOW - DAY),
        kubeconfig=kc_doc(ca, server="https://10.9.9.9:6443"),
    )
    report = assess(snap)
    assert report.state == "expired"
    assert len(report.problems) == 2


# -- rendering -------------------------------------------------------------------------

TOP = {"schema", "checked_at", "state", "node", "certificate", "kubeconfig", "ca_file", "problems"}
CERTIFICATE = {
    "path", "present", "subject", "issuer", "serial", "sans",
    "not_before", "not_after", "seconds_left",
}  # fmt: skip
KUBECONFIG = {
    "path", "present", "server", "current_context", "user", "client_certificate", "client_key",
}  # fmt: skip
CA_FILE_KEYS = {"path", "present", "subjects"}


def test_render_json_keys_are_an_api(ca: CA, node_key: Any) -> None:
    """Keys may be added, never renamed or removed: a rename fails here."""
    snap = healthy(ca, node_key)
    assert snap.pair is not None
    doc = json.loads(status_text.render_json(assess(snap)))
    assert doc.keys() >= TOP
    assert doc["certificate"].keys() >= CERTIFICATE
    assert doc["certificate"]["sans"].keys() == {"dns", "ip"}
    assert doc["kubeconfig"].keys() >= KUBECONFIG
    assert doc["ca_file"].keys() >= CA_FILE_KEYS

    assert doc["schema"] == 1
    assert doc["state"] == "valid"
    assert doc["node"] == "node-1"
    assert doc["problems"] == []
    assert doc["checked_at"] == "2024-06-01T12:00:00Z"
    cert = doc["certificate"]
    assert cert["path"] == str(CREDS)
    assert cert["present"] is True
    assert cert["subject"] == "CN=system:node:node-1,O=system:nodes"
    assert cert["issuer"] == "CN=Test Cluster CA"
    assert cert["serial"] == f"{snap.pair.certificate.serial_number:x}"
    assert cert["sans"] == {"dns": ["node-1"], "ip": ["10.0.0.7", "fd00::7"]}
    assert cert["not_before"] == "2024-06-01T11:55:00Z"
    assert cert["not_after"] == "2025-06-01T12:00:00Z"
    assert cert["seconds_left"] == 365 * 86400
    kc = doc["kubeconfig"]
    assert kc["present"] is True
    assert kc["server"] == SERVER
    assert kc["user"] == "system:node:node-1"
    assert kc["client_certificate"] == kc["client_key"] == str(CREDS)
    assert doc["ca_file"] == {
        "path": str(CA_FILE),
        "present": True,
        "subjects": ["CN=Test Cluster CA"],
    }


def test_render_json_when_not_joined(ca: CA, node_key: Any) -> None:
    snap = dataclasses.replace(healthy(ca, node_key), pair=None, kubeconfig=None, ca=())
    doc = json.loads(status_text.render_json(assess(snap)))
    assert doc["state"] == "not-joined"
    assert doc["node"] is None
    assert doc["certificate"] == {
        "path": str(CREDS),
        "present": False,
        **dict.fromkeys(
            [
                "node",
                "subject",
                "issuer",
                "serial",
                "sans",
                "not_before",
                "not_after",
                "seconds_left",
            ]
        ),
    }
    assert doc["kubeconfig"] == {
        "path": str(KC_PATH),
        "present": False,
        **dict.fromkeys(["current_context", "server", "user", "client_certificate", "client_key"]),
    }
    assert doc["ca_file"] == {"path": str(CA_FILE), "present": False, "subjects": []}
    assert len(doc["problems"]) == 2


def test_render_json_is_stable(ca: CA, node_key: Any) -> None:
    report = assess(healthy(ca, node_key))
    text = status_text.render_json(report)
    assert status_text.render_json(report) == text
    assert text.endswith("}\n")


def test_render_text_says_how_long_it_is_valid(ca: CA, node_key: Any) -> None:
    text = status_text.render_text(assess(healthy(ca, node_key, not_after=NOW + 30 * DAY)))
    assert "State:        valid\n" in text
    assert "Node:         node-1\n" in text
    assert "(VALID: 30 days)" in text
    assert "SANs:         node-1, 10.0.0.7, fd00::7\n" in text
    assert f"Kubeconfig:   {KC_PATH} (server {SERVER})\n" in text


def test_render_text_under_a_day(ca: CA, node_key: Any) -> None:
    text = status_text.render_text(
        assess(healthy(ca, node_key, not_after=NOW + dt.timedelta(hours=5)))
    )
    assert "(VALID: 5h 0m)" in text


def test_render_text_when_expired(ca: CA, node_key: Any) -> None:
    report = assess(healthy(ca, node_key, not_before=NOW - 30 * DAY, not_after=NOW - 2 * DAY))
    text = status_text.render_text(report)
    assert "State:        expired\n" in text
    assert "(EXPIRED 2d 0h ago)" in text
    assert "Problem:      the certificate expired 2d 0h ago" in text


# -- snapshot: the thin edge, on real files --------------------------------------------


def test_snapshot_of_real_files(tmp_path: Path, ca: CA, node_key: Any) -> None:
    doc = {
        "cluster": {"server": SERVER},
        "signer": {"cfssl": {"urls": ["http://10.0.0.5:8888"], "ca_pins": ["sha256:" + "0" * 64]}},
        "paths": {
            "pki_dir": str(tmp_path / "pki"),
            "kubeconfig": str(tmp_path / "kubelet.conf"),
            "ca_file": str(tmp_path / "ca.crt"),
            "state_dir": str(tmp_path / "state"),
        },
    }
    cfg = loading.parse(doc)
    creds = cfg.paths.pki_dir / "kubelet-client-current.pem"

    empty = inspection.snapshot(cfg, creds)
    assert assess(empty).state == "not-joined"

    store.PairStore(cfg.paths.pki_dir, "kubelet-client").install(
        [ca.issue(node_key.public_key())], key_pem(node_key), NOW
    )
    kubeconfig.write(
        cfg.paths.kubeconfig,
        kubeconfig.render(
            cluster="kubernetes",
            server=SERVER,
            ca_pem=cert_pem(ca.cert),
            node_name="node-1",
            credentials=creds,
        ),
    )
    store.atomic_write(cfg.paths.ca_file, cert_pem(ca.cert), 0o644)
    report = assess(inspection.snapshot(cfg, creds))
    assert (report.state, report.exit_code, report.problems) == ("valid", 0, ())


def test_render_text_of_a_certificate_not_valid_yet_says_so_alone(ca: CA, node_key: Any) -> None:
    report = assess(healthy(ca, node_key, not_before=NOW + 2 * DAY, not_after=NOW + 30 * DAY))
    text = status_text.render_text(report)
    assert report.state == "not-yet-valid"
    assert "VALID:" not in text and "renews in" not in text
    assert "(NOT VALID YET: from " in text


def test_in_its_last_second_a_valid_certificate_is_shown_valid(ca: CA, node_key: Any) -> None:
    """Half a second before expiry the verdict is valid: the text says so (1 s left), not
    "valid, degraded" beside "EXPIRED 0s ago"."""
    snap = healthy(ca, node_key, not_before=NOW - 30 * DAY, not_after=NOW + dt.timedelta(seconds=1))
    report = inspection.assess(snap, server=SERVER, now=NOW + dt.timedelta(milliseconds=500))
    assert report.state == "valid"
    assert report.doc["certificate"]["seconds_left"] == 1
    text = status_text.render_text(report)
    assert "EXPIRED" not in text and "(VALID: 1s" in text
    expired = inspection.assess(
        snap, server=SERVER, now=NOW + dt.timedelta(seconds=1, milliseconds=500)
    )
    assert expired.state == "expired" and expired.doc["certificate"]["seconds_left"] == 0
