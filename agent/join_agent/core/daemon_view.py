"""What the daemon adds to the files' verdict (pure): the agent, renewal and kubelet parts
of the report from its record, and what it reports wrong, which makes a healthy node
"degraded" and never better than the files say (core/judging.py judges the files)."""

from __future__ import annotations

import datetime as dt

from join_agent import TYPE_CHECKING
from join_agent.core import schedule
from join_agent.core.durations import format_duration
from join_agent.core.judging import EXIT_DEGRADED, EXIT_HEALTHY, Report, expired_advice
from join_agent.core.wire import iso, parse_iso

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts
    from join_agent.core.records import (
        KubeletPart,
        KubeletRecord,
        RenewalPart,
        StatusRecord,
        StatusReport,
    )


def renew_at(f: CredentialFacts) -> dt.datetime | None:
    """The certificate's renewal deadline, as the daemon's renewal policy draws it."""
    cert = schedule.held(f)
    return None if cert is None else schedule.renew_at(cert)


def overlay(
    report: Report,
    *,
    recorded: StatusRecord | None,
    agent_running: bool,
    manage_kubelet: bool,
    healthz: str | None,
    overdue_after: dt.timedelta,
    now: dt.datetime,
    facts: CredentialFacts,
    start_hint: str,
    log_hint: str,
) -> Report:
    """Add what the daemon knows (pure); anything it reports wrong makes a healthy node
    "degraded" (exit 1), never better than the files say. ``start_hint`` and ``log_hint``:
    how this platform starts the service and shows its log, for the advice."""
    rec = recorded or {}
    deadline = renew_at(facts)
    doc: StatusReport = {
        **report.doc,
        **_daemon_parts(rec, agent_running, manage_kubelet, healthz, deadline),
    }
    degraded = _degradations(
        report, rec, doc["kubelet"], agent_running=agent_running, manage_kubelet=manage_kubelet,
        healthz=healthz, late=deadline is not None and now > deadline + overdue_after,
        overdue=None if deadline is None else now - deadline, start_hint=start_hint,
    )  # fmt: skip
    problems = [*report.problems, *degraded]
    if agent_running and report.state == "expired":
        problems = _while_renewing(problems, facts, rec, now, log_hint)
    code = report.exit_code
    if code == EXIT_HEALTHY and degraded:
        code = EXIT_DEGRADED
    doc["problems"] = problems
    doc["health"] = {EXIT_HEALTHY: "healthy", EXIT_DEGRADED: "degraded"}.get(code, "broken")
    return Report(state=report.state, exit_code=code, problems=tuple(problems), doc=doc)


def _daemon_parts(
    rec: StatusRecord,
    agent_running: bool,
    manage_kubelet: bool,
    healthz: str | None,
    deadline: dt.datetime | None,
) -> StatusReport:
    """The keys of the report that come from the daemon's record (docs/status.md)."""
    agent = rec.get("agent") or {}
    return {
        "agent": {
            "running": agent_running,
            "pid": agent.get("pid") if agent_running else None,
            "version": agent.get("version") if agent_running else None,
            "state": agent.get("state") if agent_running else "not running",
            "started_at": agent.get("started_at") if agent_running else None,
        },
        "signer": rec.get("signer"),
        "renewal": _renewal_part(rec, deadline),
        "last_error": rec.get("last_error"),
        "kubelet": _kubelet_part(
            (rec.get("kubelet") or {}) if agent_running else {}, healthz, managed=manage_kubelet
        ),
    }


def _renewal_part(rec: StatusRecord, deadline: dt.datetime | None) -> RenewalPart:
    recorded = rec.get("renewal") or {}
    return {
        **recorded,  # and the keys of a newer daemon's, as it recorded them
        "renew_at": None if deadline is None else iso(deadline),
        "next_attempt": recorded.get("next_attempt"),
        "failures": recorded.get("failures"),
        "last_attempt": recorded.get("last_attempt"),
        "last_success": recorded.get("last_success"),
        "last_ok": recorded.get("last_ok"),
        "reason": recorded.get("reason"),
        "in_progress": recorded.get("in_progress"),
    }


def _kubelet_part(k: KubeletRecord, healthz: str | None, *, managed: bool) -> KubeletPart:
    """``k``: the kubelet as the daemon recorded it; {} when the daemon is not running."""
    return {
        "managed": managed,
        "state": k.get("state"),
        "pid": k.get("pid"),
        "restarts": k.get("restarts"),
        "consecutive_failures": k.get("consecutive_failures"),
        "since": k.get("since"),
        "last_exit": k.get("last_exit"),
        "last_error": k.get("last_error"),
        "next_start": k.get("next_start"),
        "restart_delay": k.get("restart_delay"),
        "healthz": healthz,
    }


def _while_renewing(
    problems: list[str], facts: CredentialFacts, rec: StatusRecord, now: dt.datetime, log: str
) -> list[str]:
    """The expiry's advice while the daemon runs: it is renewing already, and a `join`
    would only race it; where to look instead."""
    na = parse_iso(facts["not_after"]) if facts.get("not_after") else None
    if na is None:
        return problems
    retrying = (
        f"the certificate expired {format_duration(now - na)} ago; join-agent run is "
        f"renewing it{_next_try(rec)}: see its log ({log})"
    )
    return [retrying if p == expired_advice(now, na) else p for p in problems]


def _next_try(rec: StatusRecord) -> str:
    renewal = rec.get("renewal") or {}
    failures, at = renewal.get("failures") or 0, renewal.get("next_attempt")
    said = f"{failures} failed attempt{'s' if failures != 1 else ''}" if failures else ""
    if at:
        said += f"{', ' if said else ''}next at {at}"
    return f" ({said})" if said else ""


def _degradations(
    report: Report,
    rec: StatusRecord,
    kubelet: KubeletPart,
    *,
    agent_running: bool,
    manage_kubelet: bool,
    healthz: str | None,
    late: bool,
    overdue: dt.timedelta | None,
    start_hint: str,
) -> list[str]:
    """What the daemon reports wrong: anything here makes a healthy node degraded."""
    degraded: list[str] = []
    if not agent_running:
        degraded.append(
            "join-agent run is not running, so nothing renews the certificate: "
            f"start the service ({start_hint})"
        )
    if report.state == "valid" and late and overdue is not None:
        degraded.append(f"renewal is overdue (it was due {format_duration(overdue)} ago)")
    err = rec.get("last_error")
    if rec.get("renewal", {}).get("last_ok") is False and err:
        degraded.append(f"the last renewal failed at {err.get('at')}: {err.get('message')}")
    reload = rec.get("reload") or {}
    if agent_running and reload.get("ok") is False:
        # The config on disk is not what runs: on illumos (svcadm refresh cannot fail) this
        # is where an operator sees it.
        degraded.append(
            f"the running agent refused the config on disk at {reload.get('at')} and runs "
            f"the previous one: {reload.get('message')}"
        )
    if manage_kubelet and agent_running and report.state == "valid":
        if kubelet["state"] not in ("starting", "running") or kubelet["consecutive_failures"]:
            degraded.append(_kubelet_trouble(kubelet))
        elif healthz is not None and healthz != "ok" and kubelet["state"] == "running":
            # While "starting" the kubelet may not have bound its port yet: only one that
            # has stayed up for stable_after and still fails the probe is at fault.
            degraded.append(f"the kubelet's healthz check failed: {healthz}")
    return degraded


def _kubelet_trouble(k: KubeletPart) -> str:
    """One sentence for a kubelet that is not steadily up."""
    failures = k.get("consecutive_failures") or 0
    if k.get("state") == "backoff":
        text = f"the kubelet keeps exiting ({failures} time(s) in a row)"
    elif failures:
        text = f"the kubelet exited {failures} time(s) in a row and is {k.get('state')} again"
    else:
        text = f"the kubelet is {k.get('state') or 'not started'}"
    last = k.get("last_error") or (
        None if k.get("last_exit") is None else f"exit status {k['last_exit']}"
    )
    if last:
        text += f"; last: {last}"
    if k.get("state") == "backoff" and k.get("next_start"):
        text += f"; next start at {k['next_start']}"
    return text
