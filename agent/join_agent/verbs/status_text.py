"""``join-agent status`` as people and scripts read it: the JSON document (keys are an API,
docs/status.md) and the text report."""

from __future__ import annotations

import datetime as dt
import json

from join_agent import TYPE_CHECKING
from join_agent.core.durations import format_duration
from join_agent.core.judging import Report
from join_agent.core.wire import parse_iso

if TYPE_CHECKING:
    from join_agent.core.records import StatusReport


def render_json(report: Report) -> str:
    return json.dumps(report.doc, indent=2, sort_keys=True) + "\n"


def render_text(report: Report) -> str:
    """What a person reads at a glance."""
    d = report.doc
    health = d.get("health")
    lines = [f"State:        {report.state}" + (f", {health}" if health else "")]
    if d.get("node"):
        lines.append(f"Node:         {d['node']}")
    lines += _certificate_lines(report)
    for ca in d.get("ca") or []:
        lines.append(f"CA:           {ca['subject']} {ca['pin']} (until {ca['not_after'][:10]})")
    kc = d["kubeconfig"]
    if kc.get("present"):
        lines.append(f"Kubeconfig:   {kc['path']} (server {kc.get('server') or '?'})")
    lines += _extra_lines(d)
    lines += _daemon_lines(d)
    err, renewal = d.get("last_error"), d.get("renewal")
    if err and (not renewal or renewal.get("last_ok") is not False):
        # A failure that is not the latest outcome: history, not a problem (those are below).
        lines.append(f"Last error:   {err.get('message')} (at {err.get('at')}, recovered since)")
    lines += [f"Problem:      {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


def _certificate_lines(report: Report) -> list[str]:
    """The client certificate, once judged (its fields are null until then)."""
    d = report.doc
    cert = d["certificate"]
    seconds, not_after, sans = cert["seconds_left"], cert["not_after"], cert["sans"]
    if not cert.get("present") or seconds is None or not_after is None or sans is None:
        return []
    left = _left(seconds)
    if report.state == "not-yet-valid":  # not "VALID: n days" beside that verdict
        left = f"NOT VALID YET: from {cert['not_before']}"
    expires = f"Expires:      {not_after[:10]} ({left}"
    renewal = d.get("renewal")
    renew_at = renewal.get("renew_at") if renewal else None
    if renew_at and seconds > 0 and report.state != "not-yet-valid":
        expires += f", {_renews(renew_at, d['checked_at'])}"
    return [
        expires + ")",
        f"Certificate:  {cert['path']}",
        f"Subject:      {cert['subject']}",
        f"Issuer:       {cert['issuer']}",
        f"SANs:         {', '.join(sans['dns'] + sans['ip']) or '(none)'}",
        f"Serial:       {cert['serial']}",
    ]


def _extra_lines(d: StatusReport) -> list[str]:
    """The serving certificate and the [[certificate]] tables."""
    lines: list[str] = []
    served = d.get("serving")
    if served:
        text = str(served.get("state"))
        if served.get("state") == "pending":
            text = f"serving certificate {served.get('message')}"
        elif served.get("present"):
            text += f", valid until {str(served.get('not_after'))[:10]}"
        lines.append(f"Serving:      {text}")
    for c in d.get("certificates") or []:
        text = f"{c.get('name')}: {c.get('state')}"
        if c.get("not_after"):
            text += f", until {str(c['not_after'])[:16]}Z"
        action = c.get("action") or {}
        if action.get("kind"):
            ok = "pending" if action.get("pending") else "ok" if action.get("ok") else "-"
            text += f", {action['kind']} {ok}"
        if c.get("state") == "removed":
            text += f" ({c.get('message')})"
        lines.append(f"Certificate:  {text}")
    return lines


def _daemon_lines(d: StatusReport) -> list[str]:
    lines = []
    kubelet, agent = d.get("kubelet"), d.get("agent")
    if kubelet and kubelet.get("managed") and not (agent and agent.get("running")):
        lines.append("Kubelet:      not supervised (join-agent run is not running)")
    elif kubelet and kubelet.get("managed"):
        parts = [kubelet.get("state") or "unknown"]
        if kubelet.get("pid"):
            parts.append(f"pid {kubelet['pid']}")
        if kubelet.get("restarts") is not None:
            parts.append(f"{kubelet['restarts']} restarts")
        if kubelet.get("since"):
            parts.append(f"since {kubelet['since']}")
        if kubelet.get("healthz"):
            parts.append(f"healthz {kubelet['healthz']}")
        lines.append(f"Kubelet:      {', '.join(parts)}")
    if agent:
        parts = ["running" if agent["running"] else "NOT RUNNING"]
        if agent.get("pid"):
            parts.append(f"pid {agent['pid']}")
        if agent.get("version"):
            parts.append(f"version {agent['version']}")
        lines.append(f"Agent:        {', '.join(parts)}")
    return lines


def _left(seconds: int) -> str:
    if seconds <= 0:
        return f"EXPIRED {format_duration(dt.timedelta(seconds=-seconds))} ago"
    if seconds >= 86400:
        return f"VALID: {seconds // 86400} days"
    return f"VALID: {format_duration(dt.timedelta(seconds=seconds))}"


def _renews(renew_at: str, checked_at: str) -> str:
    delta = parse_iso(renew_at) - parse_iso(checked_at)
    if delta.total_seconds() <= 0:
        return "renewal due"
    days = int(delta.total_seconds() // 86400)
    return f"renews in {days} days" if days >= 1 else f"renews in {format_duration(delta)}"


NAGIOS_STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def render_nagios(report: Report) -> str:
    """One line in the Monitoring Plugins format: ``SERVICE STATUS: text | perfdata``,
    the status being the exit code's name (0 OK, 1 WARNING, 2 CRITICAL); docs/status.md."""
    d = report.doc
    cert = d["certificate"]
    seconds = cert.get("seconds_left")
    renewal = d.get("renewal")
    failures = (renewal.get("failures") if renewal else None) or 0
    text = report.state
    if seconds is not None and report.state == "valid":
        days = seconds // 86400
        text += f", expires in {days} days" if days else f", expires in {_left(seconds)[7:]}"
    if report.problems:
        text += f": {report.problems[0]}"
        if len(report.problems) > 1:
            text += f" (and {len(report.problems) - 1} more)"
    perf = [f"'seconds_left'={'U' if seconds is None else f'{seconds}s'};;;;"]
    perf.append(f"'renewal_failures'={failures};;;0;")
    return f"JOIN-AGENT {NAGIOS_STATES[report.exit_code]}: {text} | {' '.join(perf)}\n"


def nagios_unknown(message: str) -> str:
    """What a plugin prints when it could not look at all (exit 3)."""
    return f"JOIN-AGENT UNKNOWN: {message}\n"
