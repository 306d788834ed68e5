"""A STAND-IN Kubernetes API server on 127.0.0.1, for misbehaviour on cue.

This is not kube-apiserver. The real control plane is tested elsewhere (tests/kube/);
this scripted server exists only for what a real one will not do when asked: deny or
never approve a CSR, sign with a CA nobody pins, serve a cluster-info that changes
between two fetches, sign a JWS with the wrong secret, issue hostile certificates,
refuse watches. It speaks the real wire format of Kubernetes v1.20+ as far as the join
agent uses it (docs/kubernetes.md; tests/kube/ runs the same paths against a real one):

- ``GET /api/v1/namespaces/kube-public/configmaps/cluster-info``: a v1 ConfigMap with
  kubeadm's ``data.kubeconfig`` and a detached JWS ``data["jws-kubeconfig-<id>"]`` per
  signing token, byte for byte what cluster-bootstrap's jws.go emits (checked against
  its own test vector, :data:`KUBERNETES_JWS_TEST_VECTOR`).
- ``certificates.k8s.io/v1`` CertificateSigningRequests: create (201), get, list,
  watch (chunked JSON events, one per line), with API validation (422), RBAC as kubeadm
  sets it up (403), bootstrap-token and x509 authentication (401), and meta/v1 Status
  bodies for every error.
- An approver that recognizes what kube-controller-manager's csrapproving controller
  (before 1.25) recognizes, and a signer that checks and issues like csrsigning.

It serves real TLS with its own CA (RSA 2048 like kubeadm's) made with ``cryptography``.
Stdlib ``http.server`` (HTTP/1.1, one thread per connection, TLS handshake in that
thread) in a background thread; use it as a context manager.

Known gaps against a real server: no managedFields, no selfLink; a client certificate
from an unknown CA fails the TLS handshake (Python's ssl has no verify callback) where
Go would finish it and answer 401; expired or not-yet-valid client certificates *are*
let through the handshake and answered 401, as the real server does.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import random
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from join_agent.pki import compat

# cryptography 40+ names these unions in asymmetric.types; bookworm's 38 does not: ours.
CertificateIssuerPrivateKeyTypes = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)
CertificateIssuerPublicKeyTypes = (
    rsa.RSAPublicKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
    | dsa.DSAPublicKey
)

Obj = dict[str, Any]
Cause = tuple[str, str, str]  # (field, cause reason, message after the field)
IssueHook = Callable[[x509.CertificateSigningRequest, Obj], "x509.Certificate | bytes"]

CLUSTER_INFO_PATH = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
NODES_PATH = "/api/v1/nodes"
CSR_GROUP = "certificates.k8s.io"
CSR_API_VERSION = "certificates.k8s.io/v1"
CSR_RESOURCE = "certificatesigningrequests"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
SERVING_SIGNER = "kubernetes.io/kubelet-serving"
LEGACY_SIGNER = "kubernetes.io/legacy-unknown"
ANONYMOUS = "system:anonymous"
REJECTED = "<401>"  # the user recorded in ``requests`` for a request refused with 401
BOOTSTRAPPERS = "system:bootstrappers"
KUBEADM_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
NODES = "system:nodes"
AUTHENTICATED = "system:authenticated"
NODE_PREFIX = "system:node:"
APPROVERS = ("auto", "deny", "fail", "never")

KUBELET_CLIENT_USAGES = frozenset({"digital signature", "key encipherment", "client auth"})
KUBELET_SERVING_USAGES = frozenset({"digital signature", "key encipherment", "server auth"})
KEY_USAGES = {  # k8s.io/client-go/util/cert... keyUsagesFromStrings
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}
EXT_KEY_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape sgc": x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
}
SUPPORTED_USAGES = sorted({*KEY_USAGES, *EXT_KEY_USAGES})

APPROVED_SELF = "Auto approving self kubelet client certificate after SubjectAccessReview."
APPROVED_NODE = "Auto approving kubelet client certificate after SubjectAccessReview."
KUBECTL_APPROVE = "This CSR was approved by kubectl certificate approve."
KUBECTL_DENY = "This CSR was denied by kubectl certificate deny."
FAILED_ON_CUE = "the stand-in signer failed this request on cue"

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphabet
X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL: let expired client certs finish the handshake
MAX_BODY = 3 * 1024 * 1024  # the API server's request body limit
DEFAULT_WATCH_TIMEOUT = 1800  # a real server picks minRequestTimeout..2x; we pick the minimum


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def timestamp(when: dt.datetime | None = None) -> str:
    """metav1.Time as JSON: RFC 3339, seconds, UTC."""
    return (when or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def spki_pin(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


# -- cluster-bootstrap's detached JWS ---------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def detached_jws(content: str, token_id: str, token_secret: str) -> str:
    """What k8s.io/cluster-bootstrap/token/jws.ComputeDetachedSignature returns.

    go-jose serializes the protected header as a Go map, so keys come sorted and compact:
    ``{"alg":"HS256","kid":"<id>"}``. Base64url without padding; HS256 keyed with the
    token secret over ``<header>.<payload>``; the payload part is then cut out.
    """
    header = b64url(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{b64url(content.encode())}".encode()
    sig = hmac.new(token_secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}..{b64url(sig)}"


def cluster_info_kubeconfig(server: str, ca_pem: bytes) -> str:
    """The kubeconfig kubeadm puts in cluster-info: one nameless cluster, nothing else,
    as client-go's clientcmd.Write serializes it."""
    ca_data = base64.b64encode(ca_pem).decode()
    return (
        "apiVersion: v1\n"
        "clusters:\n"
        "- cluster:\n"
        f"    certificate-authority-data: {ca_data}\n"
        f"    server: {server}\n"
        '  name: ""\n'
        "contexts: null\n"
        'current-context: ""\n'
        "kind: Config\n"
        "preferences: {}\n"
        "users: null\n"
    )


class JwsVector(NamedTuple):
    token: str  # "<token-id>.<token-secret>"
    kubeconfig: str  # the signed content
    jws: str  # the expected data["jws-kubeconfig-<token-id>"]


#: A fixed vector for the client's JWS check: a kubeadm-shaped cluster-info kubeconfig
#: (its CA data is a dummy PEM) and the JWS, computed independently with
#: ``openssl dgst -sha256 -hmac 0123456789abcdef -binary`` (test_kube_apiserver.py redoes it).
JWS_VECTOR = JwsVector(
    token="abcdef.0123456789abcdef",
    kubeconfig=(
        "apiVersion: v1\n"
        "clusters:\n"
        "- cluster:\n"
        "    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnN0YW5kLWluIEpXUyB0"
        "ZXN0IHZlY3RvcgotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==\n"
        "    server: https://127.0.0.1:6443\n"
        '  name: ""\n'
        "contexts: null\n"
        'current-context: ""\n'
        "kind: Config\n"
        "preferences: {}\n"
        "users: null\n"
    ),
    jws="eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9..yTxU3lwRdUDoKL6m9y5KstY-YETCeNfP-g6EGvWUy1g",
)

#: kubernetes/kubernetes staging/src/k8s.io/cluster-bootstrap/token/jws/jws_test.go
#: (content, token id, secret, expected): upstream's own vector, not a bootstrap-token shape.
KUBERNETES_JWS_TEST_VECTOR = (
    "Hello from the other side. I must have called a thousand times.",
    "joshua",
    "my voice is my passcode",
    "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8",
)


# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    key: CertificateIssuerPrivateKeyTypes
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str) -> Authority:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = utcnow()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(_key_usage(["digital signature", "key encipherment", "cert sign"]), True)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        subject: x509.Name,
        public_key: CertificateIssuerPublicKeyTypes,
        *,
        usages: list[str],
        not_before: dt.datetime,
        not_after: dt.datetime,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        """A leaf as csrsigning's local signer makes one: KU and EKU from the usages,
        CA:FALSE, the CSR's SANs, AKI; NotAfter capped at the CA's."""
        not_after = min(not_after, compat.not_valid_after(self.cert))
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        ku = _key_usage(usages)
        if any(getattr(ku, f) for f in ("digital_signature", "key_encipherment", "key_cert_sign")):
            b = b.add_extension(ku, critical=True)
        ekus = list(dict.fromkeys(EXT_KEY_USAGES[u] for u in usages if u in EXT_KEY_USAGES))
        if ekus:
            b = b.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(self.key, hashes.SHA256())


def _key_usage(usages: list[str]) -> x509.KeyUsage:
    bits = {KEY_USAGES[u] for u in usages if u in KEY_USAGES}
    agreement = "key_agreement" in bits
    return x509.KeyUsage(
        digital_signature="digital_signature" in bits,
        content_commitment="content_commitment" in bits,
        key_encipherment="key_encipherment" in bits,
        data_encipherment="data_encipherment" in bits,
        key_agreement=agreement,
        key_cert_sign="key_cert_sign" in bits,
        crl_sign="crl_sign" in bits,
        encipher_only=agreement and "encipher_only" in bits,
        decipher_only=agreement and "decipher_only" in bits,
    )


def _csr_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _subject_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def kubelet_csr_error(
    csr: x509.CertificateSigningRequest, usages: list[str], signer: str
) -> str | None:
    """pkg/apis/certificates ValidateKubeletClientCSR / ValidateKubeletServingCSR as of
    1.20-1.24 (only the exact three usages), or None when the request is acceptable."""
    sans = _csr_sans(csr)
    dns = any(isinstance(n, x509.DNSName) for n in sans)
    ips = any(isinstance(n, x509.IPAddress) for n in sans)
    cns = _subject_values(csr.subject, NameOID.COMMON_NAME)
    client = signer == CLIENT_SIGNER
    want = KUBELET_CLIENT_USAGES if client else KUBELET_SERVING_USAGES
    checks = [  # in the order Kubernetes checks them; the first failure is the answer
        (
            _subject_values(csr.subject, NameOID.ORGANIZATION_NAME) != [NODES],
            "subject organization is not system:nodes",
        ),
        (client and dns, "DNS subjectAltNames are not allowed"),
        (not client and not dns and not ips, "DNS or IP subjectAltName is required"),
        (
            any(isinstance(n, x509.RFC822Name) for n in sans),
            "Email subjectAltNames are not allowed",
        ),
        (client and ips, "IP subjectAltNames are not allowed"),
        (
            any(isinstance(n, x509.UniformResourceIdentifier) for n in sans),
            "URI subjectAltNames are not allowed",
        ),
        (
            not cns or not cns[0].startswith(NODE_PREFIX),
            "subject common name does not begin with system:node:",
        ),
        (set(usages) != want, f"usages did not match [{' '.join(sorted(want))}]"),
    ]
    return next((message for failed, message in checks if failed), None)


# -- meta/v1 Status ------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        doc: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            doc["details"] = self.details
        doc["code"] = self.code
        return doc


def _csr_details(name: str = "", **more: Any) -> Obj:
    d: Obj = {"name": name} if name else {}
    return {**d, "group": CSR_GROUP, "kind": CSR_RESOURCE, **more}


def _quote(name: str) -> str:
    return f' "{name}"' if name else ""


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(user: str, verb: str, name: str = "") -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{CSR_RESOURCE}.{CSR_GROUP}{_quote(name)} is forbidden: User "{user}" cannot '
        f'{verb} resource "{CSR_RESOURCE}" in API group "{CSR_GROUP}" at the cluster scope',
        _csr_details(name),
    )


def not_found(name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{CSR_RESOURCE}.{CSR_GROUP} "{name}" not found', _csr_details(name)
    )


def already_exists(name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{CSR_RESOURCE}.{CSR_GROUP} "{name}" already exists',
        _csr_details(name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(name: str, causes: list[Cause]) -> ApiError:
    """422 with field causes: (field, cause reason, message after the field)."""
    summary = ", ".join(f"{f}: {m}" for f, _, m in causes)
    many = f"[{summary}]" if len(causes) > 1 else summary
    return ApiError(
        422,
        "Invalid",
        f"CertificateSigningRequest.{CSR_GROUP}{_quote(name)} is invalid: {many}",
        {
            **({"name": name} if name else {}),
            "group": CSR_GROUP,
            "kind": "CertificateSigningRequest",
            "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes],
        },
    )


def _name_causes(name: str) -> list[Cause]:
    if not name:
        return [
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        ]
    if name in (".", "..") or "/" in name or "%" in name:
        why = "may not contain '/' or '%' or be '.' or '..'"
        return [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {why}')]
    return []


def _request_causes(request: object) -> list[Cause]:
    """spec.request is []byte: base64 in JSON (bad base64 is a decode error, 400), then a
    PEM CERTIFICATE REQUEST whose signature verifies."""
    if not request:
        return [("spec.request", "FieldValueRequired", "Required value")]
    try:
        raw = base64.b64decode(str(request), validate=True)
    except ValueError:
        raise bad_request("illegal base64 data in spec.request") from None
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as e:
        error = str(e)
    else:
        if csr.is_signature_valid:
            return []
        error = "x509: CSR signature does not verify"
    return [("spec.request", "FieldValueInvalid", f"Invalid value: []byte{{...}}: {error}")]


def _signer_causes(signer: object) -> list[Cause]:
    if not signer:
        return [("spec.signerName", "FieldValueRequired", "Required value")]
    if signer == LEGACY_SIGNER:
        why = "the legacy signerName is not allowed via this API version"
    elif not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^/\s]+(/[^/\s]+)*", str(signer)):
        why = "must be a fully qualified domain and path of the form 'example.com/signer-name'"
    else:
        return []
    return [("spec.signerName", "FieldValueInvalid", f'Invalid value: "{signer}": {why}')]


def _usage_causes(usages: object) -> list[Cause]:
    if not isinstance(usages, list) or not usages:
        return [("spec.usages", "FieldValueRequired", "Required value: usages must be provided")]
    supported = ", ".join(f'"{s}"' for s in SUPPORTED_USAGES)
    return [
        (
            f"spec.usages[{i}]",
            "FieldValueNotSupported",
            f'Unsupported value: "{u}": supported values: {supported}',
        )
        for i, u in enumerate(usages)
        if u not in SUPPORTED_USAGES
    ]


def _expiration_causes(expiration: object) -> list[Cause]:
    """spec.expirationSeconds (1.22+): at least 600."""
    if expiration is None or (isinstance(expiration, int) and expiration >= 600):
        return []
    why = "may not specify a duration less than 600 seconds (10 minutes)"
    return [("spec.expirationSeconds", "FieldValueInvalid", f"Invalid value: {expiration}: {why}")]


# -- the server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]


@dataclass
class Token:
    secret: str
    expired: bool
    signing: bool


class StandinApiServer:
    """The stand-in API server; see the module docstring.

    ``approver`` decides CSRs for every signer but kubelet-serving, ``serving_approver``
    for kubelet-serving, 50-200 ms after creation: "auto" approves what the csrapproving
    controller would (for serving, which Kubernetes never auto-approves: a node asking for
    itself, valid for the signer) and leaves the rest pending; "deny" denies everything
    (reason KubectlDeny); "fail" approves, then the signer adds Failed
    (SignerValidationFailure) and no certificate; "never" leaves CSRs pending.
    Once approved, the signer (50 ms later) checks the request as kube-controller-manager's
    does for the two kubelet signers (Failed if it does not pass) and sets
    ``status.certificate``; other signers' approved CSRs get no certificate. An
    ``issue_hook`` replaces check and signing; it may return a certificate or the raw bytes
    to base64 into ``status.certificate``; if it raises, the CSR gets Failed.

    Scripting attributes: ``jws_secret_override``, ``cluster_info_kubeconfig``,
    ``cluster_info_tamper_after`` (after that many GETs, a kubeconfig naming another CA,
    or ``cluster_info_tampered_kubeconfig`` if set), ``issue_hook``, ``tokens``.
    Records: ``csrs`` (name -> current object), ``requests`` ((method, path with query,
    user), user ``REJECTED`` for a 401), ``cluster_info_gets``, ``handshake_errors``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        approver: str = "auto",
        serving_approver: str = "never",
        cert_lifetime: timedelta = timedelta(hours=1),
        backdate: timedelta = timedelta(minutes=5),
        watch: bool = True,
        signer_ca_separate: bool = False,
    ) -> None:
        if approver not in APPROVERS or serving_approver not in APPROVERS:
            raise ValueError(f"approver must be one of {APPROVERS}")
        self.workdir = workdir
        self.approver = approver
        self.serving_approver = serving_approver
        self.cert_lifetime = cert_lifetime
        self.backdate = backdate
        self.watch = watch

        self.jws_secret_override: dict[str, str] = {}
        self.cluster_info_kubeconfig: str | None = None
        self.cluster_info_tamper_after: int | None = None
        self.cluster_info_tampered_kubeconfig: str | None = None  # None: same, another CA
        self.cluster_info_gets = 0
        self.issue_hook: IssueHook | None = None
        self.csrs: dict[str, Obj] = {}
        self.nodes: dict[str, Obj] = {}  # Node objects, as a kubelet would have registered
        self.requests: list[tuple[str, str, str]] = []
        self.handshake_errors: list[str] = []
        self.tokens: dict[str, Token] = {}

        self.ca = Authority.create("kubernetes")
        self.signer_ca = Authority.create("stand-in kubelet signer") if signer_ca_separate else None
        self._impostor: Authority | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._events: list[tuple[str, Obj]] = []  # (type, object snapshot)
        self._rv = 1000
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._cm_uid = str(uuid.uuid4())
        self._cm_created = timestamp()

        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "ca.crt").write_bytes(self.ca_pem)
        self._tls = self._server_context()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.standin = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- what a client needs ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def ca_cert(self) -> x509.Certificate:
        return self.ca.cert

    @property
    def ca_pem(self) -> bytes:
        return pem(self.ca.cert)

    @property
    def ca_pin(self) -> str:
        return spki_pin(self.ca.cert)

    @property
    def signer_ca_cert(self) -> x509.Certificate:
        """The CA that signs issued certificates (the cluster CA unless separate)."""
        return (self.signer_ca or self.ca).cert

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> StandinApiServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at once: watches end, idle keep-alive connections are cut."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- scripting ------------------------------------------------------------------------

    def add_token(self, token: str, *, expired: bool = False, signing: bool = True) -> None:
        m = TOKEN_RE.match(token)
        if not m:
            raise ValueError(f"not a bootstrap token: {token!r}")
        self.tokens[m[1]] = Token(secret=m[2], expired=expired, signing=signing)

    def expire_token(self, token: str) -> None:
        """Expire a token (by id or whole) from now on; its JWS stays in cluster-info,
        as between a real token's expiry and the token cleaner's next pass."""
        self.tokens[token.partition(".")[0]].expired = True

    def approve(
        self, name: str, reason: str = "KubectlApprove", message: str = KUBECTL_APPROVE
    ) -> None:
        """Approve like ``kubectl certificate approve``; the signer then issues shortly."""
        if self._add_condition(name, "Approved", reason, message):
            self._later(0.05, self._sign, name)

    def deny(self, name: str, reason: str = "KubectlDeny", message: str = KUBECTL_DENY) -> None:
        self._add_condition(name, "Denied", reason, message)

    def fail(
        self, name: str, reason: str = "SignerValidationFailure", message: str = FAILED_ON_CUE
    ) -> None:
        """Add a Failed condition (only; a real signer fails approved CSRs)."""
        self._add_condition(name, "Failed", reason, message)

    def issue_client_cert(
        self,
        node: str,
        key: CertificateIssuerPrivateKeyTypes | CertificateIssuerPublicKeyTypes,
        *,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.Certificate:
        """A node client certificate from the cluster CA, validity as given (e.g. expired)."""
        private = (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
            dsa.DSAPrivateKey,
        )
        public = key.public_key() if isinstance(key, private) else key
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES),
                x509.NameAttribute(NameOID.COMMON_NAME, NODE_PREFIX + node),
            ]
        )
        return self.ca.issue(
            subject,
            public,
            usages=sorted(KUBELET_CLIENT_USAGES),
            not_before=not_before,
            not_after=not_after,
        )

    # -- cluster-info ---------------------------------------------------------------------

    def cluster_info(self) -> Obj:
        with self._lock:
            self.cluster_info_gets += 1
            n = self.cluster_info_gets
        tampered = self.cluster_info_tamper_after is not None and n > self.cluster_info_tamper_after
        if tampered:
            text = self.cluster_info_tampered_kubeconfig
            if text is None:
                if self._impostor is None:
                    self._impostor = Authority.create("kubernetes")
                text = cluster_info_kubeconfig(self.url, pem(self._impostor.cert))
        else:
            text = self.cluster_info_kubeconfig or cluster_info_kubeconfig(self.url, self.ca_pem)
        data = {}
        for tid, tok in sorted(self.tokens.items()):
            if tok.signing:
                secret = self.jws_secret_override.get(tid, tok.secret)
                data[f"jws-kubeconfig-{tid}"] = detached_jws(text, tid, secret)
        data["kubeconfig"] = text
        return {
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {
                "name": "cluster-info",
                "namespace": "kube-public",
                "uid": self._cm_uid,
                "resourceVersion": "2" if tampered else "1",
                "creationTimestamp": self._cm_created,
            },
            "data": data,
        }

    # -- authentication / authorization ---------------------------------------------------

    def authenticate(self, peer_der: bytes | None, authorization: str | None) -> User | None:
        """Union of x509 then bootstrap token, as kube-apiserver: the first success wins;
        with none, any error is 401 (ApiError); with nothing presented, anonymous."""
        failed = False
        if peer_der:
            cert = x509.load_der_x509_certificate(peer_der)
            now = utcnow()
            if compat.not_valid_before(cert) <= now <= compat.not_valid_after(cert):
                cns = _subject_values(cert.subject, NameOID.COMMON_NAME)
                orgs = _subject_values(cert.subject, NameOID.ORGANIZATION_NAME)
                return User(cns[0] if cns else "", (*orgs, AUTHENTICATED))
            failed = True  # "x509: certificate has expired or is not yet valid"
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                m = TOKEN_RE.match(value.strip())
                tok = self.tokens.get(m[1]) if m else None
                if (
                    m
                    and tok is not None
                    and not tok.expired
                    and hmac.compare_digest(tok.secret, m[2])
                ):
                    return User(
                        f"system:bootstrap:{m[1]}",
                        (BOOTSTRAPPERS, KUBEADM_TOKEN_GROUP, AUTHENTICATED),
                    )
                failed = True  # "invalid bearer token"
        if failed:
            raise unauthorized()
        return None

    @staticmethod
    def may_use_csrs(user: User | None) -> bool:
        """system:node-bootstrapper and system:node: create/get/list/watch CSRs."""
        return user is not None and (BOOTSTRAPPERS in user.groups or NODES in user.groups)

    # -- CSRs ------------------------------------------------------------------------------

    def create_csr(self, user: User, body: bytes) -> Obj:
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise bad_request(f"json: {e}") from None
        if not isinstance(doc, dict):
            raise bad_request("the object provided is unrecognized")
        if doc.get("apiVersion", CSR_API_VERSION) != CSR_API_VERSION:
            raise bad_request(
                f"the API version in the data ({doc['apiVersion']}) does not match the "
                f"expected API version ({CSR_API_VERSION})"
            )
        if doc.get("kind", "CertificateSigningRequest") != "CertificateSigningRequest":
            raise bad_request(
                f"the kind in the data ({doc['kind']}) does not match the expected kind "
                "(CertificateSigningRequest)"
            )
        meta = doc.get("metadata") or {}
        spec = doc.get("spec") or {}
        if not isinstance(meta, dict) or not isinstance(spec, dict):
            raise bad_request("json: cannot unmarshal metadata or spec")
        name = meta.get("name") or ""
        generate = meta.get("generateName") or ""
        if not name and generate:
            name = generate + "".join(random.choice(NAME_ALPHABET) for _ in range(5))
        request, signer = spec.get("request"), spec.get("signerName")
        usages, expiration = spec.get("usages"), spec.get("expirationSeconds")
        causes = [
            *_name_causes(name),
            *_request_causes(request),
            *_signer_causes(signer),
            *_usage_causes(usages),
            *_expiration_causes(expiration),
        ]
        if causes:
            raise invalid(name, causes)

        new_meta: Obj = {"name": name}
        if generate:
            new_meta["generateName"] = generate
        new_spec: Obj = {"request": request, "signerName": signer}
        if expiration is not None:
            new_spec["expirationSeconds"] = expiration
        new_spec["usages"] = list(cast("list[str]", usages))
        new_spec["username"] = user.name
        new_spec["groups"] = list(user.groups)
        obj: Obj = {
            "kind": "CertificateSigningRequest",
            "apiVersion": CSR_API_VERSION,
            "metadata": new_meta,
            "spec": new_spec,
            "status": {},
        }
        with self._cond:
            if name in self.csrs:
                raise already_exists(name)
            new_meta["uid"] = str(uuid.uuid4())
            new_meta["resourceVersion"] = ""
            new_meta["creationTimestamp"] = timestamp()
            for extra in ("labels", "annotations"):
                if isinstance(meta.get(extra), dict):
                    new_meta[extra] = dict(meta[extra])
            self.csrs[name] = obj
            self._changed(obj, "ADDED")
            created = copy.deepcopy(obj)
        self._later(random.uniform(0.05, 0.2), self._decide, name)
        return created

    def get_csr(self, name: str) -> Obj:
        with self._lock:
            if name not in self.csrs:
                raise not_found(name)
            return copy.deepcopy(self.csrs[name])

    def list_csrs(self, selector: Callable[[Obj], bool]) -> Obj:
        with self._lock:
            items = []
            for obj in self.csrs.values():
                if selector(obj):
                    item = copy.deepcopy(obj)
                    del item["kind"], item["apiVersion"]  # list items carry no TypeMeta
                    items.append(item)
            rv = str(self._rv)
        return {
            "kind": "CertificateSigningRequestList",
            "apiVersion": CSR_API_VERSION,
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    def _changed(self, obj: Obj, kind: str) -> None:
        """Call with the lock held: bump resourceVersion, log and broadcast the event."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._events.append((kind, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _add_condition(self, name: str, kind: str, reason: str, message: str) -> bool:
        with self._cond:
            obj = self.csrs[name]
            conds: list[Obj] = obj["status"].setdefault("conditions", [])
            have = {c["type"] for c in conds}
            if kind in have:
                return False
            if {kind, *have} >= {"Approved", "Denied"}:
                raise ValueError(f"{name}: Approved and Denied conditions are mutually exclusive")
            now = timestamp()
            conds.append(
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                }
            )
            self._changed(obj, "MODIFIED")
            return True

    def _later(self, delay: float, fn: Callable[[str], None], name: str) -> None:
        def run() -> None:
            if not self._stop.wait(delay):
                fn(name)

        threading.Thread(target=run, daemon=True).start()

    def _decide(self, name: str) -> None:
        """The approving controller's turn."""
        with self._lock:
            obj = copy.deepcopy(self.csrs.get(name))
        if not obj or obj["status"].get("conditions"):
            return
        spec = obj["spec"]
        mode = self.serving_approver if spec["signerName"] == SERVING_SIGNER else self.approver
        if mode == "never":
            return
        if mode == "deny":
            self.deny(name)
            return
        if mode == "fail":
            if self._add_condition(name, "Approved", "AutoApproved", APPROVED_NODE):
                self._later(0.05, self.fail, name)
            return
        message = self._recognize(obj)
        if message is not None:
            self.approve(name, "AutoApproved", message)

    def _recognize(self, obj: Obj) -> str | None:
        """sarapprove (1.20-1.24): selfnodeclient for system:nodes asking for their own CN,
        nodeclient for bootstrappers; for kubelet-serving (no approver in Kubernetes; this
        plays kubelet-csr-approver) a node asking for itself."""
        spec = obj["spec"]
        csr = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
        signer = spec["signerName"]
        if signer not in (CLIENT_SIGNER, SERVING_SIGNER):
            return None
        if kubelet_csr_error(csr, spec["usages"], signer) is not None:
            return None
        cns = _subject_values(csr.subject, NameOID.COMMON_NAME)
        groups = spec.get("groups", [])
        if spec["username"] == cns[0] and NODES in groups:
            return APPROVED_SELF
        if signer == CLIENT_SIGNER and BOOTSTRAPPERS in groups:
            return APPROVED_NODE
        return None

    def _sign(self, name: str) -> None:
        """The signing controller's turn: validate for the signer, then issue."""
        with self._lock:
            obj = copy.deepcopy(self.csrs.get(name))
        if not obj:
            return
        status, spec = obj["status"], obj["spec"]
        have = {c["type"] for c in status.get("conditions", [])}
        if "Approved" not in have or have & {"Denied", "Failed"} or status.get("certificate"):
            return
        csr = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
        issued: x509.Certificate | bytes
        if self.issue_hook is not None:
            try:
                issued = self.issue_hook(csr, obj)
            except Exception as e:  # noqa: BLE001 - a hook's failure is the signer's failure
                self.fail(name, "SignerValidationFailure", f"stand-in issue_hook: {e}")
                return
        else:
            signer = spec["signerName"]
            if signer not in (CLIENT_SIGNER, SERVING_SIGNER):
                return  # nobody signs for it here: stays approved without a certificate
            error = kubelet_csr_error(csr, spec["usages"], signer)
            if error is not None:
                self.fail(name, "SignerValidationFailure", error)
                return
            lifetime = self.cert_lifetime
            if "expirationSeconds" in spec:
                lifetime = min(lifetime, timedelta(seconds=spec["expirationSeconds"]))
            now = utcnow()
            issued = (self.signer_ca or self.ca).issue(
                csr.subject,
                cast("CertificateIssuerPublicKeyTypes", csr.public_key()),
                usages=spec["usages"],
                not_before=now - self.backdate,
                not_after=now + lifetime,
                sans=_csr_sans(csr),
            )
        data = issued if isinstance(issued, bytes) else pem(issued)
        with self._cond:
            current = self.csrs[name]
            current["status"]["certificate"] = base64.b64encode(data).decode()
            self._changed(current, "MODIFIED")

    # -- watch ------------------------------------------------------------------------------

    def watch_events(
        self, selector: Callable[[Obj], bool], resource_version: str | None, timeout: float
    ) -> Iterator[Obj]:
        """Yield watch event dicts until ``timeout`` or stop: the current state as ADDED
        (no resourceVersion, or "0"), else every event after that resourceVersion."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if not resource_version or resource_version == "0":
                pending = [("ADDED", copy.deepcopy(o)) for o in self.csrs.values() if selector(o)]
                index = len(self._events)
            else:
                rv = int(resource_version)
                index = next(
                    (
                        i
                        for i, (_, o) in enumerate(self._events)
                        if int(o["metadata"]["resourceVersion"]) > rv
                    ),
                    len(self._events),
                )
                pending = []
        for kind, obj in pending:
            yield {"type": kind, "object": obj}
        while True:
            with self._cond:
                while index >= len(self._events) and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._events[index:]
                index = len(self._events)
                done = self._stop.is_set() or time.monotonic() >= deadline
            for kind, obj in batch:
                if selector(obj):
                    yield {"type": kind, "object": obj}
            if done:
                return

    # -- TLS -------------------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = utcnow()
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(
                x509.DNSName(n)
                for n in (
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                )
            ),
        ]
        cert = self.ca.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            key.public_key(),
            usages=["digital signature", "key encipherment", "server auth"],
            not_before=now - timedelta(hours=1),
            not_after=now + timedelta(days=365),
            sans=sans,
        )
        crt, keyfile = self.workdir / "apiserver.crt", self.workdir / "apiserver.key"
        crt.write_bytes(pem(cert))
        keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        keyfile.chmod(0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(crt, keyfile)
        client_cas = self.ca_pem + (pem(self.signer_ca.cert) if self.signer_ca else b"")
        ctx.load_verify_locations(cadata=client_cas.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags = ssl.VerifyFlags(ctx.verify_flags | X509_V_FLAG_NO_CHECK_TIME)
        return ctx

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


# -- HTTP plumbing ------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandinApiServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's own thread: the TLS handshake, then HTTP."""
        st = self.standin
        sock = cast(socket.socket, request)
        sock.settimeout(10)
        try:
            tls = st._tls.wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as e:
            st.handshake_errors.append(str(e))
            sock.close()
            return
        st._track(tls, True)
        try:
            with tls:
                _Handler(tls, client_address, self)
        except (OSError, ValueError):
            pass
        finally:
            st._track(tls, False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up is not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections; stop() cuts them sooner
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- answers --

    def _send_json(self, code: int, doc: Obj) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_text(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
                if len(out) > MAX_BODY:
                    raise ApiError(413, "RequestEntityTooLarge", "request entity too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge", "request entity too large")
        return self.rfile.read(length)

    # -- routing --

    def _dispatch(self, method: str) -> None:
        st = self.server.standin
        conn = cast(ssl.SSLSocket, self.connection)
        user_name = REJECTED
        try:
            # the whole body first, whatever the answer: keep-alive needs it off the wire
            body = self._body()
            try:
                user = st.authenticate(
                    conn.getpeercert(binary_form=True), self.headers.get("Authorization")
                )
                user_name = user.name if user else ANONYMOUS
            finally:
                st.requests.append((method, self.path, user_name))
            self._route(st, method, user, body)
        except ApiError as e:
            if e.code == 413:
                self.close_connection = True  # the rest of the body is still unread
            self._send_json(e.code, e.status())
        if st._stop.is_set():
            self.close_connection = True

    def _route(self, st: StandinApiServer, method: str, user: User | None, body: bytes) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        query = parse_qs(parts.query, keep_blank_values=True)
        who = user.name if user else ANONYMOUS
        if path == CLUSTER_INFO_PATH:
            # kubeadm's RoleBinding kubeadm:bootstrap-signer-clusterinfo names the user
            # system:anonymous only; nobody else is granted this ConfigMap.
            if method != "GET" or user is not None:
                verb = {"GET": "get", "POST": "create", "PUT": "update"}.get(method, method.lower())
                raise ApiError(
                    403,
                    "Forbidden",
                    f'configmaps "cluster-info" is forbidden: User "{who}" cannot {verb} '
                    'resource "configmaps" in API group "" in the namespace "kube-public"',
                    {"name": "cluster-info", "kind": "configmaps"},
                )
            self._send_json(200, st.cluster_info())
        elif path == CSR_PATH:
            self._collection(st, method, user, body, query)
        elif path.startswith(NODES_PATH + "/") and "/" not in path[len(NODES_PATH) + 1 :]:
            self._node(st, method, user, path[len(NODES_PATH) + 1 :])
        elif path.startswith(CSR_PATH + "/") and "/" not in path[len(CSR_PATH) + 1 :]:
            name = path[len(CSR_PATH) + 1 :]
            verb = "get" if method == "GET" else method.lower()
            # system:node-bootstrapper and system:node may not update or delete CSRs
            if method != "GET" or not st.may_use_csrs(user):
                raise forbidden(who, verb, name)
            self._send_json(200, st.get_csr(name))
        else:
            self._send_text(404, "404 page not found\n")

    def _node(self, st: StandinApiServer, method: str, user: User | None, name: str) -> None:
        """GET of one Node: the Node authorizer lets a node read its own (and only GET is
        served here); the real NotFound Status when there is none."""
        who = user.name if user else ANONYMOUS
        if method != "GET" or who != f"system:node:{name}":
            verb = "get" if method == "GET" else method.lower()
            raise ApiError(
                403, "Forbidden",
                f'nodes "{name}" is forbidden: User "{who}" cannot {verb} resource "nodes" in '
                'API group "" at the cluster scope', {"name": name, "kind": "nodes"},
            )  # fmt: skip
        if name not in st.nodes:
            raise ApiError(
                404, "NotFound", f'nodes "{name}" not found', {"name": name, "kind": "nodes"}
            )
        self._send_json(200, st.nodes[name])

    def _collection(
        self,
        st: StandinApiServer,
        method: str,
        user: User | None,
        body: bytes,
        query: dict[str, list[str]],
    ) -> None:
        watching = _flag(query, "watch")
        verb = {"POST": "create", "GET": "watch" if watching else "list"}.get(
            method, method.lower()
        )
        if user is None or not st.may_use_csrs(user):
            raise forbidden(user.name if user else ANONYMOUS, verb)
        if method == "POST":
            self._send_json(201, st.create_csr(user, body))
            return
        if method != "GET":
            raise _method_not_allowed(method)
        selector = _field_selector(query.get("fieldSelector", [""])[0])
        if not watching:
            self._send_json(200, st.list_csrs(selector))
        elif not st.watch:
            raise ApiError(
                405,
                "MethodNotAllowed",
                f'watch is not supported on resources of kind "{CSR_RESOURCE}.{CSR_GROUP}"',
                _csr_details(),
            )
        else:
            self._watch(st, selector, query)

    def _watch(
        self, st: StandinApiServer, selector: Callable[[Obj], bool], query: dict[str, list[str]]
    ) -> None:
        rv = query.get("resourceVersion", [""])[0]
        try:
            timeout = float(query.get("timeoutSeconds", [str(DEFAULT_WATCH_TIMEOUT)])[0])
            if rv:
                int(rv)
        except ValueError:
            raise bad_request("invalid timeoutSeconds or resourceVersion") from None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in st.watch_events(selector, rv or None, timeout):
            self._chunk(json.dumps(event, separators=(",", ":")).encode() + b"\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _flag(query: dict[str, list[str]], key: str) -> bool:
    """apimachinery's Convert_Slice_string_To_bool: present and not "false"/"0" is true."""
    values = query.get(key)
    return bool(values) and values[0] not in ("false", "False", "0")  # type: ignore[index]


def _field_selector(text: str) -> Callable[[Obj], bool]:
    """metadata.name and spec.signerName with =, == or !=, comma-separated."""
    fields = {
        "metadata.name": lambda o: o["metadata"]["name"],
        "spec.signerName": lambda o: o["spec"]["signerName"],
    }
    terms: list[tuple[Callable[[Obj], str], bool, str]] = []
    for term in filter(None, text.split(",")):
        m = re.fullmatch(r"([^=!]+)(==|!=|=)(.*)", term)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        if m[1] not in fields:
            raise bad_request(f"field label not supported: {m[1]}")
        terms.append((fields[m[1]], m[2] != "!=", m[3]))
    return lambda obj: all((get(obj) == value) == eq for get, eq, value in terms)


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({method})",
        _csr_details(),
    )
