"""SPKI pins (kubeadm's sha256:<hex>) and the trusted path from a pinned CA: which CA the
agent believes, and why."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from join_agent.errors import TrustError
from join_agent.pki import compat


def spki_der(cert_or_key: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return cert_or_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_pin(cert: x509.Certificate) -> str:
    """kubeadm's ``sha256:<hex>`` pin: SHA-256 over the DER SubjectPublicKeyInfo."""
    return "sha256:" + hashlib.sha256(spki_der(cert)).hexdigest()


def matches_pin(cert: x509.Certificate, pins: Iterable[str]) -> bool:
    return spki_pin(cert) in set(pins)


def trusted_path(
    issuing: x509.Certificate,
    bundle: Sequence[x509.Certificate],
    pins: Iterable[str] | None,
    *,
    now: dt.datetime,
    clock_skew: dt.timedelta,
    origin: str = "signer.cfssl.ca_pins",
) -> tuple[x509.Certificate, ...]:
    """The chain from the issuing CA up to a pinned certificate, each one fit to be a CA.

    Only this path is ever written as a trust anchor: anything else a CA's answer carries
    is dropped. ``pins=None`` (trust on first use) trusts the issuing CA alone.
    """
    path = [issuing]
    wanted = None if pins is None else set(pins)
    while wanted is not None and spki_pin(path[-1]) not in wanted:
        parent = next((c for c in bundle if c not in path and compat.signed_by(path[-1], c)), None)
        if parent is None:
            where = origin if origin.endswith("ca_pins") else "signer.cfssl.ca_pins"
            raise TrustError(
                f"the CA {name_of(issuing.subject)} has pin {spki_pin(issuing)}, which is not "
                f"in {origin}, and no certificate it sent chains to one that is: refusing it "
                f"(if the CA really changed, add its pin to {where} after "
                "checking it out of band)"
            )
        path.append(parent)
    for depth, cert in enumerate(path):
        try:
            _check_authority(cert, depth, now, clock_skew)
        except (ValueError, x509.DuplicateExtension):  # extensions are parsed lazily
            raise TrustError(
                f"the CA certificate {name_of(cert.subject)} has malformed extensions: refusing it"
            ) from None
    return tuple(path)


def _check_authority(
    cert: x509.Certificate, below: int, now: dt.datetime, skew: dt.timedelta
) -> None:
    """A certificate on the trusted path must be a CA allowed to sign what is below it."""
    who = f"the CA certificate {name_of(cert.subject)}"
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise TrustError(f"{who} is not a CA (no CA:TRUE basic constraint): refusing it")
    if bc.path_length is not None and below > bc.path_length:
        raise TrustError(f"{who} may not have {below} CA(s) below it (pathlen {bc.path_length})")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise TrustError(f"{who} may not sign certificates (no keyCertSign): refusing it")
    nb, na = compat.not_valid_before(cert), compat.not_valid_after(cert)
    if now + skew < nb or now >= na:
        raise TrustError(
            f"{who} is valid only from {nb:%Y-%m-%d %H:%M}Z to {na:%Y-%m-%d %H:%M}Z, and "
            f"this node's clock reads {now:%Y-%m-%d %H:%M}Z: check the CA and both clocks"
        )


def name_of(name: x509.Name) -> str:
    """A distinguished name for a sentence."""
    return name.rfc4514_string() or "(empty name)"
