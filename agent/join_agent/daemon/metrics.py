"""Optional Prometheus endpoint (``[metrics] listen``), fed from the status document.

prometheus_client is an optional extra (``join-agent[metrics]``); it is imported only
when metrics are turned on, so the resident process stays small otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from join_agent.core.wire import parse_iso
from join_agent.errors import ConfigError

if TYPE_CHECKING:
    from join_agent.core.records import StatusRecord


class Sink(Protocol):
    """What the daemon reports to: Prometheus, or nothing (NoMetrics)."""

    def update(self, doc: StatusRecord) -> None: ...

    def renewal(self, outcome: str, kind: str | None) -> None: ...

    def kubelet_restarted(self, times: int) -> None: ...


class NoMetrics:
    """``[metrics] listen`` unset: every report is dropped."""

    def update(self, doc: StatusRecord) -> None:
        pass

    def renewal(self, outcome: str, kind: str | None) -> None:
        pass

    def kubelet_restarted(self, times: int) -> None:
        pass


def for_listen(listen: str) -> Sink:
    """Serve Prometheus on ``listen`` (host:port), or nothing when it is empty."""
    return Metrics.serve(listen) if listen else NoMetrics()


class Metrics:
    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError(
                "metrics.listen is set but prometheus_client is not installed: install "
                "join-agent[metrics] (Debian: python3-prometheus-client) or unset it"
            ) from None
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.expiry = prom.Gauge(
            "join_agent_certificate_expiry_timestamp_seconds",
            "notAfter of the node's client certificate (Unix time)",
            registry=r,
        )
        self.next_renewal = prom.Gauge(
            "join_agent_next_renewal_timestamp_seconds",
            "When the agent next tries to renew (Unix time)",
            registry=r,
        )
        self.renewals = prom.Counter(
            "join_agent_renewals", "Renewal attempts by result", ["result"], registry=r
        )
        self.failures = prom.Counter(
            "join_agent_renewal_failures", "Failed renewals by reason", ["reason"], registry=r
        )
        self.kubelet_restarts = prom.Counter(
            "join_agent_kubelet_restarts", "Restarts of the managed kubelet", registry=r
        )
        self.kubelet_up = prom.Gauge(
            "join_agent_kubelet_up", "1 while the managed kubelet runs", registry=r
        )
        self.extra_expiry = prom.Gauge(
            "join_agent_extra_certificate_expiry_timestamp_seconds",
            "notAfter of each [[certificate]] (Unix time)",
            ["name"],
            registry=r,
        )
        self.extra_failing = prom.Gauge(
            "join_agent_extra_certificate_failing",
            "1 while a [[certificate]] cannot be renewed or its action keeps failing",
            ["name"],
            registry=r,
        )
        self._prom = prom

    @classmethod
    def serve(cls, listen: str) -> Metrics:
        host, _, port = listen.rpartition(":")
        if not port.isdigit() or not host:
            raise ConfigError(f"metrics.listen {listen!r} is not host:port (e.g. 127.0.0.1:9464)")
        m = cls()
        m._prom.start_http_server(int(port), addr=host.strip("[]"), registry=m.registry)
        return m

    def renewal(self, outcome: str, kind: str | None) -> None:
        """One renewal attempt: "success" or "failure" (with the error kind's name)."""
        self.renewals.labels(result=outcome).inc()
        if kind is not None:
            self.failures.labels(reason=kind or "unknown").inc()

    def kubelet_restarted(self, times: int) -> None:
        if times > 0:
            self.kubelet_restarts.inc(times)

    def update(self, doc: StatusRecord) -> None:
        cert = doc.get("credentials") or {}
        if cert.get("not_after"):
            self.expiry.set(parse_iso(cert["not_after"]).timestamp())
        nxt = (doc.get("renewal") or {}).get("next_attempt")
        if nxt:
            self.next_renewal.set(parse_iso(nxt).timestamp())
        kubelet = doc.get("kubelet") or {}
        self.kubelet_up.set(1 if kubelet.get("state") in ("starting", "running") else 0)
        for c in doc.get("certificates") or []:
            name = str(c.get("name"))
            not_after = c.get("not_after")
            if not_after:
                self.extra_expiry.labels(name=name).set(parse_iso(not_after).timestamp())
            failing = c.get("state") not in ("valid", "removed") or (c.get("action") or {}).get(
                "pending"
            )
            self.extra_failing.labels(name=name).set(1 if failing else 0)
