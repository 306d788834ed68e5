"""`join-agent wait` and `join-agent reload`: their pure parts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from join_agent.verbs import reload, wait


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_wait_returns_at_the_first_look_that_finds_the_node_joined() -> None:
    looks = iter([wait.Look(False, "no certificate"), wait.Look(True, "joined as n1")])
    clock = Clock()
    joined, said = wait.until_joined(
        lambda: next(looks), timeout=None, monotonic=clock.monotonic, sleep=clock.sleep
    )
    assert (joined, said) == (True, "joined as n1")
    assert clock.slept == [wait.INTERVAL.total_seconds()]


def test_wait_gives_up_at_the_timeout_and_says_why() -> None:
    clock = Clock()
    joined, said = wait.until_joined(
        lambda: wait.Look(False, "no certificate at /x: run `join-agent join`"),
        timeout=dt.timedelta(seconds=5),
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    assert not joined
    assert said == "not joined after 5s: no certificate at /x: run `join-agent join`"
    assert clock.now == 5.0  # the last sleep is cut to what is left, not a whole interval
    assert clock.slept == [2.0, 2.0, 1.0]


def test_a_look_is_joined_only_for_valid_credentials() -> None:
    assert wait.look_at("valid", "n1", "2027-01-01T00:00:00Z", "") == wait.Look(
        True, "joined as n1; the certificate is valid until 2027-01-01T00:00:00Z"
    )
    for verdict in ("not-joined", "expired", "not-yet-valid", "mismatched", "unreadable"):
        look = wait.look_at(verdict, "n1", None, "")
        assert not look.joined and verdict in look.says
    assert wait.look_at("expired", "n1", None, "it expired").says == "it expired"


def test_the_reload_verdict_is_the_first_record_after_the_signal() -> None:
    source = Path("/etc/join-agent/config.toml")
    assert reload.verdict(3, {"reload": {"count": 3, "ok": False}}, source) is None
    assert reload.verdict(0, None, source) is None
    assert reload.verdict(3, {"reload": {"count": 4, "ok": True}}, source) == (
        True,
        "reloaded /etc/join-agent/config.toml",
    )
    refused = reload.verdict(3, {"reload": {"count": 4, "ok": False, "message": "bad"}}, source)
    assert refused == (
        False,
        "the running agent refused the new config and keeps the old one: bad",
    )


def test_a_worker_document_of_another_version_is_a_failed_attempt() -> None:
    from join_agent.core import protocol

    assert protocol.worker_result({"schema": 1, "ok": True}, 0) == {"schema": 1, "ok": True}
    assert protocol.worker_result({"ok": True}, 0) == {"ok": True}  # before versions
    newer = protocol.worker_result({"schema": 2, "ok": True}, 0)
    assert newer["ok"] is False and newer["kind"] == "WorkerError"
    assert "protocol version 2, this daemon 1" in newer["error"]
    nothing = protocol.worker_result(None, 1)
    assert nothing["ok"] is False and "exited with status 1 and no result" in nothing["error"]


def test_renew_sees_a_renewal_that_ends_in_the_second_the_last_one_did() -> None:
    """`renew` waits for what a finished renewal changes. The time of the last success is
    to the second: a renewal asked for right after the join ended in the same second, and
    `renew` waited its whole timeout (a flaky system test found it). The serial tells."""
    from join_agent.core.records import StatusRecord
    from join_agent.verbs import renew

    at, until = "2026-12-06T17:05:49Z", "2027-12-06T17:05:49Z"

    def doc(serial: str, failures: int, *, busy: bool = False, error: str = "") -> StatusRecord:
        return {
            "renewal": {"last_success": at, "failures": failures, "in_progress": busy},
            "credentials": {"credentials": "/p", "serial": serial, "not_after": until},
            "last_error": {"message": error, "at": at, "kind": "TransportError"} if error else None,
        }

    before = renew._marks(doc("aa", 0))
    assert renew.outcome(before, doc("aa", 0), 7) is None
    assert renew.outcome(before, doc("bb", 0, busy=True), 7) is None  # not finished yet
    assert renew.outcome(before, doc("bb", 0), 7) == (
        True, f"renewed by the running daemon (pid 7): serial bb, valid until {until}"
    )  # fmt: skip
    # A failure in that same second: the count of failures moved.
    said = "the CA at http://ca:8888 did not answer"
    assert renew.outcome(before, doc("aa", 1, error=said), 7) == (
        False, f"join-agent: the renewal failed: {said}"
    )  # fmt: skip
