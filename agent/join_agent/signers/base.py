"""What every signer does: turn our CSR into a certificate from a CA we trust."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from join_agent.host.identity import Identity


@dataclass(frozen=True)
class Issued:
    """A certificate as a signer returned it, before our own verification.

    ``ca`` is the trusted issuing CA (already matched against a pin); ``verify_with`` is
    the CA the leaf must be signed by, or None when the transport vouches for it (the
    Kubernetes CSR API, whose per-signer CAs may differ from the cluster CA).
    """

    certificate: x509.Certificate
    ca: x509.Certificate
    ca_bundle: tuple[x509.Certificate, ...]
    verify_with: x509.Certificate | None
    source: str
    server: str | None = None  # the API server the kubeconfig names, when the signer found it


class Signer(Protocol):
    """A CA that signs the node's CSR."""

    name: str
    client_sans: bool  # whether the client certificate carries the node's names and addresses

    def sign(self, csr: x509.CertificateSigningRequest, identity: Identity) -> Issued:
        """Obtain a certificate for ``csr``; raise a JoinAgentError subclass on failure."""
        ...
