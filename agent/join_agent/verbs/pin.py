"""``join-agent pin``: the SPKI pin of a CA from a file or a CFSSL server."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509

from join_agent.errors import ConfigError, StoreError
from join_agent.pki import compat, pinning
from join_agent.storage import guard
from join_agent.worker import kubeconfig


def certificates_from_file(path: Path) -> list[x509.Certificate]:
    """CA certificates in a PEM bundle, a DER certificate, or a kubeconfig's CA data."""
    try:
        data = guard.read(path, "the certificate file", cap=guard.PEM_CAP, trusted=False)
    except StoreError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return compat.load_pem_certificates(data)
        except ValueError:
            raise ConfigError(f"{path} holds a damaged PEM certificate") from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    try:
        doc = kubeconfig.parse(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = {}
    for item in doc.get("clusters") or []:
        ca = (
            (item.get("cluster") or {}).get("certificate-authority-data")
            if isinstance(item, dict)
            else None
        )
        if isinstance(ca, str):
            try:
                return compat.load_pem_certificates(base64.b64decode(ca))
            except ValueError:
                break
    raise ConfigError(
        f"{path} is not a PEM or DER certificate, nor a kubeconfig with certificate-authority-data"
    )


def certificates_from_cfssl(url: str) -> list[x509.Certificate]:
    """The CA a CFSSL server announces at ``info`` (unauthenticated: compare out of band)."""
    from join_agent.net import transport
    from join_agent.signers.cfssl import fetch_info

    limits = transport.Limits(deadline=10.0)
    with transport.client_for([url], limits) as client:
        return fetch_info(client, url.rstrip("/"), limits)


def render(certs: list[x509.Certificate]) -> str:
    """One pin for one certificate (for scripts); pin and subject per line for a bundle."""
    if len(certs) == 1:
        return pinning.spki_pin(certs[0]) + "\n"
    return "".join(f"{pinning.spki_pin(c)}  {c.subject.rfc4514_string()}\n" for c in certs)
