"""Self-test of the stand-in API server: its wire format, and that it misbehaves on cue.

The JWS is checked against values computed apart from it: Kubernetes' own jws.go test
vector, and HMAC-SHA256 by the ``openssl`` CLI; the CA pin against ``openssl pkey``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from join_agent.pki import compat
from tests.conftest import need

from .kube_apiserver import (
    APPROVED_NODE,
    APPROVED_SELF,
    CLIENT_SIGNER,
    CLUSTER_INFO_PATH,
    CSR_PATH,
    JWS_VECTOR,
    KUBERNETES_JWS_TEST_VECTOR,
    REJECTED,
    SERVING_SIGNER,
    StandinApiServer,
    b64url,
    cluster_info_kubeconfig,
    detached_jws,
)

TOKEN = "abcdef.0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CLIENT_USAGES = ["digital signature", "key encipherment", "client auth"]
SERVING_USAGES = ["digital signature", "key encipherment", "server auth"]
Make = Callable[..., StandinApiServer]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Start stand-ins (with TOKEN added); all are stopped after the test."""
    started: list[StandinApiServer] = []

    def start(**options: Any) -> StandinApiServer:
        server = StandinApiServer(tmp_path / f"api{len(started)}", **options)
        server.add_token(TOKEN)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def client(
    server: StandinApiServer, *, headers: dict[str, str] | None = None, cert: Path | None = None
) -> httpx.Client:
    """Trusts only the stand-in's CA; ``cert`` is a PEM file with certificate and key."""
    ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
    if cert is not None:
        ctx.load_cert_chain(cert)
    return httpx.Client(base_url=server.url, verify=ctx, headers=headers or {}, timeout=10)


def node_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_body(
    key: ec.EllipticCurvePrivateKey,
    node: str = "n1",
    *,
    signer: str = CLIENT_SIGNER,
    usages: list[str] | None = None,
    sans: list[x509.GeneralName] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
        ]
    )
    b = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name} if name else {"generateName": "csr-"},
        "spec": {
            "request": base64.b64encode(request).decode(),
            "signerName": signer,
            "usages": CLIENT_USAGES if usages is None else usages,
        },
    }


def create(c: httpx.Client, body: dict[str, Any]) -> str:
    r = c.post(CSR_PATH, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["metadata"]["name"])


def wait_for(
    server: StandinApiServer, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 5
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = server.csrs[name]
        if done(obj):
            return obj
        time.sleep(0.02)
    raise AssertionError(f"{name} never got there: {server.csrs[name]['status']}")


def conditions(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in obj["status"].get("conditions", [])]


def certificate(obj: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["certificate"]))


def has_cert(obj: dict[str, Any]) -> bool:
    return "certificate" in obj["status"]


def write_pair(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def spki(public: object) -> bytes:
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def openssl(*args: str, data: bytes) -> bytes:
    if not shutil.which("openssl"):
        need("openssl", "the independent HMAC / SPKI check runs the openssl CLI")
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def openssl_jws(content: str, token: str) -> str:
    """The detached JWS with the HMAC done by openssl; the header written out by hand."""
    token_id, secret = token.split(".")
    header = b64url(('{"alg":"HS256","kid":"' + token_id + '"}').encode())
    signing_input = f"{header}.{b64url(content.encode())}".encode()
    mac = openssl("dgst", "-sha256", "-hmac", secret, "-binary", data=signing_input)
    assert len(mac) == 32
    return f"{header}..{b64url(mac)}"


# -- JWS ----------------------------------------------------------------------------------


def test_detached_jws_reproduces_kubernetes_own_test_vector() -> None:
    content, token_id, secret, expected = KUBERNETES_JWS_TEST_VECTOR
    assert detached_jws(content, token_id, secret) == expected
    assert detached_jws(content, token_id, secret + "x") != expected


def test_jws_vector_is_what_openssl_computes() -> None:
    assert openssl_jws(JWS_VECTOR.kubeconfig, JWS_VECTOR.token) == JWS_VECTOR.jws
    token_id, secret = JWS_VECTOR.token.split(".")
    assert detached_jws(JWS_VECTOR.kubeconfig, token_id, secret) == JWS_VECTOR.jws
    header = JWS_VECTOR.jws.split(".")[0]
    assert base64.urlsafe_b64decode(header + "==") == b'{"alg":"HS256","kid":"abcdef"}'
    dummy_ca = b"-----BEGIN CERTIFICATE-----\nstand-in JWS test vector\n-----END CERTIFICATE-----\n"
    assert JWS_VECTOR.kubeconfig == cluster_info_kubeconfig("https://127.0.0.1:6443", dummy_ca)


# -- cluster-info -------------------------------------------------------------------------


def test_cluster_info_anonymous_with_kubeadm_kubeconfig_and_jws(make: Make) -> None:
    server = make()
    server.add_token("ghijkl.0123456789ghijkl", signing=False)
    with client(server) as c:
        r = c.get(CLUSTER_INFO_PATH)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert (doc["kind"], doc["apiVersion"]) == ("ConfigMap", "v1")
    assert doc["metadata"]["name"] == "cluster-info"
    assert doc["metadata"]["namespace"] == "kube-public"
    assert set(doc["data"]) == {"kubeconfig", "jws-kubeconfig-abcdef"}  # no non-signing token
    text = doc["data"]["kubeconfig"]
    kubeconfig = yaml.safe_load(text)
    assert kubeconfig["kind"] == "Config"
    assert kubeconfig["users"] is None and kubeconfig["contexts"] is None
    (cluster,) = kubeconfig["clusters"]
    assert cluster["name"] == ""
    assert cluster["cluster"]["server"] == server.url
    ca_pem = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    assert ca_pem == server.ca_pem
    assert doc["data"]["jws-kubeconfig-abcdef"] == openssl_jws(text, TOKEN)
    assert server.requests == [("GET", CLUSTER_INFO_PATH, "system:anonymous")]
    # the pin, with the SPKI cut out by openssl
    public_pem = server.ca_cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = openssl("pkey", "-pubin", "-outform", "der", data=public_pem)
    from_cert = openssl("x509", "-pubkey", "-noout", data=server.ca_pem)
    assert openssl("pkey", "-pubin", "-outform", "der", data=from_cert) == der
    assert server.ca_pin == "sha256:" + hashlib.sha256(der).hexdigest()


def test_cluster_info_serves_the_vector(make: Make) -> None:
    server = make()
    server.tokens.clear()
    server.add_token(JWS_VECTOR.token)
    server.cluster_info_kubeconfig = JWS_VECTOR.kubeconfig
    with client(server) as c:
        data = c.get(CLUSTER_INFO_PATH).json()["data"]
    assert data == {"jws-kubeconfig-abcdef": JWS_VECTOR.jws, "kubeconfig": JWS_VECTOR.kubeconfig}


def test_cluster_info_attacker_secret_and_tampering(make: Make) -> None:
    server = make()
    server.jws_secret_override["abcdef"] = "ffffffffffffffff"
    server.cluster_info_tamper_after = 1
    with client(server) as c:
        first = c.get(CLUSTER_INFO_PATH).json()["data"]
        second = c.get(CLUSTER_INFO_PATH).json()["data"]
    assert first["jws-kubeconfig-abcdef"] != openssl_jws(first["kubeconfig"], TOKEN)
    assert first["jws-kubeconfig-abcdef"] == openssl_jws(
        first["kubeconfig"], "abcdef.ffffffffffffffff"
    )
    server.jws_secret_override.clear()
    with client(server) as c:
        third = c.get(CLUSTER_INFO_PATH).json()["data"]
    assert second["kubeconfig"] != first["kubeconfig"]
    assert third["kubeconfig"] == second["kubeconfig"]
    assert third["jws-kubeconfig-abcdef"] == openssl_jws(third["kubeconfig"], TOKEN)
    ca = base64.b64decode(yaml.safe_load(third["kubeconfig"])["clusters"][0]["cluster"][
        "certificate-authority-data"
    ])  # fmt: skip
    assert ca != server.ca_pem
    assert server.cluster_info_gets == 3


def test_cluster_info_is_for_anonymous_only(make: Make) -> None:
    server = make()
    with client(server, headers=BEARER) as c:
        r = c.get(CLUSTER_INFO_PATH)
    assert r.status_code == 403
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "cluster-info" is forbidden: User "system:bootstrap:abcdef" '
        'cannot get resource "configmaps" in API group "" in the namespace "kube-public"',
        "reason": "Forbidden",
        "details": {"name": "cluster-info", "kind": "configmaps"},
        "code": 403,
    }


# -- CSRs -----------------------------------------------------------------------------------


def test_bootstrap_csr_watch_sees_added_then_approval_then_certificate(make: Make) -> None:
    server = make()
    key = node_key()
    with client(server, headers=BEARER) as c:
        r = c.post(CSR_PATH, json=csr_body(key))
        assert r.status_code == 201
        obj = r.json()
        name = obj["metadata"]["name"]
        assert name.startswith("csr-") and len(name) == 9
        assert obj["metadata"]["generateName"] == "csr-"
        assert obj["metadata"]["resourceVersion"].isdigit()
        assert obj["spec"]["username"] == "system:bootstrap:abcdef"
        assert {"system:bootstrappers", "system:authenticated"} <= set(obj["spec"]["groups"])
        assert obj["status"] == {}
        events = []
        params = {"watch": "true", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": "5"}
        with c.stream("GET", CSR_PATH, params=params) as w:
            assert w.status_code == 200
            assert w.headers["content-type"] == "application/json"
            assert w.headers["transfer-encoding"] == "chunked"
            for line in w.iter_lines():
                events.append(json.loads(line))
                if has_cert(events[-1]["object"]):
                    break
    kinds = [e["type"] for e in events]
    assert kinds == ["ADDED", "MODIFIED", "MODIFIED"]
    assert events[0]["object"]["kind"] == "CertificateSigningRequest"
    assert events[0]["object"]["apiVersion"] == "certificates.k8s.io/v1"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(set(rvs))
    (cond,) = events[1]["object"]["status"]["conditions"]
    assert cond["type"] == "Approved" and cond["status"] == "True"
    assert cond["reason"] == "AutoApproved" and cond["message"] == APPROVED_NODE
    assert {"lastUpdateTime", "lastTransitionTime"} <= set(cond)

    cert = certificate(events[-1]["object"])
    assert compat.signed_by(cert, server.ca_cert)
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    assert spki(cert.public_key()) == spki(key.public_key())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    now = dt.datetime.now(dt.timezone.utc)
    assert abs(compat.not_valid_before(cert) - (now - dt.timedelta(minutes=5))).total_seconds() < 10
    assert abs(compat.not_valid_after(cert) - (now + dt.timedelta(hours=1))).total_seconds() < 10
    assert [u for _, _, u in server.requests] == ["system:bootstrap:abcdef"] * 2


def test_watch_from_a_resource_version_replays_what_came_after(make: Make) -> None:
    server = make(approver="never")
    with client(server, headers=BEARER) as c:
        created = c.post(CSR_PATH, json=csr_body(node_key())).json()
        name = created["metadata"]["name"]
        server.deny(name)
        params = {
            "watch": "1",
            "resourceVersion": created["metadata"]["resourceVersion"],
            "timeoutSeconds": "1",
        }
        with c.stream("GET", CSR_PATH, params=params) as w:
            lines = list(w.iter_lines())
    (event,) = [json.loads(line) for line in lines]
    assert event["type"] == "MODIFIED"
    assert conditions(event["object"]) == [("Denied", "True", "KubectlDeny")]


def test_deny(make: Make) -> None:
    server = make(approver="deny")
    with client(server, headers=BEARER) as c:
        name = create(c, csr_body(node_key()))
        obj = wait_for(server, name, lambda o: bool(conditions(o)))
        time.sleep(0.3)
        got = c.get(f"{CSR_PATH}/{name}").json()
    assert conditions(obj) == [("Denied", "True", "KubectlDeny")]
    assert got["status"] == server.csrs[name]["status"]
    assert not has_cert(got)


def test_fail_is_approved_then_failed_without_certificate(make: Make) -> None:
    server = make(approver="fail")
    with client(server, headers=BEARER) as c:
        name = create(c, csr_body(node_key()))
    obj = wait_for(server, name, lambda o: len(conditions(o)) == 2)
    assert conditions(obj) == [
        ("Approved", "True", "AutoApproved"),
        ("Failed", "True", "SignerValidationFailure"),
    ]
    time.sleep(0.2)
    assert not has_cert(server.csrs[name])


def test_never_leaves_the_watch_to_time_out(make: Make) -> None:
    server = make(approver="never")
    with client(server, headers=BEARER) as c:
        name = create(c, csr_body(node_key()))
        params = {"watch": "true", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": "1"}
        start = time.monotonic()
        with c.stream("GET", CSR_PATH, params=params) as w:
            events = [json.loads(line) for line in w.iter_lines()]
        took = time.monotonic() - start
    assert [e["type"] for e in events] == ["ADDED"]
    assert 0.9 <= took < 3
    assert server.csrs[name]["status"] == {}


def test_auto_approver_ignores_what_the_kubernetes_approver_would(make: Make) -> None:
    """A client CSR with a SAN stays pending; a human approving it gets it failed."""
    server = make()
    key = node_key()
    with client(server, headers=BEARER) as c:
        with_san = create(c, csr_body(key, sans=[x509.DNSName("n1")]))
        ecdsa_1_27 = create(c, csr_body(key, usages=["digital signature", "client auth"]))
        good = create(c, csr_body(key))
    wait_for(server, good, has_cert)
    time.sleep(0.25)
    assert server.csrs[with_san]["status"] == {}
    assert server.csrs[ecdsa_1_27]["status"] == {}
    server.approve(with_san)
    obj = wait_for(server, with_san, lambda o: len(conditions(o)) == 2)
    assert conditions(obj)[1] == ("Failed", "True", "SignerValidationFailure")
    assert obj["status"]["conditions"][1]["message"] == "DNS subjectAltNames are not allowed"


def test_serving_csr_auto_approved_for_the_node_itself(make: Make, tmp_path: Path) -> None:
    server = make(serving_approver="auto")
    key = node_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = server.issue_client_cert("n1", key, not_before=now, not_after=now + dt.timedelta(1))
    sans: list[x509.GeneralName] = [
        x509.DNSName("n1.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
    ]
    body = csr_body(key, signer=SERVING_SIGNER, usages=SERVING_USAGES, sans=sans)
    with client(server, cert=write_pair(tmp_path / "n1.pem", cert, key)) as c:
        name = create(c, body)
    issued = certificate(wait_for(server, name, has_cert))
    san = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == sans
    eku = issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert conditions(server.csrs[name]) == [("Approved", "True", "AutoApproved")]
    # the same request from a bootstrap token is nobody's to approve
    with client(server, headers=BEARER) as c:
        pending = create(c, body)
    time.sleep(0.3)
    assert server.csrs[pending]["status"] == {}


def test_client_certificate_authentication_and_renewal(make: Make, tmp_path: Path) -> None:
    server = make()
    key = node_key()
    with client(server, headers=BEARER) as c:
        name = create(c, csr_body(key))
    pair = write_pair(tmp_path / "n1.pem", certificate(wait_for(server, name, has_cert)), key)
    new_key = node_key()
    with client(server, cert=pair) as c:
        assert c.get(f"{CSR_PATH}/{name}").status_code == 200
        renewal = create(c, csr_body(new_key))
        other_node = create(c, csr_body(new_key, "n2"))
    assert server.requests[-1][2] == "system:node:n1"
    obj = wait_for(server, renewal, has_cert)
    assert obj["spec"]["username"] == "system:node:n1"
    assert obj["spec"]["groups"] == ["system:nodes", "system:authenticated"]
    assert obj["status"]["conditions"][0]["message"] == APPROVED_SELF
    time.sleep(0.25)
    assert server.csrs[other_node]["status"] == {}  # selfnodeclient only covers oneself


def test_expired_client_certificate_is_401_unless_a_token_rescues_it(
    make: Make, tmp_path: Path
) -> None:
    server = make()
    key = node_key()
    now = dt.datetime.now(dt.timezone.utc)
    expired = server.issue_client_cert(
        "n1", key, not_before=now - dt.timedelta(days=2), not_after=now - dt.timedelta(days=1)
    )
    pair = write_pair(tmp_path / "old.pem", expired, key)
    with client(server, cert=pair) as c:
        r = c.get(CSR_PATH)
    assert r.status_code == 401
    assert r.json()["reason"] == "Unauthorized"
    assert server.requests[-1] == ("GET", CSR_PATH, REJECTED)
    with client(server, cert=pair, headers=BEARER) as c:
        assert c.get(CSR_PATH).status_code == 200


def test_error_statuses(make: Make) -> None:
    server = make()
    server.add_token("zzzzzz.0123456789abcdef", expired=True)
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    csrs = {"group": "certificates.k8s.io", "kind": "certificatesigningrequests"}
    unauthorized = {**status, "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    for bearer in ("zzzzzz.0123456789abcdef", "abcdef.0123456789abcdee", "garbage"):
        with client(server, headers={"Authorization": f"Bearer {bearer}"}) as c:
            r = c.get(CSR_PATH)
        assert (r.status_code, r.json()) == (401, unauthorized)

    with client(server) as c:
        r = c.post(CSR_PATH, json=csr_body(node_key()))
    assert r.status_code == 403
    assert r.json() == {
        **status,
        "message": "certificatesigningrequests.certificates.k8s.io is forbidden: User "
        '"system:anonymous" cannot create resource "certificatesigningrequests" in API group '
        '"certificates.k8s.io" at the cluster scope',
        "reason": "Forbidden",
        "details": csrs,
        "code": 403,
    }
    assert server.csrs == {}

    with client(server, headers=BEARER) as c:
        r = c.get(f"{CSR_PATH}/nope")
        assert (r.status_code, r.json()) == (
            404,
            {
                **status,
                "message": 'certificatesigningrequests.certificates.k8s.io "nope" not found',
                "reason": "NotFound",
                "details": {"name": "nope", **csrs},
                "code": 404,
            },
        )
        assert create(c, csr_body(node_key(), name="fixed")) == "fixed"
        r = c.post(CSR_PATH, json=csr_body(node_key(), name="fixed"))
        assert (r.status_code, r.json()) == (
            409,
            {
                **status,
                "message": 'certificatesigningrequests.certificates.k8s.io "fixed" already exists',
                "reason": "AlreadyExists",
                "details": {"name": "fixed", **csrs},
                "code": 409,
            },
        )
        body = csr_body(node_key(), name="bad", usages=[])
        del body["spec"]["signerName"]
        r = c.post(CSR_PATH, json=body)
    assert r.status_code == 422
    doc = r.json()
    assert doc["reason"] == "Invalid" and doc["code"] == 422
    assert doc["message"] == (
        'CertificateSigningRequest.certificates.k8s.io "bad" is invalid: [spec.signerName: '
        "Required value, spec.usages: Required value: usages must be provided]"
    )
    assert doc["details"] == {
        "name": "bad",
        "group": "certificates.k8s.io",
        "kind": "CertificateSigningRequest",
        "causes": [
            {
                "reason": "FieldValueRequired",
                "message": "Required value",
                "field": "spec.signerName",
            },
            {
                "reason": "FieldValueRequired",
                "message": "Required value: usages must be provided",
                "field": "spec.usages",
            },
        ],
    }
    assert set(server.csrs) == {"fixed"}


def test_refused_requests_leave_the_connection_usable(make: Make) -> None:
    """401 and 403 come before the body is looked at, yet keep-alive must go on."""
    server = make()
    with client(server, headers={"Authorization": "Bearer zzzzzz.zzzzzzzzzzzzzzzz"}) as c:
        assert c.post(CSR_PATH, json=csr_body(node_key())).status_code == 401
        assert c.post(CSR_PATH, json=csr_body(node_key())).status_code == 401
    with client(server) as c:
        assert c.post(CSR_PATH, json=csr_body(node_key())).status_code == 403
        assert c.get(CLUSTER_INFO_PATH).status_code == 200
    users = [u for _, _, u in server.requests]
    assert users == [REJECTED, REJECTED, "system:anonymous", "system:anonymous"]


def test_invalid_request_pem_is_422(make: Make) -> None:
    server = make()
    body = csr_body(node_key())
    body["spec"]["request"] = base64.b64encode(b"not a PEM").decode()
    with client(server, headers=BEARER) as c:
        r = c.post(CSR_PATH, json=body)
    assert r.status_code == 422
    assert r.json()["details"]["causes"][0]["field"] == "spec.request"


def test_watch_disabled_is_405_and_list_still_works(make: Make) -> None:
    server = make(watch=False)
    with client(server, headers=BEARER) as c:
        name = create(c, csr_body(node_key()))
        create(c, csr_body(node_key()))
        r = c.get(CSR_PATH, params={"watch": "true", "fieldSelector": f"metadata.name={name}"})
        assert r.status_code == 405
        assert r.json()["reason"] == "MethodNotAllowed"
        assert r.json()["kind"] == "Status"
        listed = c.get(CSR_PATH, params={"fieldSelector": f"metadata.name={name}"}).json()
        everything = c.get(CSR_PATH).json()
    assert listed["kind"] == "CertificateSigningRequestList"
    assert listed["apiVersion"] == "certificates.k8s.io/v1"
    assert [i["metadata"]["name"] for i in listed["items"]] == [name]
    assert len(everything["items"]) == 2


def test_separate_signer_ca(make: Make) -> None:
    server = make(signer_ca_separate=True)
    with client(server, headers=BEARER) as c:
        name = create(c, csr_body(node_key()))
    cert = certificate(wait_for(server, name, has_cert))
    assert not compat.signed_by(cert, server.ca_cert)
    assert compat.signed_by(cert, server.signer_ca_cert)
    assert server.signer_ca_cert != server.ca_cert


def test_issue_hook_replaces_signing(make: Make) -> None:
    server = make(cert_lifetime=dt.timedelta(days=2))
    seen: list[str] = []

    def hostile(csr: x509.CertificateSigningRequest, obj: dict[str, Any]) -> x509.Certificate:
        seen.append(obj["metadata"]["name"])
        now = dt.datetime.now(dt.timezone.utc)
        public = csr.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        return server.issue_client_cert(
            "someone-else", public, not_before=now, not_after=now + dt.timedelta(1)
        )

    server.issue_hook = hostile
    with client(server, headers=BEARER) as c:
        name = create(c, csr_body(node_key()))
    cert = certificate(wait_for(server, name, has_cert))
    assert seen == [name]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:node:someone-else"
    )


def test_stop_ends_an_open_watch_at_once(tmp_path: Path) -> None:
    server = StandinApiServer(tmp_path, approver="never")
    server.add_token(TOKEN)
    server.start()
    got: list[str] = []
    opened = threading.Event()

    def watch() -> None:
        with client(server, headers=BEARER) as c:
            name = create(c, csr_body(node_key()))
            params = {"watch": "true", "fieldSelector": f"metadata.name={name}"}
            try:
                with c.stream("GET", CSR_PATH, params=params) as w:
                    for line in w.iter_lines():
                        got.append(json.loads(line)["type"])
                        opened.set()
            except httpx.HTTPError:
                got.append("cut")

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    assert opened.wait(5)
    start = time.monotonic()
    server.stop()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - start < 2
    assert got[0] == "ADDED"
