"""A STAND-IN for a CFSSL server, on 127.0.0.1, that misbehaves on cue.

This is not CFSSL: a real ``cfssl serve`` will not send a CA:TRUE leaf, a 100 MB body or a
reset on request, so a scripted server plays the CA. It speaks CFSSL's wire format as the
real one does (tests/integration/test_join_cfssl.py joins the real one): ``info`` and
``authsign`` as JSON POSTs, the ``{"success", "result", "errors", "messages"}`` envelope,
the HMAC-SHA256 token over the exact inner request bytes. When honest, it issues what a
seed-style ``kubelet`` profile issues: the CSR's subject and key, the request's ``hosts``
as SANs, KU digitalSignature + keyEncipherment, EKU clientAuth + serverAuth, CA:FALSE.

It is a raw socket server (one thread per connection, ``Connection: close``), so that a
responder can write anything at all: headers that lie about the length, a dribble, a reset.
Its CA is made here with ``cryptography``; the node's config pins it, so only the scripted
misbehaviour is under test.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.lab import certs
from tests.lab.certs import CA

INFO = "/api/v1/cfssl/info"
AUTHSIGN = "/api/v1/cfssl/authsign"
NODES = "system:nodes"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def spki_pin(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def authority(cn: str) -> CA:
    """A CA's key and self-signed certificate, valid around the real clock."""
    now = utcnow()
    return certs.authority(
        cn, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=365)
    )


@dataclass
class Leaf:
    """What an honest ``authsign`` would issue; a case edits fields before signing."""

    subject: x509.Name
    public_key: Any
    hosts: list[str]
    issuer: CA
    not_before: dt.datetime
    not_after: dt.datetime
    ca: bool = False
    eku: list[x509.ObjectIdentifier] = field(
        default_factory=lambda: [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    )
    extra_extensions: list[tuple[x509.ExtensionType, bool]] = field(default_factory=list)

    def sign(self) -> x509.Certificate:
        dns: list[str] = []
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        for h in self.hosts:
            try:
                ips.append(ipaddress.ip_address(h))
            except ValueError:
                dns.append(h)
        return self.issuer.issue(
            self.public_key,
            subject=self.subject,
            dns=dns,
            ips=ips,
            eku=self.eku or None,
            is_ca=self.ca,
            not_before=self.not_before,
            not_after=self.not_after,
            extensions=self.extra_extensions,
        )


@dataclass
class Request:
    """One HTTP request as the stand-in read it, and the socket to answer on."""

    method: str
    path: str
    body: bytes
    conn: socket.socket


Responder = Callable[["StandInCFSSL", Request], None]
LeafEdit = Callable[["StandInCFSSL", Leaf], None]


class StandInCFSSL:
    """The stand-in server. ``script(info=..., authsign=...)`` sets the misbehaviour;
    ``None`` for an endpoint means honest. ``hits`` counts requests per path;
    ``sent`` counts the bytes a streaming responder got out before the client hung up."""

    def __init__(self) -> None:
        self.ca = authority("join-agent stand-in CA")
        self.auth_key_hex = secrets.token_hex(16)
        self.info: Responder | None = None
        self.authsign: Responder | None = None
        self.hits: Counter[str] = Counter()
        self.sent = 0
        self.stop = threading.Event()
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    # -- what the node's config needs (duck-typed like tests.lab.cfssl_ca.CfsslCA) --

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._srv.getsockname()[1]}"

    @property
    def pin(self) -> str:
        return spki_pin(self.ca.cert)

    @property
    def ca_pem(self) -> bytes:
        return pem(self.ca.cert).encode()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> StandInCFSSL:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._srv.close()

    def script(self, *, info: Responder | None = None, authsign: Responder | None = None) -> None:
        self.info, self.authsign = info, authsign
        self.hits.clear()
        self.sent = 0

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                req = _read_request(conn)
            except (OSError, ValueError):
                return
            if req is None:
                return
            self.hits[req.path] += 1
            if req.method != "POST":
                respond = raw(405, b"method not allowed", "text/plain")
            elif req.path == INFO:
                respond = self.info or honest_info
            elif req.path == AUTHSIGN:
                respond = self.authsign or signing()
            else:
                respond = raw(404, b"404 page not found\n", "text/plain")
            with contextlib.suppress(OSError):
                respond(self, req)

    # -- CFSSL's answers ----------------------------------------------------------

    def leaf_for(self, req: Request) -> Leaf | bytes:
        """The honest leaf for an ``authsign`` request, or the error envelope to send."""
        try:
            outer = json.loads(req.body)
            token = base64.b64decode(outer["token"], validate=True)
            inner = base64.b64decode(outer["request"], validate=True)
        except (ValueError, KeyError, TypeError):
            return envelope_error(400, "Unable to parse authenticated sign request")
        want = hmac.new(bytes.fromhex(self.auth_key_hex), inner, hashlib.sha256).digest()
        if not hmac.compare_digest(token, want):
            return envelope_error(400, "invalid token")
        doc = json.loads(inner)
        csr = x509.load_pem_x509_csr(doc["certificate_request"].encode())
        if "hosts" in doc:
            hosts = list(doc["hosts"])
        else:
            try:
                ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                hosts = [str(v) for v in ext.value.get_values_for_type(x509.DNSName)]
                hosts += [str(v) for v in ext.value.get_values_for_type(x509.IPAddress)]
            except x509.ExtensionNotFound:
                hosts = []
        now = utcnow()
        return Leaf(
            subject=csr.subject,
            public_key=csr.public_key(),
            hosts=hosts,
            issuer=self.ca,
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + dt.timedelta(days=365),
        )


def envelope(result: Any, *, success: bool = True) -> dict[str, Any]:
    return {"success": success, "result": result, "errors": [], "messages": []}


def envelope_error(code: int, message: str) -> bytes:
    doc = {"success": False, "result": None, "errors": [{"code": code, "message": message}]}
    doc["messages"] = []
    return json.dumps(doc).encode()


def info_result(*certs: x509.Certificate) -> dict[str, Any]:
    return {
        "certificate": pem(*certs).rstrip("\n"),  # CFSSL may omit the trailing newline
        "usages": ["signing", "key encipherment", "client auth", "server auth"],
        "expiry": "8760h",
    }


# -- responders: each writes one whole (or deliberately broken) HTTP answer -----------


def send(conn: socket.socket, status: int, body: bytes, ctype: str = "application/json") -> None:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    conn.sendall(head.encode() + body)


def raw(status: int, body: bytes, ctype: str = "application/json") -> Responder:
    return lambda s, req: send(req.conn, status, body, ctype)


def json_answer(doc: Any, status: int = 200) -> Responder:
    return raw(status, json.dumps(doc).encode())


def honest_info(s: StandInCFSSL, req: Request) -> None:
    send(req.conn, 200, json.dumps(envelope(info_result(s.ca.cert))).encode())


def info_with(certs: Callable[[StandInCFSSL], Sequence[x509.Certificate]]) -> Responder:
    def respond(s: StandInCFSSL, req: Request) -> None:
        send(req.conn, 200, json.dumps(envelope(info_result(*certs(s)))).encode())

    return respond


def signing(
    edit: LeafEdit | None = None,
    *,
    extra: Callable[[StandInCFSSL], Sequence[x509.Certificate]] = lambda s: (),
    finish: Callable[[StandInCFSSL, x509.Certificate], bytes] | None = None,
) -> Responder:
    """``authsign`` that checks the token like CFSSL, then issues the (edited) leaf.

    ``extra`` appends certificates to the answer's PEM; ``finish`` turns the signed
    certificate into the DER or PEM bytes to send instead of its plain PEM.
    """

    def respond(s: StandInCFSSL, req: Request) -> None:
        leaf = s.leaf_for(req)
        if isinstance(leaf, bytes):
            send(req.conn, 400, leaf, "text/plain")
            return
        if edit is not None:
            edit(s, leaf)
        cert = leaf.sign()
        text = finish(s, cert).decode() if finish else pem(cert)
        doc = envelope({"certificate": text + pem(*extra(s))})
        send(req.conn, 200, json.dumps(doc).encode())

    return respond


def stream_zeros(*, declared: bool, total: int = 100 << 20) -> Responder:
    """A 100 MB answer of zeros, as fast as the socket takes it, with or without a length."""

    def respond(s: StandInCFSSL, req: Request) -> None:
        chunk = b"\0" * (1 << 20)
        if declared:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {total}"
        else:
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
        req.conn.sendall((head + "\r\nConnection: close\r\n\r\n").encode())
        framed = chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk)
        while s.sent < total and not s.stop.is_set():
            req.conn.sendall(framed)  # OSError once the client hangs up: what we want
            s.sent += len(chunk)
        if not declared:
            req.conn.sendall(b"0\r\n\r\n")

    return respond


def dribble(s: StandInCFSSL, req: Request) -> None:
    """The honest answer's length in the headers, then its body one byte a second."""
    leaf = s.leaf_for(req)
    assert not isinstance(leaf, bytes), leaf
    body = json.dumps(envelope({"certificate": pem(leaf.sign())})).encode()
    req.conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body)
    )
    for i in range(len(body)):
        req.conn.sendall(body[i : i + 1])
        s.sent += 1
        if s.stop.wait(1.0):
            return


def cut_mid_body(*, reset: bool) -> Responder:
    """Promise a whole answer, send a third of it, then reset (RST) or just close (FIN)."""

    def respond(s: StandInCFSSL, req: Request) -> None:
        body = json.dumps(envelope(info_result(s.ca.cert))).encode()
        req.conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body[: len(body) // 3])
        )
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            req.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        req.conn.close()

    return respond


def redirect(location: str, status: int = 307) -> Responder:
    def respond(s: StandInCFSSL, req: Request) -> None:
        req.conn.sendall(
            f"HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    return respond


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Request(method=method, path=path, body=body, conn=conn)


# -- DER surgery: certificates that no builder will make ----------------------------------

ECDSA_WITH_SHA1 = bytes.fromhex("300906072a8648ce3d0401")
OID_ISSUER_ALT_NAME = bytes.fromhex("0603551d12")
OID_SUBJECT_ALT_NAME = bytes.fromhex("0603551d11")


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + value


def _children(der: bytes) -> list[bytes]:
    """The element TLVs of one DER SEQUENCE, each whole."""

    def header(pos: int) -> tuple[int, int]:
        n = der[pos + 1]
        if n < 0x80:
            return pos + 2, n
        k = n & 0x7F
        return pos + 2 + k, int.from_bytes(der[pos + 2 : pos + 2 + k], "big")

    start, length = header(0)
    out, pos = [], start
    while pos < start + length:
        value, n = header(pos)
        out.append(der[pos : value + n])
        pos = value + n
    return out


def resign(
    cert: x509.Certificate, key: certs.PrivateKey, edit: Callable[[list[bytes]], list[bytes]], *,
    algorithm: bytes | None = None, digest: hashes.HashAlgorithm | None = None,
) -> bytes:  # fmt: skip
    """PEM of ``cert`` with its TBS elements edited, signed again with ``key``."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("resign writes ECDSA signatures only; the stand-in's CA key is EC")
    outer = _children(cert.public_bytes(serialization.Encoding.DER))
    sig_alg = algorithm or outer[1]
    parts = edit(_children(cert.tbs_certificate_bytes))
    if algorithm is not None:
        parts[2] = algorithm  # the TBS's own copy of the signature algorithm
    tbs = _der(0x30, b"".join(parts))
    signature = key.sign(tbs, ec.ECDSA(digest or hashes.SHA256()))
    der = _der(0x30, tbs + sig_alg + _der(0x03, b"\0" + signature))
    b64 = base64.encodebytes(der).decode().replace("\n", "")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    ).encode()


def sha1_signed(s: StandInCFSSL, cert: x509.Certificate) -> bytes:
    """The leaf signed with ECDSA-with-SHA1, which Go (the API server) refuses since 1.18."""
    return resign(cert, s.ca.key, list, algorithm=ECDSA_WITH_SHA1, digest=hashes.SHA1())  # noqa: S303 - the attack


def duplicate_san(s: StandInCFSSL, cert: x509.Certificate) -> bytes:
    """Turn the leaf's IssuerAltName into a second SubjectAltName extension."""

    def edit(parts: list[bytes]) -> list[bytes]:
        return [p.replace(OID_ISSUER_ALT_NAME, OID_SUBJECT_ALT_NAME) for p in parts]

    return resign(cert, s.ca.key, edit)
