"""`join-agent join` against a hostile CA: every answer is an attack, nothing may be written.

The CA here is a STAND-IN, not CFSSL (tests/adversarial/standin.py): a scripted raw-socket
server on 127.0.0.1 that speaks CFSSL's wire format (``info``, ``authsign`` with its HMAC
token, the JSON envelope) and misbehaves on cue, because a real CFSSL will not misbehave
on cue. It holds its own test CA, made with ``cryptography``, and the node's config pins
that CA, so in each case only the scripted misbehaviour is under test.

Each case: a first ``join`` against the honest stand-in gives the node working
credentials; the tree of its files is snapshotted; the stand-in switches to the case; a
second ``join`` (the real CLI, its own process) must exit non-zero with one sentence
starting "join-agent: " as stderr's last line, no traceback, no "unexpected error" (an
exception that is not ours), and the node's files byte-for-byte as they were. (That a
running kubelet is left alone is out of scope here.)

Cases, 58 in all:

- certificates (test_a_hostile_certificate_is_refused, 19): a CA not matching the pin; a
  leaf from another CA (another name; the CA's own name but another key); our name with
  another key; another node's name; extra SANs (an address; a DNS name); a missing SAN;
  O=system:masters (instead of system:nodes; beside it); a CA:TRUE leaf; no clientAuth
  EKU (serverAuth only; no EKU at all); expired; not yet valid (10 min, beyond the 2 min
  skew); an unknown critical extension; a SHA-1 signature; a duplicated SAN extension in
  the leaf; the same in the pinned CA's own certificate.
- the answer, at ``info`` and at ``authsign`` alike (test_a_hostile_answer_is_refused,
  18 x 2 = 36): garbage JSON (truncated; not UTF-8; nested 100 000 deep); JSON with wrong
  types (success a string; result a list; result null; certificate a number; certificate
  not PEM; errors a string); HTTP 500 (CFSSL envelope; plain text); 502 HTML; a redirect
  to another host (307; 301); a connection reset mid-body; a connection closed mid-body;
  a 100 MB body with Content-Length, streamed as fast as the socket takes it; the same
  chunked, without a length. For the 100 MB bodies the client must stop at its 1 MiB cap:
  the stand-in counts what it got out before the client hung up.
- a body dribbled one byte a second at ``authsign`` (test_a_dribbled_body_..., 1): cut at
  the whole-exchange deadline, 30 s and not configurable, so this one case takes ~30 s.
- success cases (test_an_unpinned_ca_..., 2): ``info`` (or ``authsign``) appends an extra,
  unpinned CA; the join succeeds, and ca_file and the kubeconfig hold only the pinned CA.

19 + 36 + 1 + 2 = 58. Six of them found bugs when first written (unknown critical
extension, SHA-1 signature, duplicated extension x 2, deep JSON nesting x 2); all fixed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from join_agent.pki import compat
from tests.conftest import Node
from tests.lab import certs

from .standin import (
    AUTHSIGN,
    INFO,
    NODES,
    Leaf,
    Responder,
    StandInCFSSL,
    authority,
    cut_mid_body,
    dribble,
    duplicate_san,
    envelope,
    info_with,
    json_answer,
    raw,
    redirect,
    send,
    sha1_signed,
    signing,
    stream_zeros,
    utcnow,
)

EVIL = authority("EVIL CA")
IMPOSTOR = authority("join-agent stand-in CA")  # the pinned CA's name, another key
MiB = 1 << 20


@dataclass(frozen=True)
class Case:
    id: str
    expect: str  # a regex the last line of stderr must match
    info: Responder | None = None
    authsign: Responder | None = None
    bug: str | None = None
    reaches: str | None = None  # the endpoint that must have been asked (default: the hostile one)

    def param(self) -> object:
        marks = [pytest.mark.xfail(strict=True, reason=self.bug)] if self.bug else []
        return pytest.param(self, id=self.id, marks=marks)


def name(cn: str, *orgs: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def edit(fn: Callable[[Leaf], None]) -> Responder:
    return signing(lambda s, leaf: fn(leaf))


def _set(**fields: object) -> Callable[[Leaf], None]:
    def apply(leaf: Leaf) -> None:
        for k, v in fields.items():
            setattr(leaf, k, v)

    return apply


def ca_with_duplicate_san(s: StandInCFSSL) -> str:
    """The pinned CA (same key, so the pin matches) re-issued with two SAN extensions."""
    cn = s.ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    again = certs.authority(
        str(cn),
        key=s.ca.key,
        key_usage=None,
        not_before=utcnow() - dt.timedelta(days=1),
        not_after=utcnow() + dt.timedelta(days=30),
        extensions=(
            (x509.SubjectAlternativeName([x509.DNSName("ca")]), False),
            (x509.IssuerAlternativeName([x509.DNSName("ca")]), False),
        ),
    )
    assert again.cert.subject == s.ca.cert.subject
    return duplicate_san(s, again.cert).decode()


REFUSED = r"the certificate the CA issued for 'worker-1' "
SANS = REFUSED + r"has other SANs than requested \("

CERT_CASES = [
    Case(
        "ca-not-matching-pin",
        r"the CA at http://127\.0\.0\.1:\d+: the CA CN=EVIL CA has pin sha256:[0-9a-f]{64}, "
        r"which is not in signer\.cfssl\.ca_pins",
        info=info_with(lambda s: [EVIL.cert]),
        authsign=signing(lambda s, leaf: _set(issuer=EVIL)(leaf)),
        reaches=INFO,
    ),
    Case(
        "leaf-from-another-ca",
        REFUSED + r"is not signed by the pinned CA .* but by CN=EVIL CA",
        authsign=edit(_set(issuer=EVIL)),
    ),
    Case(
        "leaf-from-an-impostor-with-the-ca-name",
        REFUSED + r"is not signed by the pinned CA",
        authsign=edit(_set(issuer=IMPOSTOR)),
    ),
    Case(
        "our-name-another-key",
        REFUSED + r"carries a public key that is not ours",
        authsign=edit(_set(public_key=certs.ec_key().public_key())),
    ),
    Case(
        "another-nodes-name",
        REFUSED + r"has subject CN=system:node:worker-2,O=system:nodes, not "
        r"CN=system:node:worker-1, O=system:nodes",
        authsign=edit(
            _set(
                subject=name("system:node:worker-2", NODES),
                hosts=["worker-2", "192.0.2.10", "fd00::10"],
            )
        ),
    ),
    Case(
        "extra-san-address",
        SANS + r"extra 10\.9\.9\.9\)",
        authsign=edit(lambda leaf: leaf.hosts.append("10.9.9.9")),
    ),
    Case(
        "extra-san-dns",
        SANS + r"extra kubernetes\.default\)",
        authsign=edit(lambda leaf: leaf.hosts.append("kubernetes.default")),
    ),
    Case(
        "missing-san",
        SANS + r"missing fd00::10\)",
        authsign=edit(lambda leaf: leaf.hosts.remove("fd00::10")),
    ),
    Case(
        "o-system-masters",
        REFUSED + r"has subject CN=system:node:worker-1,O=system:masters, not",
        authsign=edit(_set(subject=name("system:node:worker-1", "system:masters"))),
    ),
    Case(
        "o-system-masters-beside-system-nodes",
        REFUSED + r"has subject .*O=system:masters",
        authsign=edit(_set(subject=name("system:node:worker-1", NODES, "system:masters"))),
    ),
    Case(
        "ca-true-leaf",
        REFUSED + r"is a CA certificate \(CA:TRUE\)",
        authsign=edit(_set(ca=True)),
    ),
    Case(
        "server-auth-only",
        REFUSED + r"lacks the client-auth extended key usage",
        authsign=edit(_set(eku=[ExtendedKeyUsageOID.SERVER_AUTH])),
    ),
    Case(
        "no-eku-at-all",
        REFUSED + r"lacks the client-auth extended key usage",
        authsign=edit(_set(eku=[])),
    ),
    Case(
        "expired",
        REFUSED + r"expired at ",
        authsign=edit(
            _set(
                not_before=utcnow() - dt.timedelta(days=2),
                not_after=utcnow() - dt.timedelta(days=1),
            )
        ),
    ),
    Case(
        "not-yet-valid-beyond-skew",
        REFUSED + r"is not valid until .* \(\d+m \d+s early\)",
        authsign=signing(
            lambda s, leaf: _set(
                not_before=utcnow() + dt.timedelta(minutes=10),
                not_after=utcnow() + dt.timedelta(days=365),
            )(leaf)
        ),
    ),
    Case(
        "unknown-critical-extension",
        REFUSED + r".*critical",
        authsign=edit(
            lambda leaf: leaf.extra_extensions.append(
                (
                    x509.UnrecognizedExtension(
                        x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\5\0"
                    ),
                    True,
                )
            )
        ),
    ),
    Case(
        "sha1-signature",
        REFUSED + r".*SHA-?1",
        authsign=signing(finish=sha1_signed),
    ),
    Case(
        "duplicate-san-extension",
        r"the CA at http://127\.0\.0\.1:\d+: a certificate it sent from "
        r"/api/v1/cfssl/authsign has malformed extensions",
        authsign=signing(
            lambda s, leaf: leaf.extra_extensions.append(
                (x509.IssuerAlternativeName([x509.DNSName("worker-1")]), False)
            ),
            finish=duplicate_san,
        ),
    ),
    Case(
        "pinned-ca-with-duplicate-extension",
        r"the CA at http://127\.0\.0\.1:\d+: ",
        info=lambda s, req: send(
            req.conn, 200, json.dumps(envelope({"certificate": ca_with_duplicate_san(s)})).encode()
        ),
        reaches=INFO,
    ),
]


NOT_CFSSL = r"answered {path} with HTTP 200 and no CFSSL response: is this a CFSSL server\?"
MALFORMED = r"sent a malformed result from {path}"
NO_CERT = r"sent no 'certificate' string in its answer to {path}"
UNREADABLE = r"sent no readable certificate from {path}"
UNANSWERED = r"^join-agent: no CFSSL server answered: http://127\.0\.0\.1:\d+ \("
NOT_PEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"

ANSWER_CASES: list[tuple[str, str, Responder, str | None]] = [
    ("garbage-truncated-json", NOT_CFSSL, raw(200, b'{"success": tru'), None),
    ("garbage-not-utf8", NOT_CFSSL, raw(200, b"\xff\xfe\x00garbage\x80"), None),
    (
        "garbage-nested-100000-deep",
        NOT_CFSSL,
        raw(200, b"[" * 100_000),
        None,
    ),
    ("success-a-string", NOT_CFSSL, json_answer({"success": "true", "result": {}}), None),
    ("result-a-list", MALFORMED, json_answer(envelope(["x"])), None),
    ("result-null", MALFORMED, json_answer(envelope(None)), None),
    ("certificate-a-number", NO_CERT, json_answer(envelope({"certificate": 42})), None),
    ("certificate-not-pem", UNREADABLE, json_answer(envelope({"certificate": NOT_PEM})), None),
    (
        "errors-a-string",
        r"refused {path}: no reason given",
        json_answer({"success": False, "result": None, "errors": "boom"}, status=400),
        None,
    ),
    (
        "http-500-envelope",
        UNANSWERED + r"failed \(internal trouble\)\)",
        json_answer(
            {
                "success": False,
                "result": None,
                "errors": [{"code": 500, "message": "internal trouble"}],
            },
            status=500,
        ),
        None,
    ),
    (
        "http-500-plain",
        UNANSWERED + r"answered {path} with HTTP 500\)",
        raw(500, b"oops", "text/plain"),
        None,
    ),
    (
        "http-502-html",
        UNANSWERED + r"answered {path} with HTTP 502\)",
        raw(502, b"<html>bad gateway</html>", "text/html"),
        None,
    ),
    (
        "redirect-307-other-host",
        r"redirect to http://203\.0\.113\.7:8888/x; join-agent follows no redirects",
        redirect("http://203.0.113.7:8888/x"),
        None,
    ),
    (
        "redirect-301-other-host",
        r"redirect to https://evil\.example/; join-agent follows no redirects",
        redirect("https://evil.example/", 301),
        None,
    ),
    (
        "reset-mid-body",
        UNANSWERED + r"the connection to the CA at .* broke: ",
        cut_mid_body(reset=True),
        None,
    ),
    (
        "closed-mid-body",
        UNANSWERED + r"the connection to the CA at .* broke: ",
        cut_mid_body(reset=False),
        None,
    ),
    (
        "100mb-with-length",
        UNANSWERED + r"sent a 104857600-byte answer, more than the 1048576-byte limit\)",
        stream_zeros(declared=True),
        None,
    ),
    (
        "100mb-chunked",
        UNANSWERED + r"sent an answer larger than the 1048576-byte limit\)",
        stream_zeros(declared=False),
        None,
    ),
]


def answer_params() -> list[object]:
    out = []
    for path, short in ((INFO, "info"), (AUTHSIGN, "authsign")):
        for cid, expect, responder, bug in ANSWER_CASES:
            case = Case(
                f"{short}-{cid}",
                expect.replace("{path}", re.escape(path)),
                info=responder if path == INFO else None,
                authsign=responder if path == AUTHSIGN else None,
                bug=bug,
            )
            out.append(case.param())
    return out


# -- the checks ---------------------------------------------------------------------------


def join_honestly(node: Node, standin: StandInCFSSL) -> dict[str, bytes | str]:
    standin.script()
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    before = node.tree()
    assert node.ca_file.read_bytes() == standin.ca_pem
    return before


def assert_refused(r: subprocess.CompletedProcess[str], expect: str) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("join-agent: "), r.stderr
    assert len(last) > len("join-agent: ") + 10, last
    assert "unexpected error" not in last, last  # an exception that is not a JoinAgentError
    assert re.search(expect, last), last
    return last


def run_case(node: Node, standin: StandInCFSSL, case: Case) -> subprocess.CompletedProcess[str]:
    before = join_honestly(node, standin)
    standin.script(info=case.info, authsign=case.authsign)
    r = node.run("join")
    assert_refused(r, case.expect)
    assert node.tree() == before  # nothing written, nothing removed, byte for byte
    # proof that the case was exercised where it was meant to be
    reaches = case.reaches or (AUTHSIGN if case.authsign is not None else INFO)
    assert standin.hits[reaches] >= 1
    if reaches == INFO:
        assert standin.hits[AUTHSIGN] == 0  # refused before asking for a certificate
    return r


@pytest.mark.parametrize("case", [c.param() for c in CERT_CASES])
def test_a_hostile_certificate_is_refused(node: Node, standin: StandInCFSSL, case: Case) -> None:
    run_case(node, standin, case)


@pytest.mark.parametrize("case", answer_params())
def test_a_hostile_answer_is_refused(node: Node, standin: StandInCFSSL, case: Case) -> None:
    start = time.monotonic()
    run_case(node, standin, case)
    if "100mb" in case.id:
        # The client stopped at its cap: what the stand-in got out before the client hung
        # up is the cap plus what the sockets' buffers hold, far from 100 MB.
        assert standin.sent < 32 * MiB, standin.sent
        assert time.monotonic() - start < 15


def test_a_dribbled_body_is_cut_at_the_deadline(node: Node, standin: StandInCFSSL) -> None:
    """One byte a second at ``authsign``: the 30 s deadline (not configurable) ends it."""
    before = join_honestly(node, standin)
    standin.script(authsign=dribble)
    start = time.monotonic()
    r = node.run("join")
    elapsed = time.monotonic() - start
    assert_refused(r, UNANSWERED + r"did not answer within 30s\)")
    assert 29 < elapsed < 45, elapsed
    assert 0 < standin.sent < 45
    assert node.tree() == before


def kubeconfig_cas(node: Node) -> list[x509.Certificate]:
    doc = yaml.safe_load(node.kubeconfig.read_text())
    data = doc["clusters"][0]["cluster"]["certificate-authority-data"]
    return compat.load_pem_certificates(base64.b64decode(data))


@pytest.mark.parametrize("where", ["info", "authsign"])
def test_an_unpinned_ca_in_the_answer_is_not_trusted(
    node: Node, standin: StandInCFSSL, where: str
) -> None:
    before = join_honestly(node, standin)
    if where == "info":
        standin.script(info=info_with(lambda s: [s.ca.cert, EVIL.cert]))
    else:
        standin.script(authsign=signing(extra=lambda s: [EVIL.cert]))
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert node.ca_file.read_bytes() == standin.ca_pem  # the pinned CA alone, as before
    assert kubeconfig_cas(node) == [standin.ca.cert]
    after = node.tree()
    assert after["pki/kubelet-client-current.pem"] != before["pki/kubelet-client-current.pem"]
    current = compat.load_pem_certificates(node.current.read_bytes())
    assert [c.issuer for c in current] == [standin.ca.cert.subject]
