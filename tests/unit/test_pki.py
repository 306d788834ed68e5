"""pki: keys, the CSR, SPKI pins (against openssl) and the check of an issued certificate."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from join_agent.errors import CertificateRejected
from join_agent.pki import checks, compat, keys, pinning
from tests.lab.certs import CA, NO_DIGITAL_SIGNATURE_KU, NOW, ec_key, identity, name, node_subject

SKEW = dt.timedelta(minutes=2)
IDENTITY = identity()


def check(cert: x509.Certificate, key: Any, ca: CA | None) -> None:
    checks.check_issued(
        cert, key=key, identity=IDENTITY, ca=ca.cert if ca else None, now=NOW, clock_skew=SKEW
    )


# -- keys and CSR ----------------------------------------------------------------------


def test_generate_ecdsa_p256() -> None:
    key = keys.generate_key("ecdsa-p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)


@pytest.mark.parametrize(("kind", "bits"), [("rsa-2048", 2048), ("rsa-4096", 4096)])
def test_generate_rsa(kind: Any, bits: int) -> None:
    key = keys.generate_key(kind)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == bits
    assert key.public_key().public_numbers().e == 65537


def test_two_keys_differ() -> None:
    a, b = keys.generate_key("ecdsa-p256"), keys.generate_key("ecdsa-p256")
    assert keys.key_pem(a) != keys.key_pem(b)


def test_key_pem_is_the_traditional_format(node_key: Any, node_rsa_key: Any) -> None:
    assert keys.key_pem(node_key).startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    assert keys.key_pem(node_rsa_key).startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")


@pytest.mark.parametrize("which", ["node_key", "node_rsa_key"])
def test_build_csr(which: str, request: pytest.FixtureRequest) -> None:
    key = request.getfixturevalue(which)
    csr = keys.build_csr(key, IDENTITY)
    assert csr.is_signature_valid
    assert sorted((a.oid.dotted_string, a.value) for a in csr.subject) == sorted(
        [
            (NameOID.COMMON_NAME.dotted_string, "system:node:node-1"),
            (NameOID.ORGANIZATION_NAME.dotted_string, "system:nodes"),
        ]
    )
    assert len(list(csr.subject)) == 2
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.DNSName("node-1"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
        x509.IPAddress(ipaddress.ip_address("fd00::7")),
    ]
    assert [e.oid for e in csr.extensions] == [ExtensionOID.SUBJECT_ALTERNATIVE_NAME]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert csr.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def test_hosts_for_lists_names_then_addresses() -> None:
    assert keys.hosts_for(IDENTITY) == ["node-1", "10.0.0.7", "fd00::7"]


# -- SPKI pins -------------------------------------------------------------------------


def openssl_pin(pem_file: Path) -> str:
    """`openssl x509 -pubkey -noout -in ca.pem | openssl pkey -pubin -outform der | sha256sum`"""

    def run(args: list[str], data: bytes | None = None) -> bytes:
        return subprocess.run(args, input=data, capture_output=True, check=True).stdout

    pubkey = run(["openssl", "x509", "-pubkey", "-noout", "-in", str(pem_file)])
    der = run(["openssl", "pkey", "-pubin", "-outform", "der"], pubkey)
    digest = run(["sha256sum"], der).split()[0].decode()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    return "sha256:" + digest


@pytest.mark.parametrize("which", ["ca", "rsa_ca"])
def test_spki_pin_matches_the_openssl_pipeline(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ca: CA = request.getfixturevalue(which)
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    pin = pinning.spki_pin(ca.cert)
    assert pin == openssl_pin(pem)
    assert pinning.matches_pin(ca.cert, ["sha256:" + "0" * 64, pin])
    assert not pinning.matches_pin(ca.cert, ["sha256:" + "0" * 64])


def test_spki_pin_is_of_the_key_not_the_certificate(ca: CA) -> None:
    """A re-issued CA certificate with the same key keeps its pin (kubeadm's semantics)."""
    again = CA.create(ca.key, common_name="Renamed CA")
    assert again.cert.fingerprint(hashes.SHA256()) != ca.cert.fingerprint(hashes.SHA256())
    assert pinning.spki_pin(again.cert) == pinning.spki_pin(ca.cert)
    spki = ca.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pinning.spki_pin(ca.cert) == "sha256:" + hashlib.sha256(spki).hexdigest()


# -- check_issued ----------------------------------------------------------------------


def test_accepts_what_was_asked_for(ca: CA, node_key: Any) -> None:
    check(ca.issue(node_key.public_key()), node_key, ca)


def test_accepts_without_key_usage_extension(ca: CA, node_key: Any) -> None:
    check(ca.issue(node_key.public_key(), key_usage=None, is_ca=None), node_key, ca)


def test_accepts_an_unsigned_check_when_no_ca_is_given(ca: CA, node_key: Any) -> None:
    """The Kubernetes path: the certificate came over verified TLS; no CA to chain to."""
    other = CA.create(common_name="kube-apiserver-client-kubelet signer")
    check(other.issue(node_key.public_key()), node_key, None)


def test_accepts_sans_in_any_order(ca: CA, node_key: Any) -> None:
    cert = ca.issue(node_key.public_key(), ips=tuple(reversed(IDENTITY.addresses)))
    check(cert, node_key, ca)


def test_accepts_not_before_in_the_future_within_clock_skew(ca: CA, node_key: Any) -> None:
    cert = ca.issue(node_key.public_key(), not_before=NOW + SKEW - dt.timedelta(seconds=1))
    check(cert, node_key, ca)


def test_accepts_not_before_exactly_at_the_skew(ca: CA, node_key: Any) -> None:
    check(ca.issue(node_key.public_key(), not_before=NOW + SKEW), node_key, ca)


def test_accepts_rsa_ca_with_ec_leaf(rsa_ca: CA, node_key: Any) -> None:
    check(rsa_ca.issue(node_key.public_key()), node_key, rsa_ca)


def test_accepts_ec_ca_with_rsa_leaf(ca: CA, node_rsa_key: Any) -> None:
    check(ca.issue(node_rsa_key.public_key()), node_rsa_key, ca)


def rejection(cert: x509.Certificate, key: Any, ca: CA | None) -> str:
    with pytest.raises(CertificateRejected) as info:
        check(cert, key, ca)
    message = str(info.value)
    # one sentence for a person: one line, no second sentence, names the node
    assert "\n" not in message
    assert not re.search(r"[.!?] [A-Z]", message), message
    assert "'node-1'" in message
    return message


def test_rejects_a_leaf_of_another_ca(ca: CA, node_key: Any) -> None:
    other = CA.create(common_name="Rogue CA")
    message = rejection(other.issue(node_key.public_key()), node_key, ca)
    assert "not signed by the pinned CA (CN=Test Cluster CA)" in message
    assert "CN=Rogue CA" in message


def test_rejects_the_right_issuer_name_with_another_key(ca: CA, node_key: Any) -> None:
    impostor = CA.create(common_name="Test Cluster CA")
    cert = impostor.issue(node_key.public_key())
    assert cert.issuer == ca.cert.subject
    assert "not signed by the pinned CA" in rejection(cert, node_key, ca)


def test_rejects_a_signature_by_another_key_under_the_ca_name(ca: CA, node_key: Any) -> None:
    cert = ca.issue(node_key.public_key(), signing_key=ec_key())
    assert "not signed by the pinned CA" in rejection(cert, node_key, ca)


def test_rejects_another_public_key(ca: CA, node_key: Any, stranger_key: Any) -> None:
    message = rejection(ca.issue(stranger_key.public_key()), node_key, ca)
    assert "public key that is not ours" in message


@pytest.mark.parametrize(
    "subject",
    [
        node_subject("node-2"),
        name("node-1", "system:nodes"),
        node_subject(orgs=("system:nodes", "system:masters")),
        node_subject(orgs=("system:masters",)),
        node_subject(orgs=()),
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                x509.NameAttribute(NameOID.COMMON_NAME, "system:node:node-1"),
                x509.NameAttribute(NameOID.COMMON_NAME, "system:node:node-2"),
            ]
        ),
    ],
    ids=["wrong-cn", "cn-without-prefix", "extra-masters", "masters", "no-org", "two-cns"],
)
def test_rejects_another_subject(ca: CA, node_key: Any, subject: x509.Name) -> None:
    message = rejection(ca.issue(node_key.public_key(), subject=subject), node_key, ca)
    assert "has subject" in message
    assert "not CN=system:node:node-1, O=system:nodes" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"dns": ("node-1", "node-1.example")}, "extra node-1.example"),
        ({"ips": (*IDENTITY.addresses, ipaddress.ip_address("10.0.0.8"))}, "extra 10.0.0.8"),
        ({"ips": (ipaddress.ip_address("10.0.0.7"),)}, "missing fd00::7"),
        ({"dns": ()}, "missing node-1"),
        ({"with_san": False}, "missing node-1, 10.0.0.7, fd00::7"),
        ({"other_sans": (x509.RFC822Name("node@example.com"),)}, "extra node@example.com"),
        (
            {"other_sans": (x509.UniformResourceIdentifier("spiffe://cluster/node-1"),)},
            "extra spiffe://cluster/node-1",
        ),
        (
            {"other_sans": (x509.IPAddress(ipaddress.ip_network("10.0.0.0/24")),)},
            "extra 10.0.0.0/24",
        ),
    ],
    ids=["extra-dns", "extra-ip", "missing-ip", "missing-dns", "no-san", "email", "uri", "net"],
)
def test_rejects_other_sans(ca: CA, node_key: Any, changes: dict[str, Any], expected: str) -> None:
    message = rejection(ca.issue(node_key.public_key(), **changes), node_key, ca)
    assert "has other SANs than requested" in message
    assert expected in message


def test_rejects_a_ca_certificate(ca: CA, node_key: Any) -> None:
    message = rejection(ca.issue(node_key.public_key(), is_ca=True), node_key, ca)
    assert "is a CA certificate (CA:TRUE)" in message


@pytest.mark.parametrize(
    "eku",
    [None, (ExtendedKeyUsageOID.SERVER_AUTH,), (ExtendedKeyUsageOID.CODE_SIGNING,)],
    ids=["no-eku", "server-auth-only", "code-signing"],
)
def test_rejects_without_client_auth(ca: CA, node_key: Any, eku: Any) -> None:
    message = rejection(ca.issue(node_key.public_key(), eku=eku), node_key, ca)
    assert "lacks the client-auth extended key usage" in message
    assert "signer.cfssl.profile" in message


def test_accepts_client_and_server_auth(ca: CA, node_key: Any) -> None:
    eku = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    check(ca.issue(node_key.public_key(), eku=eku), node_key, ca)


def test_rejects_key_usage_without_digital_signature(ca: CA, node_key: Any) -> None:
    cert = ca.issue(node_key.public_key(), key_usage=NO_DIGITAL_SIGNATURE_KU)
    assert "lacks the digital-signature key usage" in rejection(cert, node_key, ca)


def test_rejects_an_expired_certificate(ca: CA, node_key: Any) -> None:
    cert = ca.issue(
        node_key.public_key(),
        not_before=NOW - dt.timedelta(days=30),
        not_after=NOW - dt.timedelta(hours=1),
    )
    message = rejection(cert, node_key, ca)
    assert "expired at 2024-06-01 11:00:00Z" in message
    assert "clock reads 2024-06-01 12:00:00Z" in message


def test_rejects_not_yet_valid_beyond_clock_skew(ca: CA, node_key: Any) -> None:
    cert = ca.issue(node_key.public_key(), not_before=NOW + SKEW + dt.timedelta(seconds=1))
    message = rejection(cert, node_key, ca)
    assert "is not valid until 2024-06-01 12:02:01Z" in message
    assert "(2m 1s early)" in message
    assert "NTP" in message


def test_rejects_an_empty_validity_period(ca: CA, node_key: Any) -> None:
    cert = ca.issue(node_key.public_key(), not_before=NOW, not_after=NOW)
    assert "empty validity period" in rejection(cert, node_key, ca)


def test_signer_is_checked_before_anything_else(ca: CA, stranger_key: Any, node_key: Any) -> None:
    """A stranger's certificate is reported as such, not as a SAN or key mismatch."""
    other = CA.create(common_name="Rogue CA")
    cert = other.issue(stranger_key.public_key(), dns=("evil",), eku=None)
    assert "not signed by the pinned CA" in rejection(cert, node_key, ca)


# -- compat.signed_by across key types --------------------------------------------------


@pytest.mark.parametrize(
    ("ca_fixture", "leaf_fixture"),
    [
        ("ca", "node_key"),
        ("ca", "node_rsa_key"),
        ("rsa_ca", "node_key"),
        ("rsa_ca", "node_rsa_key"),
    ],
)
def test_signed_by_across_key_types(
    ca_fixture: str, leaf_fixture: str, request: pytest.FixtureRequest
) -> None:
    issuer: CA = request.getfixturevalue(ca_fixture)
    leaf_key = request.getfixturevalue(leaf_fixture)
    cert = issuer.issue(leaf_key.public_key())
    assert compat.signed_by(cert, issuer.cert)
    assert compat.signed_by(issuer.cert, issuer.cert)  # self-signed
    cn = str(issuer.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    impostor = CA.create(ec_key(), common_name=cn)
    assert impostor.cert.subject == issuer.cert.subject
    assert not compat.signed_by(cert, impostor.cert)
    assert not compat.signed_by(issuer.cert, CA.create(common_name="Another CA").cert)
