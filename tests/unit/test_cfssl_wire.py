"""The CFSSL wire format as we send it, checked at the byte level with httpx.MockTransport.

The integration tests prove a real cfssl accepts our requests; these pin down what is in
them (HMAC over the exact request bytes, standard base64, no ``subject``) and how each
kind of answer is classified.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from join_agent.config.model import CfsslConfig
from join_agent.errors import CAResponseError, TransportError, TrustError
from join_agent.host.identity import Identity
from join_agent.pki import keys, pinning
from join_agent.signers.cfssl import CfsslSigner
from tests.lab import certs

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
IDENTITY = Identity(name="n1", dns_names=("n1",), addresses=())


def _ca() -> certs.CA:
    now = dt.datetime.now(dt.timezone.utc)
    return certs.authority(
        "wire CA",
        key_usage=None,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=1),
    )


WIRE_CA = _ca()
CA = WIRE_CA.cert
CA_PEM = CA.public_bytes(serialization.Encoding.PEM).decode()


def _signer(
    handler: Callable[[httpx.Request], httpx.Response],
    urls: tuple[str, ...] = ("http://ca:8888",),
    pins: tuple[str, ...] | None = None,
) -> CfsslSigner:
    cfg = CfsslConfig(
        urls=urls,
        profile="kubelet",
        label="",
        auth_key_file=Path("/nonexistent"),
        ca_pins=(),
        insecure_skip_ca_pin=False,
    )
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return CfsslSigner(cfg, KEY, client, pins=pins if pins is not None else (pinning.spki_pin(CA),))


def _ok(result: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        200, json={"success": True, "result": result, "errors": [], "messages": []}
    )


def _csr() -> x509.CertificateSigningRequest:
    return keys.build_csr(certs.ec_key(), IDENTITY)


def test_authsign_token_is_hmac_over_the_exact_request_bytes() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/info"):
            seen["info"] = json.loads(request.content)
            return _ok({"certificate": CA_PEM})
        body = json.loads(request.content)
        seen["authsign"] = body
        return _ok({"certificate": CA_PEM})  # any parseable cert: verification is not here

    _signer(handler).sign(_csr(), IDENTITY)
    assert seen["info"] == {"profile": "kubelet"}
    body = seen["authsign"]
    assert set(body) == {"token", "request"}
    inner = base64.b64decode(body["request"], validate=True)
    token = base64.b64decode(body["token"], validate=True)
    assert token == hmac.new(KEY, inner, hashlib.sha256).digest()
    request = json.loads(inner)
    assert set(request) == {"certificate_request", "profile", "label", "hosts"}  # no "subject"
    assert request["hosts"] == ["n1"]
    assert request["profile"] == "kubelet"
    assert request["certificate_request"].startswith("-----BEGIN CERTIFICATE REQUEST-----")


def _error(status: int, message: str, code: int = 400) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/info"):
            return _ok({"certificate": CA_PEM})
        return httpx.Response(
            status,
            text=json.dumps(
                {
                    "success": False,
                    "result": None,
                    "errors": [{"code": code, "message": message}],
                    "messages": [],
                }
            ),
            headers={"Content-Type": "text/plain"},
        )

    return handler


@pytest.mark.parametrize(
    ("status", "message", "error", "sentence"),
    [
        (
            400,
            "invalid token",
            CAResponseError,
            "rejected our auth key (invalid token): check signer.cfssl.auth_key_file",
        ),
        (
            400,
            "no authentication provider",
            CAResponseError,
            "has no auth_key for profile 'kubelet'",
        ),
        (
            400,
            "Unable to parse authenticated sign request",
            CAResponseError,
            "refused /api/v1/cfssl/authsign: Unable to parse authenticated sign request (code 400)",
        ),
        (500, "boom", TransportError, "no CFSSL server answered: http://ca:8888 (failed (boom))"),
    ],
)
def test_error_envelopes_become_one_sentence(
    status: int, message: str, error: type[Exception], sentence: str
) -> None:
    with pytest.raises(error) as info:
        _signer(_error(status, message)).sign(_csr(), IDENTITY)
    assert sentence in str(info.value)
    assert "\n" not in str(info.value)


def test_a_refusal_is_not_retried_at_the_next_url() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return _error(400, "invalid token")(request)

    with pytest.raises(CAResponseError):
        _signer(handler, urls=("http://a:1", "http://b:2")).sign(_csr(), IDENTITY)
    assert all(c.startswith("http://a:1") for c in calls)


def test_a_pin_mismatch_is_fatal_even_with_more_urls() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return _ok({"certificate": CA_PEM})

    with pytest.raises(TrustError, match=r"which is not in signer\.cfssl\.ca_pins"):
        _signer(handler, urls=("http://a:1", "http://b:2"), pins=("sha256:" + "0" * 64,)).sign(
            _csr(), IDENTITY
        )
    assert calls == ["http://a:1/api/v1/cfssl/info"]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>not cfssl</html>"),
        httpx.Response(200, json=["a", "list"]),
        httpx.Response(200, json={"success": "yes"}),
        httpx.Response(200, json={"success": True, "result": "a string"}),
        httpx.Response(200, json={"success": True, "result": {"certificate": 42}}),
        httpx.Response(
            200,
            json={
                "success": True,
                "result": {
                    "certificate": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
                },
            },
        ),
    ],
)
def test_malformed_info_answers_are_clear_errors(response: httpx.Response) -> None:
    with pytest.raises((CAResponseError, TransportError)) as info:
        _signer(lambda r: response).fetch_ca()
    assert "the CA at http://ca:8888" in str(info.value)


def test_intermediate_under_a_pinned_root_is_accepted() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    inter = certs.authority(
        "intermediate",
        issuer=WIRE_CA,
        path_length=0,
        key_usage=None,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=1),
    ).cert
    bundle = inter.public_bytes(serialization.Encoding.PEM).decode() + CA_PEM
    ca, chain, _ = _signer(lambda r: _ok({"certificate": bundle})).fetch_ca()
    assert ca == inter
    assert chain == (inter, CA)
    # ...but the intermediate alone, without the pinned root in the bundle, is not.
    alone = inter.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(TrustError):
        _signer(lambda r: _ok({"certificate": alone})).fetch_ca()
