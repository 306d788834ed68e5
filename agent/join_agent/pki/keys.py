"""Keys and certificate signing requests: the node's, and a [[certificate]] table's (Request)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    NameOID,
)

from join_agent.config.model import IPAddress, KeyType
from join_agent.host.identity import Identity

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


def hosts_for(identity: Identity) -> list[str]:
    """The SAN list as CFSSL's ``hosts`` field takes it: names, then addresses."""
    return list(identity.dns_names) + [str(a) for a in identity.addresses]
