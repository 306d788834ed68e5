"""The certificates.k8s.io/v1 wire format: what we send and how we read the answers.

Pure: no I/O. The API server's answers are untrusted input until proven otherwise, so
every shape is checked and every error is one sentence.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from join_agent.errors import CAResponseError
from join_agent.pki import compat

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
SERVING_SIGNER = "kubernetes.io/kubelet-serving"
# All three for every key type: clusters before 1.25 never approve (and before 1.27 never
# accept) a kubelet CSR whose usages differ from exactly this set.
CLIENT_USAGES = ("digital signature", "key encipherment", "client auth")
SERVING_USAGES = ("digital signature", "key encipherment", "server auth")


def request_body(
    csr: x509.CertificateSigningRequest, signer: str, usages: tuple[str, ...]
) -> bytes:
    """A CertificateSigningRequest object; the server picks the name from ``csr-``."""
    pem = csr.public_bytes(serialization.Encoding.PEM)
    doc = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "csr-"},
        "spec": {
            "request": base64.b64encode(pem).decode("ascii"),
            "signerName": signer,
            "usages": list(usages),
        },
    }
    return json.dumps(doc).encode()


def object_url(server: str, name: str) -> str:
    return f"{server.rstrip('/')}{CSR_PATH}/{quote(name, safe='')}"


def watch_url(server: str, name: str, seconds: int) -> str:
    selector = quote(f"metadata.name={name}", safe="")
    return (
        f"{server.rstrip('/')}{CSR_PATH}?fieldSelector={selector}"
        f"&watch=true&timeoutSeconds={seconds}"
    )


@dataclass(frozen=True)
class Outcome:
    """Where a CSR stands. ``certificates`` is set once it is issued."""

    name: str
    state: Literal["pending", "approved", "issued", "denied", "failed"]
    reason: str = ""
    message: str = ""
    certificates: tuple[x509.Certificate, ...] = ()


def created_name(body: bytes, what: str) -> str:
    """The name the server gave the CSR we created."""
    doc = _json(body, what)
    name = _get(doc, "metadata", "name")
    if not isinstance(name, str) or not name or len(name) > 253:
        raise CAResponseError(f"{what} created a certificate request without a usable name")
    return name


def outcome(doc: Any, what: str) -> Outcome:
    """Read a CertificateSigningRequest object: Denied and Failed win over Approved, as in
    the API's own helpers; Approved counts only once status.certificate is there."""
    if not isinstance(doc, dict) or doc.get("kind", "CertificateSigningRequest") != (
        "CertificateSigningRequest"
    ):
        raise CAResponseError(f"{what} did not answer with a CertificateSigningRequest")
    name = _get(doc, "metadata", "name")
    name = name if isinstance(name, str) else "?"
    conditions = _get(doc, "status", "conditions") or []
    if not isinstance(conditions, list):
        raise CAResponseError(f"{what} sent status.conditions that is not a list")
    seen: dict[str, dict[str, Any]] = {}
    for c in conditions:
        if isinstance(c, dict) and c.get("status", "True") == "True":
            seen.setdefault(str(c.get("type")), c)
    for kind in ("Denied", "Failed"):
        if kind in seen:
            c = seen[kind]
            return Outcome(
                name=name,
                state="denied" if kind == "Denied" else "failed",
                reason=printable(c.get("reason")),
                message=printable(c.get("message")),
            )
    if "Approved" not in seen:
        return Outcome(name=name, state="pending")
    encoded = _get(doc, "status", "certificate")
    if not encoded:
        return Outcome(name=name, state="approved")
    if not isinstance(encoded, str):
        raise CAResponseError(f"{what} sent status.certificate that is not a string")
    try:
        certs = compat.load_pem_certificates(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        certs = []
    if not certs:
        raise CAResponseError(
            f"{what} sent status.certificate that holds no PEM certificate for request {name}"
        )
    return Outcome(name=name, state="issued", certificates=tuple(certs))


def parse_object(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object answer (a CSR read back with GET)."""
    return _json(body, what)


def watch_event(line: bytes, what: str) -> tuple[str, Any]:
    """One watch event: its type and object."""
    doc = _json(line, what)
    kind = doc.get("type")
    if not isinstance(kind, str):
        raise CAResponseError(f"{what} sent a watch event without a type")
    return kind, doc.get("object")


def status_message(body: bytes) -> str:
    """The message of a meta/v1 Status answer, made safe to print; "" when there is none."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    return printable(doc.get("message")) if isinstance(doc, dict) else ""


def printable(value: object, limit: int = 200) -> str:
    """A server-supplied string fit for one log line: no control characters, bounded."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch if ch.isprintable() else " " for ch in value).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CAResponseError(f"{what} did not answer with JSON") from None
    if not isinstance(doc, dict):
        raise CAResponseError(f"{what} did not answer with a JSON object")
    return doc


def _get(doc: dict[str, Any], *keys: str) -> Any:
    node: Any = doc
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
