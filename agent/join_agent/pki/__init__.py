"""Keys, CSRs, SPKI pins and the verification of issued certificates (pure)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    SignatureAlgorithmOID,
)

from join_agent.config.model import IPAddress, KeyType
from join_agent.core.durations import format_duration
from join_agent.errors import CertificateRejected, TrustError
from join_agent.host.identity import Identity
from join_agent.pki import compat

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
NODES_GROUP = "system:nodes"


def generate_key(kind: KeyType) -> PrivateKey:
    """A fresh private key of the configured type; it never leaves this node."""
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    bits = {"rsa-2048": 2048, "rsa-4096": 4096}[kind]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_pem(key: PrivateKey) -> bytes:
    """The key as the kubelet writes it: SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Request:
    """What a certificate must say: its subject, its SANs exactly, its usages."""

    common_name: str
    organizations: tuple[str, ...]
    units: tuple[str, ...]
    dns_names: tuple[str, ...]
    addresses: tuple[IPAddress, ...]
    usages: tuple[str, ...]  # "client auth", "server auth"

    @classmethod
    def for_node(cls, identity: Identity, usage: Literal["client", "server"]) -> Request:
        return cls(
            common_name=identity.common_name,
            organizations=(NODES_GROUP,),
            units=(),
            dns_names=identity.dns_names,
            addresses=identity.addresses,
            usages=(f"{usage} auth",),
        )

    def subject(self) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in self.organizations]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in self.units]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, self.common_name))
        return x509.Name(attrs)

    def describe(self) -> str:
        parts = [f"CN={self.common_name}", *(f"O={o}" for o in self.organizations)]
        return ", ".join(parts + [f"OU={u}" for u in self.units])

    def hosts(self) -> list[str]:
        """The SAN list as CFSSL's ``hosts`` field takes it: names, then addresses."""
        return list(self.dns_names) + [str(a) for a in self.addresses]


def build_request_csr(key: PrivateKey, request: Request) -> x509.CertificateSigningRequest:
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in request.dns_names]
    sans += [x509.IPAddress(a) for a in request.addresses]
    builder = x509.CertificateSigningRequestBuilder().subject_name(request.subject())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def subject_for(identity: Identity) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name),
        ]
    )


def build_csr(key: PrivateKey, identity: Identity) -> x509.CertificateSigningRequest:
    """CN=system:node:<name>, O=system:nodes, SANs = the node's DNS names and addresses."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in identity.dns_names]
    sans += [x509.IPAddress(a) for a in identity.addresses]
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject_for(identity))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


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
                f"the CA {_name(issuing.subject)} has pin {spki_pin(issuing)}, which is not "
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
                f"the CA certificate {_name(cert.subject)} has malformed extensions: refusing it"
            ) from None
    return tuple(path)


def _check_authority(
    cert: x509.Certificate, below: int, now: dt.datetime, skew: dt.timedelta
) -> None:
    """A certificate on the trusted path must be a CA allowed to sign what is below it."""
    who = f"the CA certificate {_name(cert.subject)}"
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


def hosts_for(identity: Identity) -> list[str]:
    """The SAN list as CFSSL's ``hosts`` field takes it: names, then addresses."""
    return list(identity.dns_names) + [str(a) for a in identity.addresses]


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
            f"{who} is not signed by the pinned CA ({_name(ca.subject)}) but by "
            f"{_name(cert.issuer)}: refusing it"
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
            f"{who} has subject {_name(cert.subject)}, not {request.describe()}: refusing it"
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


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty name)"
