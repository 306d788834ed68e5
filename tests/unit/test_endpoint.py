"""/healthz and /readyz on the metrics listener (daemon/endpoint.py): what each says."""

from __future__ import annotations

import datetime as dt

from join_agent.core.records import StatusRecord
from join_agent.daemon import endpoint

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)


def test_healthz_is_the_loops_last_turn() -> None:
    assert endpoint.healthz(1000.0, None) == (500, "the daemon's loop has not run yet")
    assert endpoint.healthz(1000.0, 1000.0 - 959) == (200, "ok")  # 15 min and a minute's grace
    assert endpoint.healthz(1000.0, 1000.0 - 961) == (
        500,
        "the daemon's loop last ran 961 s ago (limit 960 s)",
    )


def doc(**credentials: object) -> StatusRecord:
    facts = {"present": True, "credentials": "/p", "not_before": "2026-12-01T00:00:00Z",
             "not_after": "2027-12-01T00:00:00Z", **credentials}  # fmt: skip
    return {"credentials": facts}  # type: ignore[typeddict-item]


def test_readyz_is_credentials_of_this_machines_valid_now() -> None:
    assert endpoint.readyz(doc(), NOW) == (200, "ok")
    assert endpoint.readyz(None, NOW) == (503, "not joined yet")
    assert endpoint.readyz(doc(present=False), NOW) == (503, "not joined yet")
    assert endpoint.readyz(doc(error="the key does not match"), NOW) == (
        503, "the credentials cannot be used: the key does not match",
    )  # fmt: skip
    assert endpoint.readyz(doc(foreign="…"), NOW)[0] == 503
    assert endpoint.readyz(doc(not_after="2026-12-06T11:59:59Z"), NOW) == (
        503, "the certificate expired at 2026-12-06T11:59:59Z",
    )  # fmt: skip
    assert endpoint.readyz(doc(not_before="2026-12-06T12:00:01Z"), NOW) == (
        503, "the certificate is valid only from 2026-12-06T12:00:01Z",
    )  # fmt: skip
