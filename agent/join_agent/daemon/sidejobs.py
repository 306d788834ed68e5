"""The daemon's two side jobs, besides the node's own certificate: the kubelet's serving
certificate (Kubernetes signer, ``serving = true``) and the ``[[certificate]]`` tables. What
each last reported, and when each is next looked at; the workers do the work."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from join_agent.core.wire import parse_iso
from join_agent.log import get_logger

if TYPE_CHECKING:
    from join_agent.config.model import Config
    from join_agent.core.protocol import WorkerResult
    from join_agent.core.records import ServingReport, TableReport
    from join_agent.daemon.kubelet_ctl import KubeletControl
    from join_agent.daemon.metrics import Sink

log = get_logger("join_agent.daemon")


@dataclass
class SideJobs:
    serving: ServingReport | None = None  # the serving certificate's last report
    serving_next: dt.datetime | None = None  # when to look at it again (None: at once)
    extras: list[TableReport] | None = None  # the [[certificate]] reports
    extras_next: dt.datetime | None = None
    extras_pass_pending: bool = False  # the tables changed: one pass at once

    def due(self, now: dt.datetime, *, serving: bool, extras: bool, joined: bool) -> str | None:
        """The worker mode due now, if any. ``serving`` and ``extras`` say whether each job
        is wanted; never the serving certificate before the node has joined."""
        if serving and joined and now >= (self.serving_next or now):
            return "serving"
        if self.extras_wanted(extras) and now >= (self.extras_next or now):
            return "certificates"
        return None

    def extras_wanted(self, has_tables: bool) -> bool:
        # After the last table is removed, one more pass reports what was left on disk.
        return has_tables or self.extras_pass_pending

    def next_wake(self, *, serving: bool, extras: bool) -> list[dt.datetime]:
        times = []
        if self.serving_next is not None and serving:
            times.append(self.serving_next)
        if self.extras_next is not None and self.extras_wanted(extras):
            times.append(self.extras_next)
        return times

    def absorb(
        self, now: dt.datetime, mode: str, result: WorkerResult, cfg: Config, *,
        kubelet: KubeletControl, metrics: Sink,
    ) -> bool:  # fmt: skip
        """What a worker reported of the side jobs (an ``enroll`` brings the serving
        certificate too); True when it was a side job's worker, with no news of the node's
        own pair beyond its facts."""
        retry = {"retry_min": cfg.renewal.retry_min, "retry_max": cfg.renewal.retry_max}
        report = result.get("serving")
        if isinstance(report, dict):
            self.serving_reported(now, report, **retry)
            metrics.serving_renewal(report.get("state") in ("denied", "error"))
            if report.get("state") in ("pending", "denied", "error"):
                log.info(
                    "serving_certificate", state=report.get("state"), msg=report.get("message")
                )
            if report.get("rotated"):
                reason = "it serves the rotated serving certificate"
                kubelet.serving_rotated(now, reason, cfg.kubelet.restart_on_serving_rotation)
        elif mode == "serving":
            self.serving_failed(now, cfg.renewal.retry_max)
            metrics.serving_renewal(True)
        if mode == "certificates":
            for r in self.tables_reported(now, result.get("certificates"), **retry):
                log.warning("certificate_attention", name=r.get("name"), state=r.get("state"))
        return mode in ("serving", "certificates")

    def addresses_changed(self) -> None:
        """The serving certificate and tables with node_addresses name them: look now."""
        self.serving_next = self.extras_next = None

    def tables_changed(self) -> None:
        """New tables are issued at once; removed ones are reported (files left alone)."""
        self.extras_next, self.extras_pass_pending = None, True

    def serving_reported(
        self, now: dt.datetime, report: ServingReport, *, retry_min: dt.timedelta,
        retry_max: dt.timedelta,
    ) -> None:  # fmt: skip
        """Soon again while a request waits for approval, at its renewal point once the
        certificate is current."""
        self.serving = report
        self.serving_next = now + retry_max
        renew_at = report.get("renew_at")
        if report.get("state") == "current" and renew_at:
            self.serving_next = max(parse_iso(renew_at), now + retry_min)

    def serving_failed(self, now: dt.datetime, retry_max: dt.timedelta) -> None:
        """The worker died before it could report: not at once again."""
        self.serving_next = now + retry_max

    def tables_reported(
        self, now: dt.datetime, reports: list[TableReport] | None, *, retry_min: dt.timedelta,
        retry_max: dt.timedelta,
    ) -> list[TableReport]:  # fmt: skip
        """Record a pass's reports; returns those that need attention (not valid, or an
        action pending). A pass that failed as a whole (no CA, no key) has no list."""
        if not isinstance(reports, list):
            self.extras_next = now + retry_max
            return []
        self.extras = reports
        self.extras_pass_pending = False
        times = [parse_iso(r["next_attempt"]) for r in reports if r.get("next_attempt")]
        self.extras_next = max(min(times), now + retry_min) if times else None
        return [
            r
            for r in reports
            if r.get("state") != "valid" or (r.get("action") or {}).get("pending")
        ]
