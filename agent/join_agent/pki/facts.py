"""Plain, JSON-ready facts about certificates and files.

The worker child computes them (it has cryptography loaded); the resident daemon and
``status`` only read them back, so neither needs to parse a PEM on the common path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from join_agent.core.wire import iso
from join_agent.pki import compat, pinning

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts
    from join_agent.core.records import CaFacts


def serial(cert: x509.Certificate) -> str:
    """The serial's one written form (status.json, the records, machine.json): hex."""
    return f"{cert.serial_number:x}"


def certificate(cert: x509.Certificate) -> CredentialFacts:
    """Subject, issuer, SANs and validity of one certificate."""
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    name = str(cn[0]) if cn else ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = list(san.get_values_for_type(x509.DNSName))
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    return {
        "node": name.removeprefix("system:node:"),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial(cert),
        "sans": {"dns": dns, "ip": ips},
        "not_before": iso(compat.not_valid_before(cert)),
        "not_after": iso(compat.not_valid_after(cert)),
    }


def authority(cert: x509.Certificate) -> CaFacts:
    """A CA as ``status`` shows it: its pin, subject and expiry."""
    return {
        "pin": pinning.spki_pin(cert),
        "subject": cert.subject.rfc4514_string(),
        "not_after": iso(compat.not_valid_after(cert)),
    }
