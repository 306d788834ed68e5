"""compat: the cryptography-38 shims (PEM bundles, aware validity dates)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from join_agent.pki import compat
from join_agent.pki.keys import key_pem
from tests.lab.certs import CA, NOW, cert_pem


def bundle(*cas: CA) -> bytes:
    return b"".join(cert_pem(c.cert) for c in cas)


def test_loads_every_certificate_in_order(ca: CA, rsa_ca: CA) -> None:
    certs = compat.load_pem_certificates(bundle(ca, rsa_ca))
    assert certs == [ca.cert, rsa_ca.cert]


def test_loads_a_bundle_with_crlf_line_endings(ca: CA, rsa_ca: CA) -> None:
    data = bundle(ca, rsa_ca).replace(b"\n", b"\r\n")
    assert b"\r\n" in data
    assert compat.load_pem_certificates(data) == [ca.cert, rsa_ca.cert]


def test_loads_a_bundle_without_trailing_newline(ca: CA, rsa_ca: CA) -> None:
    data = bundle(ca, rsa_ca).rstrip(b"\n")
    assert data.endswith(b"-----END CERTIFICATE-----")
    assert compat.load_pem_certificates(data) == [ca.cert, rsa_ca.cert]


def test_skips_text_and_keys_around_certificates(ca: CA, node_key: Any) -> None:
    data = b"# cluster CA\nsubject=CN=Test\n" + cert_pem(ca.cert) + b"\n\n" + key_pem(node_key)
    assert compat.load_pem_certificates(data) == [ca.cert]


def test_an_empty_bundle_has_no_certificates() -> None:
    assert compat.load_pem_certificates(b"") == []
    assert compat.load_pem_certificates(b"not a pem file\n") == []


def test_validity_dates_are_aware_utc() -> None:
    nb = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    # given in another zone: the certificate stores UTC, the shim must return UTC
    na = dt.datetime(2025, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    cert = CA.create(not_before=nb, not_after=na).cert
    before, after = compat.not_valid_before(cert), compat.not_valid_after(cert)
    for value in (before, after):
        assert value.tzinfo is not None
        assert value.utcoffset() == dt.timedelta(0)
    assert before == nb
    assert after == na
    assert after.hour == 3
    assert before < NOW < after  # comparable with aware datetimes without a TypeError
