"""Optional Prometheus endpoint (``[metrics] listen``), fed from the status document.

prometheus_client is an optional extra (``join-agent[metrics]``); it is imported only
when metrics are turned on, so the resident process stays small otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from join_agent.core.wire import parse_iso
from join_agent.errors import ConfigError, JoinAgentError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from join_agent.core.records import StatusRecord


class Sink(Protocol):
    """What the daemon reports to: Prometheus, or nothing (NoMetrics)."""

    def update(self, doc: StatusRecord) -> None: ...

    def renewal(self, outcome: str, kind: str | None) -> None: ...

    def kubelet_restarted(self, times: int) -> None: ...

    def serving_renewal(self, failed: bool) -> None: ...


class NoMetrics:
    """``[metrics] listen`` unset: every report is dropped."""

    def update(self, doc: StatusRecord) -> None:
        pass

    def renewal(self, outcome: str, kind: str | None) -> None:
        pass

    def kubelet_restarted(self, times: int) -> None:
        pass

    def serving_renewal(self, failed: bool) -> None:
        pass


def for_config(listen: str, textfile: Path | None) -> Sink:
    """Serve Prometheus on ``listen`` (host:port) and/or keep node_exporter's ``textfile``;
    nothing when neither is set."""
    if not listen and textfile is None:
        return NoMetrics()
    m = Metrics.serve(listen) if listen else Metrics()
    m.textfile = textfile
    return m


# node_exporter reads the textfile at each scrape; the TTL in it moves every second, so it
# is rewritten at most once a minute unless something else changed.
TEXTFILE_EVERY = 60.0


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
        from join_agent.daemon.endpoint import Health

        self.health = Health()  # what /healthz and /readyz answer from
        self.textfile: Path | None = None
        self._written: bytes | None = None  # the textfile's last content, the TTLs left out
        self._written_at = 0.0
        self.kubelet_compat = KubeletSeries()
        # A collector by its collect() method: prometheus_client 0.16 types it as its ABC.
        r.register(cast("Collector", self.kubelet_compat))
        self._prom = prom

    @classmethod
    def serve(cls, listen: str) -> Metrics:
        host, _, port = listen.rpartition(":")
        if not port.isdigit() or not host:
            raise ConfigError(f"metrics.listen {listen!r} is not host:port (e.g. 127.0.0.1:9464)")
        m = cls()
        from join_agent.daemon import endpoint

        app = m._prom.make_wsgi_app(m.registry)
        endpoint.serve(host.strip("[]"), int(port), app, m.health)
        return m

    def renewal(self, outcome: str, kind: str | None) -> None:
        """One renewal attempt: "success" or "failure" (with the error kind's name)."""
        self.renewals.labels(result=outcome).inc()
        if kind is not None:
            self.failures.labels(reason=kind or "unknown").inc()
        if outcome == "failure":
            self.kubelet_compat.client_errors += 1

    def serving_renewal(self, failed: bool) -> None:
        if failed:
            self.kubelet_compat.server_errors += 1

    def kubelet_restarted(self, times: int) -> None:
        if times > 0:
            self.kubelet_restarts.inc(times)

    def update(self, doc: StatusRecord) -> None:
        cert = doc.get("credentials") or {}
        if cert.get("not_after"):
            self.expiry.set(parse_iso(cert["not_after"]).timestamp())
        self.kubelet_compat.seen(doc)
        self.health.seen(doc)
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
        if self.textfile is not None:
            self._write_textfile(self.textfile)

    def _write_textfile(self, path: Path) -> None:
        import time

        data = self._prom.generate_latest(self.registry)
        steady = b"\n".join(line for line in data.splitlines() if b"_ttl_seconds " not in line)
        now = time.monotonic()
        if steady == self._written and now - self._written_at < TEXTFILE_EVERY:
            return
        from join_agent.storage import files

        try:
            files.atomic_write(path, data, 0o644)
        except (OSError, JoinAgentError) as e:
            from join_agent.log import get_logger

            get_logger("join_agent.daemon").warning(
                "textfile_not_written", path=str(path), error=str(e)
            )
        self._written, self._written_at = steady, now


class KubeletSeries:
    """The kubelet's own certificate-manager series, which the stock kubernetes-mixin
    alerts read (docs/monitoring.md): with join-agent holding the certificates the
    kubelet's are absent, and those alerts would go silent instead of firing.

    Same names, units and meaning as kubelet v1.20's (cmd/kubelet/app/server.go:853-868,
    pkg/kubelet/certificate/kubelet.go:58-66, 131-148, 212-221), with two differences
    docs/monitoring.md explains: the error counts are exposed untyped, since a counter
    without "_total" is what the alerts match and what prometheus_client and promtool
    refuse; and an expired certificate's TTL is negative, as the kubelet's help text
    says, where kubelet 1.20 shows +Inf and the expiry alert stops firing. The server
    series appear only while join-agent keeps the serving certificate.
    """

    def __init__(self) -> None:
        self.client_not_after: float | None = None
        self.server_not_after: float | None = None
        self.serving = False
        self.client_errors = 0
        self.server_errors = 0

    def seen(self, doc: StatusRecord) -> None:
        cert = doc.get("credentials") or {}
        ours = cert.get("present") and not cert.get("foreign") and cert.get("not_after")
        self.client_not_after = parse_iso(cert["not_after"]).timestamp() if ours else None
        serving = doc.get("serving")
        self.serving = serving is not None and serving.get("state") != "off"
        na = (serving or {}).get("not_after") if self.serving else None
        self.server_not_after = parse_iso(na).timestamp() if na else None

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily, UnknownMetricFamily

        yield GaugeMetricFamily(
            "kubelet_certificate_manager_client_ttl_seconds", _CLIENT_TTL_HELP,
            value=_ttl(self.client_not_after),
        )  # fmt: skip
        yield UnknownMetricFamily(
            "kubelet_certificate_manager_client_expiration_renew_errors", _ERRORS_HELP,
            value=self.client_errors,
        )  # fmt: skip
        if self.serving:
            yield GaugeMetricFamily(
                "kubelet_certificate_manager_server_ttl_seconds", _SERVER_TTL_HELP,
                value=_ttl(self.server_not_after),
            )  # fmt: skip
            yield UnknownMetricFamily(
                "kubelet_server_expiration_renew_errors", _ERRORS_HELP, value=self.server_errors
            )


def _ttl(not_after: float | None) -> float:
    import math
    import time

    # math.trunc as the kubelet does; +Inf without a certificate of this node's own.
    return math.inf if not_after is None else float(math.trunc(not_after - time.time()))


_CLIENT_TTL_HELP = (
    "Seconds until the node's client certificate expires (negative once expired; +Inf "
    "without one), as the kubelet's certificate manager reports it; from join-agent"
)
_SERVER_TTL_HELP = (
    "Seconds until the kubelet's serving certificate expires (negative once expired; +Inf "
    "without one), as the kubelet's certificate manager reports it; from join-agent"
)
_ERRORS_HELP = "Failed certificate renewals since join-agent started (the kubelet's counter)"
