"""The certificates.k8s.io/v1 wire format: our request, and every shape of answer."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from join_agent.errors import CAResponseError, JoinAgentError
from join_agent.host.identity import Identity
from join_agent.pki import keys
from join_agent.signers.kubernetes import csr_api
from tests.lab.certs import CA, ec_key

NODE = Identity(name="node-1", dns_names=(), addresses=())


def _csr() -> x509.CertificateSigningRequest:
    return keys.build_csr(ec_key(), NODE)


def _obj(
    conditions: list[dict[str, str]] | None = None, cert: str | None = None
) -> dict[str, object]:
    status: dict[str, object] = {}
    if conditions is not None:
        status["conditions"] = conditions
    if cert is not None:
        status["certificate"] = cert
    return {
        "kind": "CertificateSigningRequest",
        "apiVersion": "certificates.k8s.io/v1",
        "metadata": {"name": "csr-abcde"},
        "spec": {},
        "status": status,
    }


def test_request_body_is_a_v1_csr_with_the_three_usages() -> None:
    csr = _csr()
    doc = json.loads(csr_api.request_body(csr, csr_api.CLIENT_SIGNER, csr_api.CLIENT_USAGES))
    assert doc["apiVersion"] == "certificates.k8s.io/v1"
    assert doc["kind"] == "CertificateSigningRequest"
    assert doc["metadata"] == {"generateName": "csr-"}
    assert doc["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    assert doc["spec"]["usages"] == ["digital signature", "key encipherment", "client auth"]
    sent = x509.load_pem_x509_csr(base64.b64decode(doc["spec"]["request"]))
    assert sent.public_bytes(serialization.Encoding.DER) == csr.public_bytes(
        serialization.Encoding.DER
    )


def test_outcome_pending_approved_issued() -> None:
    leaf = CA.create().issue(ec_key().public_key())
    pem = base64.b64encode(leaf.public_bytes(serialization.Encoding.PEM)).decode()
    approved = [{"type": "Approved", "status": "True", "reason": "AutoApproved"}]
    assert csr_api.outcome(_obj(), "x").state == "pending"
    assert csr_api.outcome(_obj(approved), "x").state == "approved"
    done = csr_api.outcome(_obj(approved, pem), "x")
    assert done.state == "issued"
    assert done.certificates == (leaf,)
    assert done.name == "csr-abcde"


def test_denied_and_failed_win_over_approved() -> None:
    both = [
        {"type": "Approved", "status": "True"},
        {"type": "Denied", "status": "True", "reason": "Nope", "message": "not\x1b[31m you"},
    ]
    out = csr_api.outcome(_obj(both, "AAAA"), "x")
    assert (out.state, out.reason) == ("denied", "Nope")
    assert "\x1b" not in out.message
    failed = csr_api.outcome(_obj([{"type": "Failed", "status": "True"}]), "x")
    assert failed.state == "failed"
    # A condition whose status is "False" does not count.
    assert csr_api.outcome(_obj([{"type": "Denied", "status": "False"}]), "x").state == "pending"


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"kind": "Status"},
        _obj([{"type": "Approved", "status": "True"}], "not base64!"),
        _obj([{"type": "Approved", "status": "True"}], base64.b64encode(b"no pem").decode()),
        _obj([{"type": "Approved", "status": "True"}], 42),  # type: ignore[arg-type]
        {"kind": "CertificateSigningRequest", "status": {"conditions": "Approved"}},
    ],
)
def test_wrong_shapes_are_one_sentence_errors(doc: object) -> None:
    with pytest.raises(CAResponseError):
        csr_api.outcome(doc, "the API server")


def test_status_message_is_bounded_and_printable() -> None:
    body = json.dumps({"kind": "Status", "message": "x" * 1000 + "\n"}).encode()
    assert len(csr_api.status_message(body)) == 200
    assert csr_api.status_message(b"<html>") == ""


def test_urls_escape_the_name() -> None:
    assert csr_api.watch_url("https://h:6443/", "csr-a", 30) == (
        "https://h:6443/apis/certificates.k8s.io/v1/certificatesigningrequests"
        "?fieldSelector=metadata.name%3Dcsr-a&watch=true&timeoutSeconds=30"
    )
    assert csr_api.object_url("https://h", "a/b").endswith("/certificatesigningrequests/a%2Fb")


@given(st.binary(max_size=300))
def test_garbage_answers_raise_only_our_errors(body: bytes) -> None:
    try:
        csr_api.outcome(csr_api.parse_object(body, "x"), "x")
    except JoinAgentError as e:
        assert str(e)
    try:
        csr_api.watch_event(body, "x")
    except JoinAgentError as e:
        assert str(e)
