"""Shims for what cryptography 38 (Debian bookworm) lacks. Keep every such shim here."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (``x509.load_pem_x509_certificates`` is 39+)."""
    return [x509.load_pem_x509_certificate(block) for block in _PEM_CERT.findall(data)]


def pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as one PEM bundle."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def not_valid_before(cert: x509.Certificate) -> dt.datetime:
    """notBefore as an aware UTC datetime (``not_valid_before_utc`` is 42+)."""
    utc: dt.datetime | None = getattr(cert, "not_valid_before_utc", None)
    return utc or cert.not_valid_before.replace(tzinfo=dt.timezone.utc)


def not_valid_after(cert: x509.Certificate) -> dt.datetime:
    """notAfter as an aware UTC datetime (``not_valid_after_utc`` is 42+)."""
    utc: dt.datetime | None = getattr(cert, "not_valid_after_utc", None)
    return utc or cert.not_valid_after.replace(tzinfo=dt.timezone.utc)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key made ``cert``'s signature and the names line up.

    One level only, as ``verify_directly_issued_by`` (40+) does: issuer name, then the
    signature over the TBS bytes with the certificate's own hash and padding.
    """
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    algorithm = cert.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if algorithm is None:
                return False
            # cryptography 38 has no signature_algorithm_parameters; CAs sign with PKCS#1 v1.5.
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if algorithm is None:
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except InvalidSignature:
        return False
    return True
