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
