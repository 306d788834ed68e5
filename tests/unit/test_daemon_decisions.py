"""The daemon's loop without processes: a Daemon fed worker results and signals through
its public methods (on_result, on_signal, check_identity, publish), observed through what
it publishes (status_document, the service manager's messages).

No worker child is spawned and no kubelet started. The renewal rule itself is tested
through its own interface in test_renewal.py; here, that the daemon acts on it.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from join_agent.config import loading
from join_agent.core import renewal, wire
from join_agent.core.protocol import CredentialFacts, WorkerResult
from join_agent.daemon import identity_watch as watch
from join_agent.daemon import loop, reloading, reporting

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
FAILED: WorkerResult = {
    "ok": False,
    "error": "no CFSSL server answered: x",
    "kind": "TransportError",
}


class Recording:
    """A notifier that keeps what the daemon tells the service manager."""

    def __init__(self) -> None:
        self.watchdog_interval: dt.timedelta | None = None
        self.sent: list[str] = []

    def send(self, *lines: str) -> None:
        self.sent.append("\n".join(lines))


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def make(
    tmp_path: Path,
    notes: Recording | None = None,
    *,
    fake_kubelet: object = None,
    serves: bool = False,
    **sections: dict[str, Any],
) -> tuple[loop.Daemon, Monotonic]:
    doc = document(tmp_path)
    for k, v in sections.items():
        doc.setdefault(k, {}).update(v)
    tmp_path.mkdir(exist_ok=True)
    cfg = loading.parse(doc, source=tmp_path / "config.toml")
    cfg.paths.state_dir.mkdir(parents=True, exist_ok=True)
    mono = Monotonic()
    d = loop.Daemon(
        cfg,
        notifier=notes or Recording(),
        environ={},
        kubelet_factory=lambda _cfg, _name: fake_kubelet,  # type: ignore[return-value,arg-type]
        kubelet_serves_ours=serves,
        clock=lambda: NOW,
        monotonic=mono,
        rng=random.Random(7),
    )
    return d, mono


def creds(ips: list[str], node: str = "worker-1", days: int = 365) -> CredentialFacts:
    nb = NOW - dt.timedelta(days=1)
    return {  # as a worker reports them
        "present": True,
        "credentials": "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "node": node,
        "subject": f"O=system:nodes,CN=system:node:{node}",
        "issuer": "CN=cluster CA",
        "serial": "abc123",
        "sans": {"dns": [node], "ip": ips},
        "not_before": wire.iso(nb),
        "not_after": wire.iso(nb + dt.timedelta(days=days)),
    }


def joined(d: loop.Daemon, facts: CredentialFacts) -> None:
    """The worker's first look finds credentials and a kubeconfig."""
    d.cfg.paths.kubeconfig.write_text("x")
    d.on_result(NOW, "inspect", {"ok": True, "credentials": facts})


def renewal_doc(d: loop.Daemon) -> dict[str, Any]:
    doc: dict[str, Any] = dict(d.status_document(NOW)["renewal"])
    return doc


def test_a_changed_address_set_requests_an_early_renewal(tmp_path: Path) -> None:
    d, mono = make(tmp_path)
    joined(d, creds(["192.0.2.10"]))
    d.check_identity()
    assert renewal_doc(d)["reason"] is None
    d.on_result(NOW, "inspect", {"ok": True, "credentials": creds(["192.0.2.99"])})
    d.check_identity()
    assert renewal_doc(d)["reason"] is None  # checked at most once a minute
    mono.now += 61
    d.check_identity()
    assert "192.0.2.10" in renewal_doc(d)["reason"]
    assert renewal_doc(d)["next_attempt"] == wire.iso(NOW)  # not the deadline months away


def test_a_wake_up_just_short_of_the_minute_looks(tmp_path: Path) -> None:
    """The watchdog's tick and the minute's look fell into step, and every other tick
    skipped the look (1 m 47 s to notice a change, measured): a tick a hair early looks."""
    d, mono = make(tmp_path)
    joined(d, creds(["192.0.2.10"]))
    d.check_identity()
    d.on_result(NOW, "inspect", {"ok": True, "credentials": creds(["192.0.2.99"])})
    mono.now += 59.99
    d.check_identity()
    assert "192.0.2.10" in renewal_doc(d)["reason"]


def test_a_notified_change_is_looked_at_once_the_burst_settles(tmp_path: Path) -> None:
    """The kernel's notifications (Linux): the loop wakes QUIET_SECONDS after the last of
    a burst, never later than BURST_SECONDS after its first, and looks; with nothing
    notified, the look is no reason to wake (the renewal deadline is, months away)."""
    d, mono = make(tmp_path)
    d.identity.polls = False  # a feed is open: the minute's look wakes nothing
    joined(d, creds(["192.0.2.10"]))
    d.check_identity()
    deadline = d.next_wake(NOW)
    assert deadline is not None and deadline > NOW + dt.timedelta(days=100)
    d.on_result(NOW, "inspect", {"ok": True, "credentials": creds(["192.0.2.99"])})
    start = mono.now
    for _ in range(12):  # a notification a second: renumbering that goes on and on
        d.identity.notified()
        left = min(watch.QUIET_SECONDS, start + watch.BURST_SECONDS - mono.now)
        # (Due right now, before decide() has looked: a second, as for any look not taken.)
        assert d.next_wake(NOW) == NOW + dt.timedelta(seconds=left or watch.EARLY_SECONDS)
        d.check_identity()
        if renewal_doc(d)["reason"]:
            break
        mono.now += 1
    assert mono.now - start == watch.BURST_SECONDS
    assert "192.0.2.10" in renewal_doc(d)["reason"]


def test_a_single_notification_is_looked_at_after_the_quiet_time(tmp_path: Path) -> None:
    d, mono = make(tmp_path)
    d.identity.polls = False
    joined(d, creds(["192.0.2.10"]))
    d.check_identity()
    d.on_result(NOW, "inspect", {"ok": True, "credentials": creds(["192.0.2.99"])})
    d.identity.notified()
    mono.now += watch.QUIET_SECONDS - 0.1
    d.check_identity()
    assert renewal_doc(d)["reason"] is None
    mono.now += 0.1
    d.check_identity()
    assert "192.0.2.10" in renewal_doc(d)["reason"]


def test_where_nothing_notifies_the_loop_wakes_for_the_minutes_look(tmp_path: Path) -> None:
    """illumos (and a Linux kernel that refuses the socket): a bounded poll."""
    d, mono = make(tmp_path)
    assert d.identity.polls  # no feed opened
    joined(d, creds(["192.0.2.10"]))
    d.check_identity()
    assert d.next_wake(NOW) == NOW + dt.timedelta(seconds=watch.EVERY_SECONDS)
    mono.now += 30
    assert d.next_wake(NOW) == NOW + dt.timedelta(seconds=watch.EVERY_SECONDS - 30)


def test_nothing_wakes_the_loop_for_a_look_that_cannot_happen(tmp_path: Path) -> None:
    """A renewal already asked for (and failing, the CA down): a notification is moot (the
    enrollment looks at the node itself), and a look due long ago must not spin the loop."""
    d, mono = make(tmp_path)
    d.identity.polls = False
    joined(d, creds(["192.0.2.10"]))
    d.renewal.request("requested (SIGUSR1 / join-agent renew)")
    d.on_result(NOW, "enroll", FAILED)
    retry = d.next_wake(NOW)
    assert retry is not None and retry > NOW
    d.identity.notified()
    mono.now += 60
    assert d.next_wake(NOW) == retry
    d.check_identity()
    assert d.identity.settled is None


def test_a_look_that_is_due_but_cannot_run_does_not_spin_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials changed on disk, and the worker that would read them cannot be started
    (out of processes): decide() returns before it looks. The overdue look must not make
    the loop wake at once, turn after turn, while fork keeps failing."""
    d, mono = make(tmp_path)
    joined(d, creds(["192.0.2.10"]))
    d.check_identity()
    d.identity.notified()
    mono.now += 61
    monkeypatch.setattr(d, "_files_changed", lambda: True)
    monkeypatch.setattr(d.worker, "start", lambda *_: {"ok": False, "error": "EAGAIN",
                                                       "kind": "OSError"})  # fmt: skip
    d.decide(NOW)
    assert d.identity.settled is not None  # not looked at
    wake = d.next_wake(NOW)
    assert wake is not None and wake >= NOW + dt.timedelta(seconds=watch.EARLY_SECONDS)


def test_a_renamed_node_requests_a_renewal(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    joined(d, creds(["192.0.2.10"], node="old-name"))
    d.check_identity()
    assert "name changed" in renewal_doc(d)["reason"]
    assert renewal_doc(d)["next_attempt"] == wire.iso(NOW)


def test_renewal_waits_for_the_deadline_inside_70_to_90_percent(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    facts = creds(["192.0.2.10"], days=100)
    joined(d, facts)
    at = wire.parse_iso(renewal_doc(d)["next_attempt"])
    nb = wire.parse_iso(facts["not_before"])
    assert nb + dt.timedelta(days=70) <= at <= nb + dt.timedelta(days=90)
    assert renewal_doc(d)["renew_at"] == renewal_doc(d)["next_attempt"]
    # The same certificate gives the same deadline after a restart of the agent.
    again, _ = make(tmp_path / "again")
    joined(again, CredentialFacts(**facts))
    assert renewal_doc(again)["next_attempt"] == wire.iso(at)


def test_splay_delays_the_first_enrollment_only(tmp_path: Path) -> None:
    d, _ = make(tmp_path, renewal={"splay": "10m"})
    d.on_result(NOW, "inspect", {"ok": True, "credentials": {"present": False}})
    at = wire.parse_iso(renewal_doc(d)["next_attempt"])
    assert NOW <= at < NOW + dt.timedelta(minutes=10)
    waiting = d.status_document(NOW)["waiting_for"]
    assert waiting is not None and "splay" in waiting
    # A node that has credentials does not wait for a splay.
    other, _ = make(tmp_path / "b", renewal={"splay": "10m"})
    joined(other, creds(["192.0.2.10"]))
    assert other.status_document(NOW)["waiting_for"] is None
    assert renewal_doc(other)["reason"] is None


def test_failures_back_off_and_record_the_error(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    joined(d, creds(["192.0.2.10"]))
    d.renewal.begin(NOW)  # what starting the worker does
    d.on_result(NOW, "enroll", FAILED)
    doc = d.status_document(NOW)
    assert doc["renewal"]["failures"] == 1
    assert doc["last_error"] == {
        "message": "no CFSSL server answered: x",
        "kind": "TransportError",
        "at": wire.iso(NOW),
    }
    next_attempt = doc["renewal"]["next_attempt"]
    assert next_attempt is not None
    first = wire.parse_iso(next_attempt)
    assert NOW + dt.timedelta(seconds=10) <= first <= NOW + dt.timedelta(seconds=20)
    for _ in range(10):
        d.on_result(NOW, "enroll", {"ok": False, "error": "again", "kind": "TransportError"})
    later = wire.parse_iso(renewal_doc(d)["next_attempt"])
    assert later <= NOW + dt.timedelta(minutes=5)  # capped by retry_max
    d.on_result(NOW, "enroll", {"ok": True, "credentials": creds(["192.0.2.10"])})
    assert (renewal_doc(d)["failures"], renewal_doc(d)["last_ok"]) == (0, True)


def test_status_document_and_status_line(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    joined(d, creds(["192.0.2.10"], days=365))
    doc = d.status_document(NOW)
    assert set(doc) >= {
        "schema", "written_at", "agent", "node", "signer", "credentials", "kubelet",
        "renewal", "last_error", "waiting_for",
    }  # fmt: skip
    assert doc["node"] == "worker-1"
    assert doc["renewal"]["renew_at"] is not None
    line = reporting.status_line(doc, NOW)
    assert line.startswith("joined as worker-1; cert expires in 364d")
    assert "renews in" in line
    d.on_result(NOW, "enroll", {**FAILED, "error": "the CA is down"})
    assert reporting.status_line(d.status_document(NOW), NOW).endswith(
        "last renewal failed: the CA is down"
    )


def test_status_line_before_the_first_certificate(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    d.on_result(NOW, "inspect", {"ok": True, "credentials": {"present": False}})
    said = reporting.status_line(d.status_document(NOW), NOW)
    assert said == "not joined yet; waiting for the CA"


@pytest.mark.parametrize("text", ["[nonsense]\n", "[cluster]\nserver = 5\n"])
def test_a_bad_reload_keeps_the_running_config(tmp_path: Path, text: str) -> None:
    d, _ = make(tmp_path)
    d.cfg.source.write_text(text)
    before = d.cfg
    d.on_signal(NOW, signal.SIGHUP)
    assert d.cfg is before
    record = d.status_document(NOW)["reload"]
    assert record is not None and record["ok"] is False


def test_an_explicit_ask_goes_now_whatever_backoff_or_hold_waits(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    joined(d, creds(["192.0.2.10"]))
    for _ in range(6):
        d.renewal.begin(NOW)
        d.on_result(NOW, "enroll", FAILED)
    d.on_result(NOW, "enroll", {"ok": False, "error": "no", "kind": "RequestDenied"})
    waiting = wire.parse_iso(renewal_doc(d)["next_attempt"])
    assert waiting >= NOW + renewal.AFTER_DENIAL
    d.on_signal(NOW, signal.SIGUSR1)
    assert renewal_doc(d)["next_attempt"] == wire.iso(NOW)
    # Starting the attempt answers the ask; its failure then backs off again rather than
    # asking in a loop.
    d.renewal.begin(NOW)
    d.on_result(NOW, "enroll", FAILED)
    assert wire.parse_iso(renewal_doc(d)["next_attempt"]) > NOW


def test_a_reload_that_a_running_agent_cannot_apply_is_refused(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    doc = document(tmp_path)
    doc["paths"]["state_dir"] = str(tmp_path / "elsewhere")
    doc["node"]["name"] = "other-name"
    moved = loading.parse(doc, source=d.cfg.source)
    said = reloading.reload_refusal(d.cfg, moved)
    assert said == (
        "paths.state_dir and node.name changed, which a running agent cannot apply: restart "
        "it (systemctl restart join-agent) to use the new config"
    )
    doc = document(tmp_path)
    doc["renewal"]["retry_min"] = "20s"
    same = loading.parse(doc, source=d.cfg.source)
    assert reloading.reload_refusal(d.cfg, same) is None  # what can change live, does


def test_ready_once_the_state_is_read_joined_or_not(tmp_path: Path) -> None:
    """READY=1 must not wait for the CA (a start job that waits keeps the boot at
    "starting"); agent.state stays "starting" until the node works."""
    notes = Recording()
    d, _ = make(tmp_path, notes)
    d.publish(NOW)
    assert not any("READY=1" in n for n in notes.sent)  # the credentials are not read yet
    d.on_result(NOW, "inspect", {"ok": True, "credentials": {"present": False}})
    d.publish(NOW)
    (ready,) = [n for n in notes.sent if "READY=1" in n]
    assert ready == "READY=1\nSTATUS=not joined yet; waiting for the CA"
    doc = d.status_document(NOW)
    assert doc["agent"]["state"] == "starting"
    assert doc["waiting_for"] == "the CA"
    d.publish(NOW)
    assert len([n for n in notes.sent if "READY=1" in n]) == 1


def test_a_reload_before_ready_sends_no_ready_and_every_reload_resends_status(
    tmp_path: Path,
) -> None:
    notes = Recording()
    d, _ = make(tmp_path, notes)
    d.cfg.source.write_text("[nonsense]\n")
    d.on_signal(NOW, signal.SIGHUP)  # before READY=1: nothing the manager would wait for
    assert notes.sent == []
    record = d.status_document(NOW)["reload"]
    assert record is not None and (record["ok"], record["count"]) == (False, 1)
    d.on_result(NOW, "inspect", {"ok": True, "credentials": {"present": False}})
    d.publish(NOW)
    assert "config reload refused" in notes.sent[-1]
    notes.sent.clear()
    d.on_signal(NOW, signal.SIGHUP)  # after READY=1: RELOADING=1, READY=1, STATUS= again
    assert notes.sent[0].startswith("RELOADING=1")
    assert notes.sent[1] == "READY=1"
    d.publish(NOW)
    assert notes.sent[2].startswith("STATUS=not joined yet")
    record = d.status_document(NOW)["reload"]
    assert record is not None and record["count"] == 2


class FakeKubelet:
    """Records what the daemon asks of its kubelet supervisor."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, now: dt.datetime) -> None:
        self.calls.append("start")

    def restart(self, now: dt.datetime) -> None:
        self.calls.append("restart")

    def tick(self, now: dt.datetime) -> None:
        return None

    def snapshot(self) -> dict[str, Any]:
        return {"state": "running", "pid": 4242, "restarts": 0}


@pytest.mark.parametrize(("serves", "restarts"), [(True, ["restart"]), (False, [])])
def test_a_rotation_restarts_the_kubelet_only_when_it_serves_our_certificate(
    tmp_path: Path, serves: bool, restarts: list[str]
) -> None:
    fake = FakeKubelet()
    d, _ = make(
        tmp_path,
        fake_kubelet=fake,
        serves=serves,
        kubelet={"manage": True, "command": ["/usr/bin/kubelet"]},
    )
    joined(d, creds(["192.0.2.10"]))
    d.decide(NOW)  # joined, nothing due: the kubelet starts
    assert fake.calls == ["start"]
    rotated = creds(["192.0.2.10"])
    rotated["serial"] = "def456"
    d.on_result(NOW, "enroll", {"ok": True, "credentials": rotated})
    assert fake.calls == ["start", *restarts]
    # A CA change restarts it whatever it serves: the kubelet does not reload CA data.
    d.on_result(NOW, "enroll", {"ok": True, "credentials": rotated, "ca_changed": True})
    assert fake.calls == ["start", *restarts, "restart"]


def test_every_status_document_the_daemon_writes_is_one_status_reads(tmp_path: Path) -> None:
    """status.json before the first inspect, after an inspect that found nothing or failed,
    once joined and after a failure: each passes the reader's own check, so `status` never
    calls the daemon's record damaged."""
    from join_agent.storage import state

    d, _ = make(tmp_path)
    docs = [d.status_document(NOW)]
    d.on_result(NOW, "inspect", {"ok": False, "error": "no", "kind": "StoreError"})
    docs.append(d.status_document(NOW))
    nothing: CredentialFacts = {"present": False, "credentials": str(tmp_path / "current.pem")}
    d.on_result(NOW, "inspect", {"ok": True, "credentials": nothing})
    docs.append(d.status_document(NOW))
    joined(d, creds(["192.0.2.10"]))
    d.on_result(NOW, "enroll", FAILED)
    docs.append(d.status_document(NOW, final=True))
    assert [state.document_problem(doc) for doc in docs] == [None] * len(docs)


def test_another_machines_credentials_are_a_first_join(tmp_path: Path) -> None:
    """A clone's inherited credentials: not joined (so no kubelet, and `join-agent wait`
    keeps waiting), not renewed on the template's schedule, but enrolled afresh after the
    splay, as every new node is; READY=1 still comes (the state has been read)."""
    notes = Recording()
    d, _ = make(tmp_path, notes, renewal={"splay": "10m"})
    foreign = "the credentials were made on another machine (/etc/machine-id differs: …)"
    joined(d, {**creds(["192.0.2.10"]), "foreign": foreign})
    d.publish(NOW)
    assert any("READY=1" in sent for sent in notes.sent)
    doc = d.status_document(NOW)
    assert doc["agent"]["state"] == "starting"  # not joined
    assert doc["renewal"]["renew_at"] is None  # the template's deadline is not ours
    at = wire.parse_iso(renewal_doc(d)["next_attempt"])
    assert NOW <= at < NOW + dt.timedelta(minutes=10)
    waiting = doc["waiting_for"]
    assert waiting is not None and "splay" in waiting
    assert reporting.status_line(doc, NOW).startswith(
        "not joined yet (the credentials on disk are another machine's); waiting for splay"
    )
    # The same files, made here: joined, renewed on their own deadline.
    ours, _ = make(tmp_path / "b", renewal={"splay": "10m"})
    joined(ours, creds(["192.0.2.10"]))
    doc = ours.status_document(NOW)
    assert doc["agent"]["state"] == "running" and doc["renewal"]["renew_at"] is not None


class Slots:
    """The worker slot, recording the modes started instead of starting children."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.busy, self.mode = False, None

    def start(self, cfg: object, mode: str, environ: object, now: object) -> None:
        self.started.append(mode)

    def deadline(self, cfg: object) -> None:
        return None


def test_a_clock_before_the_install_waits_for_time_sync_without_failing(tmp_path: Path) -> None:
    """A board without a real-time clock boots in 1970: the daemon asks the CA nothing (an
    enrollment would fail the validity checks and count as a failure), says why, looks
    again every few seconds, and enrolls once time sync has set the clock."""
    notes = Recording()
    d, _ = make(tmp_path, notes)
    d.installed = NOW - dt.timedelta(days=30)
    slots = Slots()
    d.worker = slots  # type: ignore[assignment]
    nothing: CredentialFacts = {"present": False, "credentials": str(tmp_path / "c.pem")}
    d.on_result(NOW, "inspect", {"ok": True, "credentials": nothing})
    boot = dt.datetime(1970, 1, 1, 0, 0, 5, tzinfo=dt.timezone.utc)
    d.decide(boot)
    assert slots.started == []
    doc = d.status_document(boot)
    waiting = doc["waiting_for"]
    assert waiting is not None and waiting.startswith(
        "the clock to be set: it reads 1970-01-01T00:00:05Z, before 2026-10-23T12:00:00Z"
    )
    assert doc["renewal"]["failures"] == 0
    assert d.next_wake(boot) == boot + dt.timedelta(seconds=5)
    d.publish(boot)
    assert any("waiting for the clock to be set" in sent for sent in notes.sent)
    d.decide(NOW)  # NTP stepped the clock
    assert slots.started == ["enroll"]


def test_a_joined_nodes_clock_may_not_be_earlier_than_its_certificate(tmp_path: Path) -> None:
    """The floor is also the held certificate's start, less clock_skew (default 2m)."""
    d, _ = make(tmp_path)
    d.installed = NOW - dt.timedelta(days=30)
    slots = Slots()
    d.worker = slots  # type: ignore[assignment]
    joined(d, creds(["192.0.2.10"]))  # not_before = NOW - 1 day
    d.decide(NOW - dt.timedelta(days=1, minutes=1))  # within the skew: fine
    assert d.clock_behind is None
    d.decide(NOW - dt.timedelta(days=2))
    assert d.clock_behind == NOW - dt.timedelta(days=1, minutes=2)


def test_an_expired_node_is_not_running_and_starts_no_kubelet(tmp_path: Path) -> None:
    """Stopped, left until its certificate expired, started with the CA down: the state
    is read (READY=1, the boot is not held), but the node is not "running", its STATUS
    line says the certificate expired and why it is not renewed, and no kubelet starts on
    credentials the API server refuses. Once renewed, the kubelet starts."""
    notes, fake = Recording(), FakeKubelet()
    d, _ = make(tmp_path, notes, fake_kubelet=fake,
                kubelet={"manage": True, "command": ["/usr/bin/kubelet"]})  # fmt: skip
    expired = creds(["192.0.2.10"], days=1)  # not_before a day ago: expired right now
    joined(d, expired)
    down: WorkerResult = {
        "ok": False,
        "error": "no CFSSL server answered",
        "kind": "TransportError",
    }
    d.on_result(NOW, "enroll", down)
    d.decide(NOW)
    assert fake.calls == []  # nothing started on expired credentials
    d.publish(NOW)
    (ready,) = [n for n in notes.sent if "READY=1" in n]
    assert "cert EXPIRED 0s ago" in ready and "no CFSSL server answered" in ready
    doc = d.status_document(NOW)
    assert doc["agent"]["state"] == "starting"
    assert doc["waiting_for"] is not None  # not "null: working"
    d.on_result(NOW, "enroll", {"ok": True, "credentials": creds(["192.0.2.10"])})
    d.decide(NOW)
    assert fake.calls == ["start"]
    assert d.status_document(NOW)["agent"]["state"] == "running"
