"""Fuzzing the parsers with hypothesis: only our own errors escape, each one line of text.

Bounded and reproducible for CI: at most 200 examples per test, no deadline, derandomized
(the same examples on every run), no example database written.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from join_agent.config import loading, model
from join_agent.core import durations
from join_agent.errors import ConfigError, JoinAgentError, StoreError
from join_agent.host import identity, proc
from join_agent.host.netlink import InterfaceAddress
from join_agent.net import transport
from join_agent.pki import compat
from join_agent.signers import cfssl
from join_agent.storage import store
from tests.lab import certs

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
URL = "http://127.0.0.1:8888"


def printable_keys(doc: object) -> bool:
    if isinstance(doc, dict):
        return all(str(k).isprintable() and printable_keys(v) for k, v in doc.items())
    if isinstance(doc, list):
        return all(printable_keys(v) for v in doc)
    return True


def one_line(e: BaseException) -> str:
    """The error's message: non-empty and one line (it ends up as `join-agent: <message>`)."""
    text = str(e)
    assert text.strip(), f"{type(e).__name__} with an empty message"
    assert "\n" not in text and "\r" not in text, repr(text)
    return text


# -- material -----------------------------------------------------------------------------


def _cert_and_key() -> tuple[bytes, bytes]:
    now = dt.datetime.now(dt.timezone.utc)
    ca = certs.authority(
        "fuzz",
        key_usage=None,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=1),
        extensions=((x509.SubjectAlternativeName([x509.DNSName("fuzz")]), False),),
    )
    return certs.cert_pem(ca.cert), certs.key_pem(ca.key)


def patch_der(pem: bytes, old: bytes, new: bytes) -> bytes:
    """The PEM block with ``old`` replaced by ``new`` inside its DER (same length)."""
    lines = pem.strip().split(b"\n")
    der = base64.b64decode(b"".join(lines[1:-1])).replace(old, new)
    b64 = base64.encodebytes(der).replace(b"\n", b"")
    body = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return lines[0] + b"\n" + body + b"\n" + lines[-1] + b"\n"


CERT_PEM, KEY_PEM = _cert_and_key()
PAIR_PEM = CERT_PEM + KEY_PEM
EC_OID = bytes.fromhex("2a8648ce3d0201")  # id-ecPublicKey, in the key's and the cert's DER
UNKNOWN_OID = bytes.fromhex("2a8648ce3d027f")  # 1.2.840.10045.2.127: no such key type
UNKNOWN_KEY_PEM = patch_der(
    serialization.load_pem_private_key(KEY_PEM, password=None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ),
    EC_OID,
    UNKNOWN_OID,
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes flipped, inserted, deleted, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "b64"]))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        else:  # a valid base64 character for another: the PEM still decodes, the DER changes
            data[i] = draw(
                st.sampled_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
            )
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "https://10.0.0.1:6443",
            "http://ca:8888",
            "/abs/path",
            "rel",
            "90s",
            "1h",
            "-1s",
            "ecdsa-p256",
            "cfssl",
            "kubernetes",
            "fd00::1",
            "10.0.0.1",
            "sha256:" + "ab" * 32,
        ]
    )
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
TABLE_KEYS = {
    "cluster": ["server", "name", "ca_bundle"],
    "node": ["name", "addresses", "exclude_interfaces", "key"],
    "signer": ["kind", "cfssl", "kubernetes"],
    "paths": ["pki_dir", "kubeconfig", "ca_file", "state_dir"],
    "renewal": ["retry_min", "retry_max", "splay", "clock_skew"],
    "kubelet": ["manage", "command", "stop_grace", "restart_min", "healthz_url"],
    "metrics": ["listen"],
}
SUB_KEYS = ["urls", "profile", "label", "auth_key_file", "ca_pins", "insecure_skip_ca_pin",
            "bootstrap_token_file", "discovery_file", "serving", "csr_timeout"]  # fmt: skip


@st.composite
def config_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly the real tables and keys (to get past the first check), with any values."""
    doc: dict[str, Any] = {}
    for table in draw(st.lists(st.sampled_from(sorted(TABLE_KEYS)), unique=True)):
        keys = TABLE_KEYS[table]
        body = draw(st.dictionaries(st.sampled_from(keys), toml_values, max_size=len(keys)))
        if table == "signer" and draw(st.booleans()):
            body["cfssl"] = draw(
                st.dictionaries(st.sampled_from(SUB_KEYS), toml_values, max_size=6)
            )
        doc[table] = body
    if draw(st.booleans()):
        doc.update(draw(st.dictionaries(st.text(max_size=10), toml_values, max_size=2)))
    return doc


VALID = {
    "cluster": {"server": "https://10.0.0.1:6443"},
    "node": {"name": "n1", "addresses": ["10.0.0.2"]},
    "signer": {"cfssl": {"urls": ["http://ca:8888"], "ca_pins": ["sha256:" + "ab" * 32]}},
    "paths": {"pki_dir": "/p", "kubeconfig": "/k/kubelet.conf", "ca_file": "/k/ca.crt",
              "state_dir": "/s"},
}  # fmt: skip


# -- config --------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(config_docs(), st.dictionaries(st.text(max_size=10), toml_values, max_size=4)))
@example(VALID)
@example({"cluster": {"server": "https://a:1\nb"}})
@example({"node": {"name": "x\ny"}})
def test_config_parse_raises_only_config_error(doc: dict[str, Any]) -> None:
    try:
        cfg = loading.parse(doc)
    except ConfigError as e:
        assert str(e).strip()
        if printable_keys(doc):  # see test_config_errors_quote_key_names below
            one_line(e)
    else:
        assert isinstance(cfg, model.Config)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(
            st.sampled_from(
                [
                    "[cluster]",
                    "server = 1",
                    '"\\n" = 2',
                    "[[node]]",
                    "x = [",
                    "a.b.c = 1",
                    'server = "https://h:6443"',
                    "name = 'n'",
                    "= =",
                    "[signer.cfssl]",
                    "urls = []",
                    "\x00",
                    "\ufeff",
                ]
            )
        ).map(lambda lines: "\n".join(lines).encode()),
    )
)
@example(b"\xff\xfe")
@example(b"[cluster]\nserver = 'https://a:1'\n[node]\nname = 'n'\n")
def test_config_load_raises_only_config_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.toml"
        path.write_bytes(data)
        try:
            cfg = loading.load(path)
        except ConfigError as e:
            assert str(e).strip()
            try:
                doc: object = tomllib.loads(data.decode())
            except (ValueError, UnicodeDecodeError):
                doc = {}
            if printable_keys(doc):  # see test_config_errors_quote_key_names below
                one_line(e)
        else:
            assert isinstance(cfg, model.Config)


@pytest.mark.parametrize(
    "doc",
    [{"\n": 0}, {"cluster": {"server": "https://a:1"}, "node": {"foo\nbar": 1}}],
    ids=["section", "key"],
)
def test_config_errors_quote_key_names(doc: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as e:
        loading.parse(doc)
    one_line(e.value)


# -- the CFSSL response parser -------------------------------------------------------------


envelopes = st.fixed_dictionaries(
    {"success": st.one_of(st.booleans(), json_values)},
    optional={
        "result": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"certificate": st.one_of(json_values, st.just(CERT_PEM.decode()))}
            ),
        ),
        "errors": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries({}, optional={"code": json_values, "message": json_values})
            ),
        ),
        "messages": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(
    status=st.one_of(st.integers(100, 599), st.sampled_from([200, 301, 307, 400, 404, 500])),
    body=bodies,
    location=st.one_of(st.none(), st.binary(max_size=60)),
)
@example(status=200, body=b"[" * 20_000, location=None)
@example(status=307, body=b"", location=b"http://evil\r\nX: y")
def test_cfssl_unwrap_returns_a_dict_or_raises_ours(
    status: int, body: bytes, location: bytes | None
) -> None:
    headers = httpx.Headers([(b"location", location)] if location is not None else [])
    response = transport.Response(url=URL, status=status, headers=headers, body=body)
    try:
        result = cfssl.unwrap(response, URL, cfssl.AUTHSIGN, "kubelet")
    except JoinAgentError as e:
        one_line(e)
    else:
        assert isinstance(result, dict)


@FUZZ
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=12), json_values, max_size=3),
        st.fixed_dictionaries(
            {
                "certificate": st.one_of(
                    json_values, mutated(CERT_PEM).map(lambda b: b.decode("latin-1"))
                )
            }
        ),
    )
)
@example({"certificate": CERT_PEM.decode()})
@example({"certificate": CERT_PEM.decode() * 2})
@example({"certificate": "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"})
def test_cfssl_certificates_returns_a_list_or_raises_ours(result: dict[str, Any]) -> None:
    try:
        certs = cfssl.certificates(result, URL, cfssl.INFO)
    except JoinAgentError as e:
        one_line(e)
    else:
        assert certs
        assert all(isinstance(c, x509.Certificate) for c in certs)


# -- PEM handling --------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(CERT_PEM), mutated(CERT_PEM + CERT_PEM)))
@example(CERT_PEM)
@example(b"-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----")
@example(patch_der(CERT_PEM, EC_OID, UNKNOWN_OID))
def test_load_pem_certificates_returns_a_list_or_raises_value_error(data: bytes) -> None:
    try:
        certs = compat.load_pem_certificates(data)
    except ValueError as e:
        assert str(e).strip()
    else:
        assert all(isinstance(c, x509.Certificate) for c in certs)


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(PAIR_PEM)))
@example(PAIR_PEM)
@example(KEY_PEM + CERT_PEM)
@example(CERT_PEM)
@example(KEY_PEM)
def test_parse_pair_raises_only_store_error(data: bytes) -> None:
    try:
        pair = store.parse_pair(Path("/pki/x.pem"), data)
    except StoreError as e:
        one_line(e)
    else:
        assert pair.chain
        assert pair.key_pem.startswith(b"-----BEGIN")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            patch_der(CERT_PEM, EC_OID, UNKNOWN_OID) + KEY_PEM,
            id="cert-of-unknown-key-type",
        ),
        pytest.param(
            patch_der(CERT_PEM, b"\x03\x42\x00\x04", b"\x03\x42\x00\x84") + KEY_PEM,
            id="cert-with-an-invalid-ec-point",
        ),
        pytest.param(
            CERT_PEM + UNKNOWN_KEY_PEM,
            id="key-of-unknown-key-type",
        ),
    ],
)
def test_parse_pair_with_an_unknown_key_type_raises_store_error(data: bytes) -> None:
    with pytest.raises(StoreError) as e:
        store.parse_pair(Path("/pki/x.pem"), data)
    one_line(e.value)


# -- the identity filter -------------------------------------------------------------------

addresses = st.one_of(
    st.ip_addresses(),
    st.sampled_from(
        [
            ipaddress.ip_address(a)
            for a in [
                "127.0.0.1",
                "::1",
                "169.254.1.1",
                "fe80::1",
                "224.0.0.1",
                "ff02::1",
                "0.0.0.0",  # noqa: S104 - an address to filter, not to bind
                "::",
                "10.0.0.1",
                "10.0.0.1",
                "fd00::1",
                "192.0.2.1",
                "::ffff:127.0.0.1",
                "::ffff:10.0.0.1",
            ]
        ]
    ),
)
records = st.builds(
    InterfaceAddress,
    interface=st.sampled_from(["eth0", "lo", "docker0", "cni0", "veth1", "wg0", ""]),
    index=st.integers(0, 100),
    up=st.booleans(),
    address=addresses,
    prefixlen=st.integers(0, 128),
    scope=st.sampled_from([0, 200, 253, 254, 255]),
    temporary=st.booleans(),
    deprecated=st.booleans(),
    tentative=st.booleans(),
)


@FUZZ
@given(
    st.lists(records, max_size=12),
    st.lists(st.sampled_from(["docker*", "veth*", "cni0", "*", "", "[", "eth?"]), max_size=3),
)
def test_select_addresses_keeps_only_reachable_ones_sorted_and_unique(
    recs: list[InterfaceAddress], exclude: list[str]
) -> None:
    chosen = identity.select_addresses(recs, exclude)
    for a in chosen:
        assert not (a.is_loopback or a.is_link_local or a.is_multicast or a.is_unspecified), a
    assert list(chosen) == sorted(set(chosen), key=lambda a: (a.version, int(a)))
    eligible = {r.address for r in recs if r.up and not r.temporary and not r.deprecated}
    assert set(chosen) <= eligible


# -- durations -----------------------------------------------------------------------------


@FUZZ
@given(
    st.one_of(
        st.text(max_size=30),
        st.from_regex(r"\A[ ]?-?(\d{0,400}(\.\d{0,5})?(ns|us|µs|ms|s|m|h|d|)){1,4}[ \n]?\Z"),
    )
)
@example("1e400s")
@example("9" * 400 + "h")
@example("0")
@example("-1s")
@example("nan")
def test_parse_duration_returns_a_non_negative_delta_or_raises_value_error(text: str) -> None:
    try:
        value = durations.parse_duration(text)
    except ValueError as e:
        one_line(e)
    else:
        assert value >= dt.timedelta(0)


# -- the state file --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
# A document as the daemon writes it, for the fuzzer to damage one key path at a time.
RECORDED: dict[str, Any] = {
    "schema": 1,
    "written_at": "2026-12-01T12:00:00Z",
    "agent": {"version": "0.1.0", "pid": 1, "start_time": "1", "started_at": "2026-12-01T11:00:00Z",
              "state": "running", "config": "/c.toml"},
    "node": "n1",
    "signer": {"kind": "cfssl", "urls": [URL]},
    "credentials": {
        "credentials": "/p/kubelet-client-current.pem", "present": True, "error": None,
        "key_mismatch": False, "issued_by_ca_file": True, "node": "n1", "subject": "CN=x",
        "issuer": "CN=ca", "serial": "ab", "sans": {"dns": ["n1"], "ip": ["10.0.0.2"]},
        "not_before": "2026-11-01T00:00:00Z", "not_after": "2027-11-01T00:00:00Z",
        "kubeconfig": {"path": "/k", "present": True, "server": "https://10.0.0.1:6443"},
        "ca_file": {"path": "/k/ca.crt", "present": True, "subjects": ["CN=ca"]},
        "ca": [{"pin": "sha256:00", "subject": "CN=ca", "not_after": "2030-01-01T00:00:00Z"}],
        "ids": {"credentials": None, "kubeconfig": None, "ca_file": None},
    },
    "kubelet": {"managed": False, "state": "running", "pid": 2, "restarts": 0,
                "consecutive_failures": 0, "since": "2026-12-01T11:00:00Z"},
    "renewal": {"renew_at": None, "next_attempt": None, "failures": 0, "last_attempt": None,
                "last_success": None, "last_ok": True, "reason": None, "in_progress": False},
    "last_error": {"message": "x", "kind": "TransportError", "at": "2026-12-01T11:00:00Z"},
    "serving": None,
    "certificates": [{"name": "extra", "state": "valid", "not_after": "2027-01-01T00:00:00Z",
                      "last_error": None, "action": {"kind": "command", "pending": False,
                                                     "failures": 0}}],
    "waiting_for": None,
}  # fmt: skip


def _paths(doc: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in [(*prefix, k), *_paths(v, (*prefix, k))]]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in [(*prefix, i), *_paths(v, (*prefix, i))]]
    return []


@st.composite
def damaged_status(draw: st.DrawFn) -> object:
    """The daemon's document with a few key paths given any JSON value, or any JSON at all."""
    if draw(st.booleans()):
        return draw(json_values)
    doc: Any = json.loads(json.dumps(RECORDED))
    for path in draw(st.lists(st.sampled_from(_paths(RECORDED)), max_size=3)):
        target = doc
        try:
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier damage replaced the container: nothing to reach
    return doc


def _status_config(root: Path) -> model.Config:
    return loading.parse(
        {
            **VALID,
            "paths": {"pki_dir": str(root / "p"), "kubeconfig": str(root / "k" / "kubelet.conf"),
                      "ca_file": str(root / "k" / "ca.crt"), "state_dir": str(root / "s")},
            "kubelet": {"manage": True, "command": ["/bin/true"], "healthz_url": ""},
        },
        source=root / "c.toml",
    )  # fmt: skip


@FUZZ
@given(damaged_status())
@example(RECORDED)
@example([[[]]])
def test_status_judges_any_recorded_document_without_an_unexpected_error(doc: object) -> None:
    from join_agent.storage import state
    from join_agent.verbs import status, status_text

    assert state.shape_problem(doc) is None or isinstance(state.shape_problem(doc), str)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        cfg = _status_config(root)
        (root / "s").mkdir()
        me = os.getpid()  # a "running agent": status believes what it recorded, if it can
        (root / "s" / "agent.pid").write_text(f"{me} {proc.start_time(me)}\n")
        (root / "s" / "status.json").write_text(json.dumps(doc))
        report = status.gather(cfg, _NOW, probe=False)
        assert report.exit_code in (0, 1, 2)
        status_text.render_text(report)
        json.loads(status_text.render_json(report))
