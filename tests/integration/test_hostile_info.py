"""`join-agent join` through a hostile path to the real CFSSL: what `info` says is not trusted.

Review findings covered: every certificate in CFSSL's ``info`` answer used to be written to
ca_file and the kubeconfig (an attacker on the path, or a careless CA, could add a CA of
its own to the node's trust), a CA:FALSE certificate could stand in as the issuing CA, and
a server dribbling its headers was never cut off.

The proxy here is a stand-in for a man in the middle (or a misconfigured front end): an
``http.server`` on 127.0.0.1 that forwards every request to the real ``cfssl serve`` of the
``ca`` fixture and tampers with the ``info`` answer only. The node runs the real CLI as its
own process with its config pointed at the proxy.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509

from join_agent.pki import compat
from tests.conftest import Node
from tests.lab import certs
from tests.lab.cfssl_ca import CfsslCA

pytestmark = pytest.mark.integration

INFO = "/api/v1/cfssl/info"
Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


class HostileProxy:
    """Stand-in proxy: forwards to the real CFSSL, rewrites ``info``'s result on cue.

    ``rewrite`` edits the decoded ``info`` result; ``dribble`` instead answers ``info`` with
    a status line and then one header byte every 0.1 s, never finishing, until the client
    goes away or the proxy stops.
    """

    def __init__(self, upstream: str, *, rewrite: Rewrite | None = None, dribble: bool = False):
        self.upstream = urlsplit(upstream)
        self.rewrite = rewrite
        self.dribble = dribble
        self.tampered = 0
        self.stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == INFO and proxy.dribble:
                    proxy.dribble_headers(self)
                    return
                status, data = proxy.forward(self.path, body)
                if self.path == INFO and proxy.rewrite is not None and status == 200:
                    doc = json.loads(data)
                    doc["result"] = proxy.rewrite(doc["result"])
                    data = json.dumps(doc).encode()
                    proxy.tampered += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=10
        )
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def dribble_headers(self, handler: BaseHTTPRequestHandler) -> None:
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            handler.wfile.flush()
            while not self.stop.wait(0.1):
                handler.wfile.write(b"X")  # one header byte at a time, never ending the line
                handler.wfile.flush()
        except OSError:
            return  # the client gave up: what we wanted

    def __enter__(self) -> HostileProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(ca: CfsslCA) -> Iterator[Callable[..., HostileProxy]]:
    started: list[HostileProxy] = []

    def start(**kwargs: Any) -> HostileProxy:
        p = HostileProxy(ca.url, **kwargs).__enter__()
        started.append(p)
        return p

    yield start
    for p in started:
        p.__exit__(None, None, None)


def real_ca(ca: CfsslCA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.ca_pem.read_bytes())


def pem(*certs: x509.Certificate) -> str:
    return compat.pem(certs).decode()


def evil_ca() -> x509.Certificate:
    """A self-signed CA that has every right to be a CA: only its presence is hostile."""
    now = dt.datetime.now(dt.timezone.utc)
    return certs.authority(
        "EVIL CA",
        key_usage=None,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=365),
    ).cert


def leaf_from_real_ca(ca: CfsslCA, *, basic_constraints: bool) -> x509.Certificate:
    """An end-entity certificate the real CA really signed: CA:FALSE, or no BasicConstraints."""
    now = dt.datetime.now(dt.timezone.utc)
    return certs.CA.from_files(ca.ca_pem, ca.ca_key).issue(
        certs.ec_key().public_key(),
        subject=certs.name("Not A CA"),
        dns=(),
        ips=(),
        eku=None,
        key_usage=None,
        is_ca=False if basic_constraints else None,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=30),
    )


def kubeconfig_cas(node: Node) -> list[x509.Certificate]:
    doc = yaml.safe_load(node.kubeconfig.read_text())
    data = doc["clusters"][0]["cluster"]["certificate-authority-data"]
    return compat.load_pem_certificates(base64.b64decode(data))


# -- (a) an extra CA appended to info --------------------------------------------------


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "first-use"])
def test_an_extra_ca_in_info_is_not_trusted(
    node: Node, ca: CfsslCA, proxy: Callable[..., HostileProxy], pinned: bool
) -> None:
    evil = evil_ca()

    def append_evil(result: dict[str, Any]) -> dict[str, Any]:
        result["certificate"] = result["certificate"].rstrip("\n") + "\n" + pem(evil)
        return result

    p = proxy(rewrite=append_evil)
    cfssl: dict[str, Any] = {"urls": [p.url]}
    if not pinned:
        cfssl.update(ca_pins=[], insecure_skip_ca_pin=True)
    node.write_config(signer__cfssl=cfssl)

    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert p.tampered >= 1  # the proxy really added the EVIL CA to what join read
    assert compat.load_pem_certificates(node.ca_file.read_bytes()) == [real_ca(ca)]
    assert node.ca_file.read_bytes().strip() == ca.ca_pem.read_bytes().strip()
    assert kubeconfig_cas(node) == [real_ca(ca)]
    assert b"EVIL" not in node.kubeconfig.read_bytes()
    if not pinned:
        assert (node.state / "ca-pin").read_text() == ca.pin + "\n"


# -- (b) a CA:FALSE certificate as the issuing CA --------------------------------------


@pytest.mark.parametrize("basic_constraints", [True, False], ids=["CA-FALSE", "no-bc"])
def test_a_leaf_as_the_issuing_ca_is_refused_and_nothing_is_written(
    node: Node, ca: CfsslCA, proxy: Callable[..., HostileProxy], basic_constraints: bool
) -> None:
    leaf = leaf_from_real_ca(ca, basic_constraints=basic_constraints)

    def leaf_first(result: dict[str, Any]) -> dict[str, Any]:
        result["certificate"] = pem(leaf, real_ca(ca))
        return result

    p = proxy(rewrite=leaf_first)
    node.write_config(signer__cfssl={"urls": [p.url]})
    r = node.run("join")
    assert r.returncode != 0
    assert p.tampered >= 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"join-agent: the CA at {p.url}: ")
    assert "CN=Not A CA is not a CA" in last
    assert "Traceback" not in r.stderr
    assert node.tree() == {}


# -- (c) headers dribbled forever ------------------------------------------------------


def test_dribbled_headers_end_at_the_deadline_and_nothing_is_written(
    node: Node, proxy: Callable[..., HostileProxy]
) -> None:
    """The only end-to-end proof that `join` uses the whole-exchange deadline (30 s, not
    configurable): tests/integration/test_transport.py covers the gateway with 1 s. One URL,
    so this takes about 30 s; before the fix it hung until node.run's 120 s timeout."""
    p = proxy(dribble=True)
    node.write_config(signer__cfssl={"urls": [p.url]})
    start = time.monotonic()
    r = node.run("join")
    elapsed = time.monotonic() - start
    assert r.returncode != 0
    assert "did not answer within 30s" in r.stderr
    assert p.url in r.stderr.strip().splitlines()[-1]
    assert elapsed < 60, elapsed
    assert node.tree() == {}
