"""Judging the node's credentials (pure): from the facts about its files, and what the
daemon recorded, a verdict, an exit code and one sentence per problem. ``join-agent
status`` reads (verbs/status.py) and renders (verbs/status_text.py); this decides. The
report's JSON keys are an API (docs/status.md): add keys, never rename them.
"""

from __future__ import annotations

import datetime as dt
import math

from join_agent import TYPE_CHECKING
from join_agent.core.durations import format_duration
from join_agent.core.wire import iso, parse_iso

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts
    from join_agent.core.records import (
        CertificatePart,
        KubeconfigPart,
        ServingReport,
        StatusReport,
        TableReport,
    )

SCHEMA = 1  # the `status --json` report's (status.json has its own: core.wire.SCHEMA)
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_BROKEN = 0, 1, 2  # and cli.STATUS_UNKNOWN


class Report:
    """A verdict. A plain class: `status` loads this module on its fast path, where
    building a dataclass or a NamedTuple (and importing what they need) would cost more
    than judging does (docs/benchmarks.md)."""

    __slots__ = ("doc", "exit_code", "problems", "state")

    def __init__(
        self, *, state: str, exit_code: int, problems: tuple[str, ...], doc: StatusReport
    ) -> None:
        # "valid", "not-joined", "expired", "not-yet-valid", "mismatched", "unreadable"
        self.state = state
        self.exit_code = exit_code
        self.problems = problems
        self.doc = doc

    def __repr__(self) -> str:
        return (
            f"Report(state={self.state!r}, exit_code={self.exit_code}, problems={self.problems!r})"
        )


def judge(
    f: CredentialFacts,
    *,
    server: str,
    now: dt.datetime,
    node_name: str | None = None,
    clock_skew: dt.timedelta = dt.timedelta(0),
) -> Report:
    """Judge the credential facts at ``now`` (pure). ``node_name``: who this node should be;
    ``clock_skew``: how early a certificate may start, as ``join`` allowed it."""
    doc: StatusReport = {"schema": SCHEMA, "checked_at": iso(now)}
    verdict, problems, doc["certificate"] = _judge_certificate(f, now, node_name, clock_skew)
    doc["node"] = doc["certificate"]["node"]
    kc_verdict, kc_problems, doc["kubeconfig"] = _judge_kubeconfig(f, server)
    verdict = _worse(verdict, kc_verdict)
    problems += kc_problems
    ca_file = f.get("ca_file") or {}
    doc["ca_file"] = {
        "path": ca_file.get("path"),
        "present": ca_file.get("present"),
        "subjects": ca_file.get("subjects"),
    }
    doc["ca"] = list(f.get("ca") or [])
    ca_error = ca_file.get("error")
    if ca_error:
        problems.append(ca_error)
    elif f.get("present") and not ca_file.get("present"):
        problems.append(f"the CA file {ca_file.get('path')} is missing: run `join-agent join`")
    code = EXIT_HEALTHY if verdict == "valid" else EXIT_BROKEN
    if code == EXIT_HEALTHY and problems:
        code = EXIT_DEGRADED
    doc["state"] = verdict
    doc["problems"] = problems
    return Report(state=verdict, exit_code=code, problems=tuple(problems), doc=doc)


def _judge_certificate(  # noqa: PLR0911 - one verdict per rule, checked in order
    f: CredentialFacts, now: dt.datetime, node_name: str | None, clock_skew: dt.timedelta
) -> tuple[str, list[str], CertificatePart]:
    creds = f["credentials"]
    doc = _certificate_part(f, None)
    error = f.get("error")
    if error:
        verdict = "mismatched" if f.get("key_mismatch") else "unreadable"
        return verdict, [error], doc
    if not f.get("present"):
        return "not-joined", [f"no certificate at {creds}: run `join-agent join`"], doc
    nb, na = parse_iso(f["not_before"]), parse_iso(f["not_after"])
    # Rounded up: in its last second a valid certificate has 1 s left, never "0s" beside
    # a verdict of valid; 0 and less is exactly when it counts as expired (now >= na).
    doc = _certificate_part(f, math.ceil((na - now).total_seconds()))
    foreign = f.get("foreign")
    if foreign:
        return "mismatched", [f"{foreign} (or run `join-agent join`)"], doc
    if f.get("issued_by_ca_file") is False:
        return (
            "mismatched",
            [
                f"the certificate was not issued by a CA in {f['ca_file']['path']} "
                f"(issuer {f.get('issuer')}): run `join-agent join`"
            ],
            doc,
        )
    if node_name and doc["node"] != node_name:
        return (
            "mismatched",
            [
                f"the certificate is for node {doc['node']!r}, but this node is "
                f"{node_name!r}: run `join-agent join`"
            ],
            doc,
        )
    if now >= na:
        return "expired", [expired_advice(now, na)], doc
    if now + clock_skew < nb:
        return (
            "not-yet-valid",
            [f"the certificate is valid only from {iso(nb)}: check this node's clock"],
            doc,
        )
    return "valid", [], doc


def _certificate_part(f: CredentialFacts, seconds_left: int | None) -> CertificatePart:
    """The report's ``certificate``: every key always there (null when unknown: scripts
    index without guarding), the certificate's fields once it is judged (``seconds_left``)."""
    judged: CredentialFacts = f if seconds_left is not None else {}
    return {
        "path": f["credentials"],
        "present": bool(f.get("present")),
        "node": judged.get("node"),
        "subject": judged.get("subject"),
        "issuer": judged.get("issuer"),
        "serial": judged.get("serial"),
        "sans": judged.get("sans"),
        "not_before": judged.get("not_before"),
        "not_after": judged.get("not_after"),
        "seconds_left": seconds_left,
    }


def _judge_kubeconfig(f: CredentialFacts, server: str) -> tuple[str, list[str], KubeconfigPart]:
    creds = f["credentials"]
    kc = f.get("kubeconfig") or {}
    doc: KubeconfigPart = {
        "path": kc.get("path"),
        "present": bool(kc.get("present")),
        "current_context": kc.get("current_context"),
        "server": kc.get("server"),
        "user": kc.get("user"),
        "client_certificate": kc.get("client_certificate"),
        "client_key": kc.get("client_key"),
    }
    error = kc.get("error")
    if error:
        return "unreadable", [error], doc
    if not kc.get("present"):
        return "not-joined", [f"no kubeconfig at {kc.get('path')}: run `join-agent join`"], doc
    problems = []
    if doc["client_certificate"] != creds or doc["client_key"] != creds:
        problems.append(f"the kubeconfig does not point at {creds}")
    if server and doc["server"] != server:
        problems.append(f"the kubeconfig names server {doc['server']}, the config {server}")
    if kc.get("ca_matches") is False:
        problems.append(
            "the kubeconfig's CA data differs from the cluster CA "
            "(ca_file or cluster.ca_bundle): run `join-agent join`"
        )
    return ("mismatched" if problems else "valid"), problems, doc


def expired_advice(now: dt.datetime, not_after: dt.datetime) -> str:
    """The advice for an expired certificate where no daemon runs (overlay says what to do
    where one does)."""
    return (
        f"the certificate expired {format_duration(now - not_after)} ago: run "
        "`join-agent join` (or start the join-agent service)"
    )


def with_certificates(report: Report, extras: list[TableReport]) -> Report:
    """Add the ``[[certificate]]`` reports (pure): one that is not valid, or whose action
    keeps failing, makes the node degraded."""
    problems = []
    for c in extras:
        name = c.get("name")
        last_error = c.get("last_error")
        err = last_error.get("message") if last_error else None
        if c.get("state") in ("expired", "failing", "none"):
            problems.append(f"certificate {name} is {c.get('state')}" + (f": {err}" if err else ""))
        action = c.get("action") or {}
        if action.get("pending") and action.get("failures"):
            how = f"exit status {action['exit']}" if action.get("exit") is not None else "no exit"
            problems.append(
                f"certificate {name}: its {action.get('kind')} action failed "
                f"{action.get('failures')} time(s) ({how}): "
                f"{str(action.get('output') or '')[-200:]}"
            )
    return with_part(report, {"certificates": extras}, problems)


def with_part(report: Report, part: StatusReport, problems: list[str]) -> Report:
    """``report`` with ``part``'s keys; any of ``problems`` makes a healthy node degraded
    (pure)."""
    doc: StatusReport = {**report.doc, **part}
    code = report.exit_code
    if problems:
        doc["problems"] = [*report.problems, *problems]
        if code == EXIT_HEALTHY:
            code = EXIT_DEGRADED
            doc["health"] = "degraded"
    return Report(
        state=report.state, exit_code=code, problems=(*report.problems, *problems), doc=doc
    )


def with_serving(report: Report, served: ServingReport) -> Report:
    """Add the serving certificate (pure). Pending approval is normal, not a problem: the
    kubelet serves its self-signed certificate meanwhile; a refusal or an error is."""
    problems = []
    if served.get("state") in ("denied", "error"):
        problems.append(f"serving certificate: {served.get('message')}")
    return with_part(report, {"serving": served}, problems)


_ORDER = ("valid", "not-yet-valid", "mismatched", "expired", "not-joined", "unreadable")


def _worse(a: str, b: str) -> str:
    return a if _ORDER.index(a) >= _ORDER.index(b) else b
