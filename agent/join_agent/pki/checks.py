"""The verification of issued certificates: before anything is written, a certificate
must be exactly what was asked for, signed by the pinned CA, valid now (pure)."""

from __future__ import annotations

import datetime as dt
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    SignatureAlgorithmOID,
)

from join_agent.config.model import IPAddress
from join_agent.core.durations import format_duration
from join_agent.errors import CertificateRejected
from join_agent.host.identity import Identity
from join_agent.pki import compat
from join_agent.pki.keys import PrivateKey, Request
from join_agent.pki.pinning import name_of, spki_der


def check_issued(
    cert: x509.Certificate,
    *,
    key: PrivateKey,
    identity: Identity,
    ca: x509.Certificate | None,
    now: dt.datetime,
    clock_skew: dt.timedelta,
    usage: Literal["client", "server"] = "client",
) -> None:
    """Raise CertificateRejected unless ``cert`` is exactly what we asked for.

    ``ca`` given: the certificate must be signed by it (CFSSL; the caller pinned ``ca``).
    A CA may fall back to another profile or override the subject, so nothing the
    request said is taken on trust.
    """
    check_certificate(
        cert,
        key=key,
        request=Request.for_node(identity, usage),
        ca=ca,
        now=now,
        clock_skew=clock_skew,
        who=f"the certificate the CA issued for {identity.name!r}",
    )


def check_certificate(
    cert: x509.Certificate,
    *,
    key: PrivateKey,
    request: Request,
    ca: x509.Certificate | None,
    now: dt.datetime,
    clock_skew: dt.timedelta,
    who: str,
) -> None:
    """Raise CertificateRejected unless ``cert`` is exactly ``request`` for ``key``."""
    if ca is not None and not compat.signed_by(cert, ca):
        raise CertificateRejected(
            f"{who} is not signed by the pinned CA ({name_of(ca.subject)}) but by "
            f"{name_of(cert.issuer)}: refusing it"
        )
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if spki_der(cert) != ours:
        raise CertificateRejected(f"{who} carries a public key that is not ours: refusing it")
    got = [(a.oid, a.value) for a in cert.subject]
    want = [(a.oid, a.value) for a in request.subject()]
    if sorted(got, key=repr) != sorted(want, key=repr):
        raise CertificateRejected(
            f"{who} has subject {name_of(cert.subject)}, not {request.describe()}: refusing it"
        )
    try:
        _check_algorithms(cert, who)
        _check_san_set(cert, set(request.dns_names), set(request.addresses), who)
        _check_usages(cert, who, request.usages)
    except (ValueError, x509.DuplicateExtension):  # extensions are parsed lazily
        raise CertificateRejected(f"{who} has malformed extensions: refusing it") from None
    _check_validity(cert, now, clock_skew, who)


# What Go's crypto/x509 (the API server's) understands in a client certificate: anything
# else marked critical makes it refuse the certificate, so we refuse it first.
_KNOWN_CRITICAL = frozenset(
    {
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }
)
# Go refuses SHA-1 signatures since 1.18; MD5 long before.
_GOOD_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


def _check_algorithms(cert: x509.Certificate, who: str) -> None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    eddsa = cert.signature_algorithm_oid in (
        SignatureAlgorithmOID.ED25519,
        SignatureAlgorithmOID.ED448,
    )
    if not eddsa and not isinstance(algorithm, _GOOD_HASHES):
        name = (
            algorithm.name if algorithm is not None else cert.signature_algorithm_oid.dotted_string
        )
        raise CertificateRejected(
            f"{who} is signed with {name.upper()}, which the API server refuses: the CA must sign "
            "with SHA-256 or better"
        )
    unknown = [
        e.oid.dotted_string for e in cert.extensions if e.critical and e.oid not in _KNOWN_CRITICAL
    ]
    if unknown:
        raise CertificateRejected(
            f"{who} has a critical extension the API server does not understand "
            f"({', '.join(unknown)}): refusing it"
        )


def check_sans(cert: x509.Certificate, identity: Identity, who: str) -> None:
    _check_san_set(cert, set(identity.dns_names), set(identity.addresses), who)


def _check_san_set(
    cert: x509.Certificate, want_dns: set[str], want_ips: set[IPAddress], who: str
) -> None:
    try:
        names = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        # Not SubjectAlternativeName([]): cryptography 51 refuses to build an empty one.
        names = []
    dns: set[str] = set()
    ips: set[IPAddress] = set()
    other: list[x509.GeneralName] = []
    for g in names:
        if isinstance(g, x509.DNSName):
            dns.add(g.value)
        elif isinstance(g, x509.IPAddress) and isinstance(g.value, IPv4Address | IPv6Address):
            ips.add(g.value)
        else:
            other.append(g)  # IP networks, emails, URIs: nothing we asked for
    if dns == want_dns and ips == want_ips and not other:
        return
    extra = sorted(dns - want_dns) + [str(a) for a in _sorted_ips(ips - want_ips)]
    extra += [str(g.value) for g in other]
    missing = sorted(want_dns - dns) + [str(a) for a in _sorted_ips(want_ips - ips)]
    parts = []
    if extra:
        parts.append("extra " + ", ".join(extra))
    if missing:
        parts.append("missing " + ", ".join(missing))
    raise CertificateRejected(
        f"{who} has other SANs than requested ({'; '.join(parts)}): refusing it "
        "(does the CA's profile override hosts?)"
    )


def _check_usages(cert: x509.Certificate, who: str, usages: tuple[str, ...]) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise CertificateRejected(f"{who} is a CA certificate (CA:TRUE): refusing it")
    except x509.ExtensionNotFound:
        pass
    try:
        eku: frozenset[x509.ObjectIdentifier] = frozenset(
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
    except x509.ExtensionNotFound:
        # Not ExtendedKeyUsage([]): cryptography 51 refuses to build an empty one.
        eku = frozenset()
    if "server auth" in usages and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise CertificateRejected(
            f"{who} lacks the server-auth extended key usage: check the CA profile's usages"
        )
    if "client auth" in usages and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise CertificateRejected(
            f"{who} lacks the client-auth extended key usage: the CA probably signed it "
            "with another profile (CFSSL falls back to its default profile for an unknown "
            "name): check signer.cfssl.profile"
        )
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.digital_signature:
        raise CertificateRejected(
            f"{who} lacks the digital-signature key usage, so TLS client auth fails: "
            "check the CA profile's usages"
        )


def _check_validity(cert: x509.Certificate, now: dt.datetime, skew: dt.timedelta, who: str) -> None:
    nb, na = compat.not_valid_before(cert), compat.not_valid_after(cert)
    if na <= nb:
        raise CertificateRejected(f"{who} has an empty validity period: refusing it")
    if now + skew < nb:
        raise CertificateRejected(
            f"{who} is not valid until {nb:%Y-%m-%d %H:%M:%S}Z, but this node's clock reads "
            f"{now:%Y-%m-%d %H:%M:%S}Z ({format_duration(nb - now)} early): "
            "check the clocks of this node and the CA (NTP)"
        )
    if now >= na:  # the skew excuses an early clock, never an expired certificate
        raise CertificateRejected(
            f"{who} expired at {na:%Y-%m-%d %H:%M:%S}Z, and this node's clock reads "
            f"{now:%Y-%m-%d %H:%M:%S}Z: check the CA profile's expiry and both clocks (NTP)"
        )


def _sorted_ips(ips: set[IPAddress]) -> list[IPAddress]:
    return sorted(ips, key=lambda a: (a.version, int(a)))
