"""The tests' one certificate factory: CAs, leaves and keys for every test folder, built
on `cryptography` directly (the agent's own pki/ is what the tests check, so it is not
used to make their inputs). The stand-in API server keeps its own CA on purpose: it is
copied into the system tests' machine on its own.

Only APIs that cryptography 38 (Debian bookworm) has: aware datetimes go into the
builders (they convert to UTC themselves), nothing reads ``*_utc`` properties.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from join_agent.host.identity import Identity

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
# An extension a test adds as it is, and whether it is critical.
Extra = tuple[x509.ExtensionType, bool]

# A fixed "now" for every decision under test: nothing here reads the clock.
NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
NODE = "node-1"
ADDRESSES: tuple[IPv4Address | IPv6Address, ...] = (
    ip_address("10.0.0.7"),
    ip_address("fd00::7"),
)


def key_usage(
    *,
    digital_signature: bool = True,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


DEFAULT_KU = key_usage(key_encipherment=True)
# A node's key usage that TLS cannot use.
NO_DIGITAL_SIGNATURE_KU = key_usage(digital_signature=False, key_encipherment=True)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def identity(
    name: str = NODE, addresses: Sequence[IPv4Address | IPv6Address] = ADDRESSES
) -> Identity:
    return Identity(name=name, dns_names=(name,), addresses=tuple(addresses))


def name(cn: str, *orgs: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def node_subject(node: str = NODE, orgs: Sequence[str] = ("system:nodes",)) -> x509.Name:
    return name(f"system:node:{node}", *orgs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CA:
    """A self-signed CA that issues leaves with whatever flaw a test asks for."""

    key: PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(
        cls,
        key: PrivateKey | None = None,
        common_name: str = "Test Cluster CA",
        not_before: dt.datetime = NOW - dt.timedelta(days=365),
        not_after: dt.datetime = NOW + dt.timedelta(days=3650),
    ) -> CA:
        return authority(common_name, key=key, not_before=not_before, not_after=not_after)

    @classmethod
    def from_files(cls, cert_path: Path, key_path: Path) -> CA:
        """A CA someone else made (cfssl, the lab control plane), to issue odd leaves with."""
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise TypeError(f"{key_path}: not an EC or RSA key")
        return cls(key=key, cert=x509.load_pem_x509_certificate(cert_path.read_bytes()))

    def issue(
        self,
        public_key: PublicKey,
        *,
        subject: x509.Name | None = None,
        dns: Sequence[str] = (NODE,),
        ips: Sequence[IPv4Address | IPv6Address] = ADDRESSES,
        other_sans: Sequence[x509.GeneralName] = (),
        with_san: bool = True,
        eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        key_usage: x509.KeyUsage | None = DEFAULT_KU,
        is_ca: bool | None = False,
        not_before: dt.datetime = NOW - dt.timedelta(minutes=5),
        not_after: dt.datetime = NOW + dt.timedelta(days=365),
        issuer_name: x509.Name | None = None,
        signing_key: PrivateKey | None = None,
        extensions: Sequence[Extra] = (),
    ) -> x509.Certificate:
        """A leaf; ``None`` for an extension leaves it out."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject if subject is not None else node_subject())
            .issuer_name(issuer_name if issuer_name is not None else self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(a) for a in ips]
        sans += list(other_sans)
        if with_san and sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if key_usage is not None:
            builder = builder.add_extension(key_usage, critical=True)
        if is_ca is not None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=is_ca, path_length=None), critical=True
            )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(signing_key or self.key, hashes.SHA256())


def ca_key_usage(*, key_cert_sign: bool = True) -> x509.KeyUsage:
    """A CA's key usage; ``key_cert_sign=False`` makes one that may not sign certificates."""
    return key_usage(key_cert_sign=key_cert_sign, crl_sign=True)


_CA_KU = ca_key_usage()


def authority(
    common_name: str,
    *,
    issuer: CA | None = None,
    key: PrivateKey | None = None,
    is_ca: bool | None = True,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | None = _CA_KU,
    not_before: dt.datetime = NOW - dt.timedelta(days=365),
    not_after: dt.datetime = NOW + dt.timedelta(days=3650),
    extensions: Sequence[Extra] = (),
) -> CA:
    """A CA certificate with whatever flaw a test asks for, signed by ``issuer`` (None:
    self-signed). ``is_ca=None`` or ``key_usage=None`` leaves that extension out."""
    key = key or ec_key()
    subject = name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if is_ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None),
            critical=True,
        )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    cert = builder.sign(issuer.key if issuer is not None else key, hashes.SHA256())
    return CA(key=key, cert=cert)
