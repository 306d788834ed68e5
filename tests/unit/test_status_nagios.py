"""`status --nagios`: the Monitoring Plugins line (verbs/status_text.render_nagios)."""

from __future__ import annotations

import datetime as dt

from join_agent.core import judging
from join_agent.verbs import status_text
from tests.unit.test_machine import facts

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)


def test_a_healthy_node_is_ok_with_its_perfdata() -> None:
    report = judging.judge(facts(None), server="https://s", now=NOW)
    assert status_text.render_nagios(report) == (
        "JOIN-AGENT OK: valid, expires in 359 days | 'seconds_left'=31060800s;;;; "
        "'renewal_failures'=0;;;0;\n"
    )


def test_a_degraded_node_is_a_warning_and_a_broken_one_critical() -> None:
    report = judging.judge(facts(None), server="https://s", now=NOW)
    degraded = judging.with_part(report, {"serving": {"state": "off"}}, ["the kubelet is backoff"])
    degraded.doc["renewal"] = {
        "failures": 3, "renew_at": None, "next_attempt": None, "last_attempt": None,
        "last_success": None, "last_ok": False, "reason": None, "in_progress": False,
    }  # fmt: skip
    assert status_text.render_nagios(degraded) == (
        "JOIN-AGENT WARNING: valid, expires in 359 days: the kubelet is backoff | "
        "'seconds_left'=31060800s;;;; 'renewal_failures'=3;;;0;\n"
    )
    broken = judging.judge(facts("made elsewhere"), server="https://s", now=NOW)
    line = status_text.render_nagios(broken)
    assert line.startswith("JOIN-AGENT CRITICAL: mismatched: made elsewhere (or run ")
    assert line.endswith("| 'seconds_left'=31060800s;;;; 'renewal_failures'=0;;;0;\n")


def test_an_unjoined_node_has_no_seconds_left() -> None:
    report = judging.judge(
        {"credentials": "/p", "present": False, "kubeconfig": {"path": "/k", "present": False}},
        server="https://s",
        now=NOW,
    )
    line = status_text.render_nagios(report)
    assert line.startswith("JOIN-AGENT CRITICAL: not-joined: no certificate at /p")
    assert "(and 1 more)" in line and "'seconds_left'=U;;;;" in line
