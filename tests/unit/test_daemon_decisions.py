"""The daemon's decisions, without processes: a Daemon object fed results by hand.

No worker child is spawned and no kubelet started: the tests call the methods that
decide (identity check, splay, next attempt, what status.json and STATUS= say).
"""

from __future__ import annotations

import datetime as dt
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from join_agent import config, daemon, state
from join_agent.core import renewal
from join_agent.core.protocol import ErrorKind
from join_agent.notify import NullNotifier

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)


def document(tmp_path: Path) -> dict[str, Any]:
    return {
        "cluster": {"server": "https://10.0.0.5:6443"},
        "node": {"name": "worker-1", "addresses": ["192.0.2.10"]},
        "signer": {"cfssl": {"urls": ["http://127.0.0.1:1"], "ca_pins": ["sha256:" + "0" * 64]}},
        "paths": {
            "pki_dir": str(tmp_path / "pki"),
            "kubeconfig": str(tmp_path / "kubelet.conf"),
            "ca_file": str(tmp_path / "ca.crt"),
            "state_dir": str(tmp_path / "state"),
        },
        "renewal": {"retry_min": "10s", "retry_max": "5m"},
        "kubelet": {"manage": False},
    }


def make(tmp_path: Path, **sections: dict[str, Any]) -> daemon.Daemon:
    doc = document(tmp_path)
    for k, v in sections.items():
        doc.setdefault(k, {}).update(v)
    cfg = config.parse(doc, source=tmp_path / "config.toml")
    return daemon.Daemon(
        cfg, notifier=NullNotifier(), environ={}, clock=lambda: NOW, rng=random.Random(7)
    )


def creds(ips: list[str], node: str = "worker-1", days: int = 365) -> dict[str, Any]:
    nb = NOW - dt.timedelta(days=1)
    return {
        "present": True,
        "node": node,
        "serial": "abc123",
        "sans": {"dns": [node], "ip": ips},
        "not_before": state.iso(nb),
        "not_after": state.iso(nb + dt.timedelta(days=days)),
    }


def test_a_changed_address_set_requests_an_early_renewal(tmp_path: Path) -> None:
    d = make(tmp_path)
    d.creds = creds(["192.0.2.10"])
    d._check_identity(NOW)
    assert not d.renewal.requested
    d.creds = creds(["192.0.2.99"])
    d._check_identity(NOW)
    assert not d.renewal.requested  # checked at most once a minute
    d.identity_checked -= 61
    d._check_identity(NOW)
    assert d.renewal.requested
    assert "192.0.2.10" in d.renewal.reason
    assert d._next_attempt(NOW) == NOW  # not the deadline months away


def test_a_renamed_node_requests_a_renewal(tmp_path: Path) -> None:
    d = make(tmp_path)
    d.creds = creds(["192.0.2.10"], node="old-name")
    d._check_identity(NOW)
    assert d.renewal.requested


def test_renewal_waits_for_the_deadline_inside_70_to_90_percent(tmp_path: Path) -> None:
    d = make(tmp_path)
    d.creds = creds(["192.0.2.10"], days=100)
    at = d._next_attempt(NOW)
    assert at is not None
    nb = state.parse_iso(d.creds["not_before"])
    assert nb + dt.timedelta(days=70) <= at <= nb + dt.timedelta(days=90)
    # The same certificate gives the same deadline after a restart of the agent.
    again = make(tmp_path)
    again.creds = dict(d.creds)
    assert again._next_attempt(NOW) == at


def test_splay_delays_the_first_enrollment_only(tmp_path: Path) -> None:
    d = make(tmp_path, renewal={"splay": "10m"})
    d._apply(NOW, "inspect", {"ok": True, "credentials": {"present": False}})
    assert d.renewal.splay_until is not None
    assert NOW <= d.renewal.splay_until < NOW + dt.timedelta(minutes=10)
    assert d._next_attempt(NOW) == d.renewal.splay_until
    assert "splay" in d._waiting_for(NOW)
    # A node that has credentials does not wait for a splay.
    joined = make(tmp_path / "b", renewal={"splay": "10m"})
    (tmp_path / "b").mkdir(exist_ok=True)
    joined.cfg.paths.kubeconfig.write_text("x")
    joined._apply(NOW, "inspect", {"ok": True, "credentials": creds(["192.0.2.10"])})
    assert joined.renewal.splay_until is None


def test_failures_back_off_and_record_the_error(tmp_path: Path) -> None:
    d = make(tmp_path)
    d.creds = creds(["192.0.2.10"])
    d.renewal.last_attempt = NOW
    d._apply(
        NOW,
        "enroll",
        {"ok": False, "error": "no CFSSL server answered: x", "kind": "TransportError"},
    )
    assert d.renewal.failures == 1
    assert d.renewal.last_error is not None
    assert d.renewal.last_error.to_json() == {
        "message": "no CFSSL server answered: x",
        "kind": "TransportError",
        "at": state.iso(NOW),
    }
    first = d._next_attempt(NOW)
    assert first is not None and NOW + dt.timedelta(seconds=10) <= first <= NOW + dt.timedelta(
        seconds=20
    )
    for _ in range(10):
        d._apply(NOW, "enroll", {"ok": False, "error": "again", "kind": "TransportError"})
    later = d._next_attempt(NOW)
    assert later is not None and later <= NOW + dt.timedelta(minutes=5)  # capped by retry_max
    d._apply(NOW, "enroll", {"ok": True, "credentials": creds(["192.0.2.10"])})
    assert d.renewal.failures == 0
    assert d.renewal.last_ok is True


def test_status_document_and_status_line(tmp_path: Path) -> None:
    d = make(tmp_path)
    d.creds = creds(["192.0.2.10"], days=365)
    doc = d.status_document(NOW)
    assert set(doc) >= {
        "schema", "written_at", "agent", "node", "signer", "credentials", "kubelet",
        "renewal", "last_error", "waiting_for",
    }  # fmt: skip
    assert doc["node"] == "worker-1"
    assert doc["renewal"]["renew_at"] is not None
    line = daemon.status_line(doc, NOW)
    assert line.startswith("joined as worker-1; cert expires in 364d")
    assert "renews in" in line
    d.renewal.failed(NOW, "the CA is down", ErrorKind.TRANSPORT)
    assert daemon.status_line(d.status_document(NOW), NOW).endswith(
        "last renewal failed: the CA is down"
    )


def test_status_line_before_the_first_certificate(tmp_path: Path) -> None:
    d = make(tmp_path)
    d.creds = {"present": False}
    assert daemon.status_line(d.status_document(NOW), NOW) == "not joined yet; waiting for the CA"


@pytest.mark.parametrize("text", ["[nonsense]\n", "[cluster]\nserver = 5\n"])
def test_a_bad_reload_keeps_the_running_config(tmp_path: Path, text: str) -> None:
    d = make(tmp_path)
    d.cfg.source.write_text(text)
    before = d.cfg
    d._reload(NOW)
    assert d.cfg is before


def test_an_explicit_ask_goes_now_whatever_backoff_or_hold_waits(tmp_path: Path) -> None:
    d = make(tmp_path)
    d.creds = creds(["192.0.2.10"])
    for _ in range(6):
        d.renewal.last_attempt = NOW
        d._apply(NOW, "enroll", {"ok": False, "error": "down", "kind": "TransportError"})
    d._apply(NOW, "enroll", {"ok": False, "error": "no", "kind": "RequestDenied"})
    waiting = d._next_attempt(NOW)
    assert waiting is not None and waiting >= NOW + renewal.AFTER_DENIAL
    d.pending_signals.append(signal.SIGUSR1)
    d._handle_signals(NOW)
    assert d._next_attempt(NOW) == NOW
    # Starting the attempt answers the ask (_spawn_worker clears it); its failure then
    # backs off again rather than asking in a loop.
    d.renewal.asked = False
    d._apply(NOW, "enroll", {"ok": False, "error": "down", "kind": "TransportError"})
    again = d._next_attempt(NOW)
    assert again is not None and again > NOW


def test_a_reload_that_a_running_agent_cannot_apply_is_refused(tmp_path: Path) -> None:
    d = make(tmp_path)
    doc = document(tmp_path)
    doc["paths"]["state_dir"] = str(tmp_path / "elsewhere")
    doc["node"]["name"] = "other-name"
    moved = config.parse(doc, source=d.cfg.source)
    said = daemon.reload_refusal(d.cfg, moved)
    assert said == (
        "paths.state_dir and node.name changed, which a running agent cannot apply: restart "
        "it (systemctl restart join-agent) to use the new config"
    )
    doc = document(tmp_path)
    doc["renewal"]["retry_min"] = "20s"
    same = config.parse(doc, source=d.cfg.source)
    assert daemon.reload_refusal(d.cfg, same) is None  # what can change live, does


class Recording:
    """A notifier that keeps what the daemon tells the service manager."""

    watchdog_interval = None

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, *lines: str) -> None:
        self.sent.append("\n".join(lines))


def recorded(tmp_path: Path) -> tuple[daemon.Daemon, Recording]:
    d = make(tmp_path)
    notes = Recording()
    d.notifier = notes
    d.cfg.paths.state_dir.mkdir(parents=True, exist_ok=True)
    return d, notes


def test_ready_once_the_state_is_read_joined_or_not(tmp_path: Path) -> None:
    """READY=1 must not wait for the CA (a start job that waits keeps the boot at
    "starting"); agent.state stays "starting" until the node works."""
    d, notes = recorded(tmp_path)
    d._publish(NOW)
    assert not any("READY=1" in n for n in notes.sent)  # the credentials are not read yet
    d._apply(NOW, "inspect", {"ok": True, "credentials": {"present": False}})
    d._publish(NOW)
    (ready,) = [n for n in notes.sent if "READY=1" in n]
    assert ready == "READY=1\nSTATUS=not joined yet; waiting for the CA"
    doc = d.status_document(NOW)
    assert doc["agent"]["state"] == "starting"
    assert doc["waiting_for"] == "the CA"
    d._publish(NOW)
    assert len([n for n in notes.sent if "READY=1" in n]) == 1


def test_a_reload_before_ready_sends_no_ready_and_every_reload_resends_status(
    tmp_path: Path,
) -> None:
    d, notes = recorded(tmp_path)
    d.cfg.source.write_text("[nonsense]\n")
    d._reload(NOW)  # before READY=1: nothing the service manager would wait for
    assert notes.sent == []
    assert d.reloads is not None and d.reloads["ok"] is False and d.reloads["count"] == 1
    d._apply(NOW, "inspect", {"ok": True, "credentials": {"present": False}})
    d._publish(NOW)
    assert "config reload refused" in notes.sent[-1]
    notes.sent.clear()
    d._reload(NOW)  # after READY=1: RELOADING=1, then READY=1, then STATUS= again
    assert notes.sent[0].startswith("RELOADING=1")
    assert notes.sent[1] == "READY=1"
    d._publish(NOW)
    assert notes.sent[2].startswith("STATUS=not joined yet")
    assert d.status_document(NOW)["reload"]["count"] == 2
