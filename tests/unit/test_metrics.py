"""The Prometheus view of the status document: one series per fact, per certificate."""

from __future__ import annotations

import pytest

from join_agent.daemon.metrics import Metrics

prom = pytest.importorskip("prometheus_client")


def _sample(m: Metrics, series: str, **labels: str) -> float | None:
    value: float | None = m.registry.get_sample_value(series, labels or None)
    return value


def test_status_document_becomes_series() -> None:
    m = Metrics()
    m.update({
        "credentials": {"not_after": "2027-01-01T00:00:00Z"},
        "renewal": {"next_attempt": "2026-12-01T00:00:00Z"},
        "kubelet": {"state": "running"},
        "certificates": [
            {"name": "front-proxy", "state": "valid", "not_after": "2026-12-22T00:00:00Z",
             "action": {"pending": False}},
            {"name": "etcd-peer", "state": "valid", "not_after": "2027-02-01T00:00:00Z",
             "action": {"pending": True}},
            {"name": "old", "state": "removed"},
        ],
    })  # fmt: skip
    assert _sample(m, "join_agent_certificate_expiry_timestamp_seconds") == 1798761600.0
    assert _sample(m, "join_agent_kubelet_up") == 1.0
    assert (
        _sample(m, "join_agent_extra_certificate_expiry_timestamp_seconds", name="front-proxy")
        == 1797897600.0
    )
    assert _sample(m, "join_agent_extra_certificate_failing", name="front-proxy") == 0.0
    assert _sample(m, "join_agent_extra_certificate_failing", name="etcd-peer") == 1.0
    assert _sample(m, "join_agent_extra_certificate_failing", name="old") == 0.0


def _exposition(m: Metrics) -> str:
    text: str = prom.generate_latest(m.registry).decode()
    return text


def test_the_kubelets_certificate_series_under_their_own_names() -> None:
    """What the stock kubernetes-mixin alerts read (docs/monitoring.md): the kubelet's
    names exactly, no "_total" (untyped), +Inf without a certificate of this node's own,
    negative once expired, and the serving certificate's series only while it is kept."""
    import time

    m = Metrics()
    m.update({"credentials": {"present": False, "credentials": "/p"}, "serving": None})
    text = _exposition(m)
    assert "\nkubelet_certificate_manager_client_ttl_seconds +Inf\n" in text
    assert "# TYPE kubelet_certificate_manager_client_expiration_renew_errors untyped\n" in text
    assert "\nkubelet_certificate_manager_client_expiration_renew_errors 0.0\n" in text
    assert "_renew_errors_total" not in text and "kubelet_certificate_manager_server" not in text
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))
    m.update({
        "credentials": {"present": True, "not_after": soon},
        "serving": {"state": "current", "not_after": "2020-01-01T00:00:00Z"},
    })  # fmt: skip
    m.renewal("failure", "TransportError")
    m.renewal("success", None)
    m.serving_renewal(True)
    ttl = _sample(m, "kubelet_certificate_manager_client_ttl_seconds")
    assert ttl is not None and 3 * 86400 - 60 < ttl <= 3 * 86400
    assert _sample(m, "kubelet_certificate_manager_client_expiration_renew_errors") == 1.0
    server_ttl = _sample(m, "kubelet_certificate_manager_server_ttl_seconds")
    assert server_ttl is not None and server_ttl < 0  # expired: negative, as the help says
    assert _sample(m, "kubelet_server_expiration_renew_errors") == 1.0
    # Another machine's credentials are none of this node's: +Inf again.
    m.update({"credentials": {"present": True, "foreign": "…", "not_after": soon}})
    assert _sample(m, "kubelet_certificate_manager_client_ttl_seconds") == float("inf")
