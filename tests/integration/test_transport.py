"""The HTTP rules of net/transport.py (docs/architecture.md), against a stand-in server
on 127.0.0.1.

The stand-in is a plain socket server that misbehaves on cue (a real CFSSL never
dribbles or redirects); the client side is our gateway with each of its carriers: the
real httpx, and the standard library's http.client that plain-http peers get
(net/plain.py). Every rule holds for both.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from join_agent.errors import TransportError
from join_agent.net import plain, transport

Handler = Callable[[socket.socket], None]


@pytest.fixture
def standin() -> Iterator[Callable[[Handler], str]]:
    """Start a one-handler-per-connection server; returns its base URL."""
    servers: list[socket.socket] = []

    def start(handler: Handler) -> str:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        servers.append(srv)

        def loop() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    _read_request(conn)
                    with contextlib.suppress(OSError):
                        handler(conn)

        threading.Thread(target=loop, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for s in servers:
        s.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        body += conn.recv(65536)


Post = Callable[[str, transport.Limits], transport.Response]


@pytest.fixture(params=["httpx", "http.client"])
def post(request: pytest.FixtureRequest) -> Post:
    """POST to a stand-in's CFSSL info path through one of the gateway's carriers."""

    def send(url: str, limits: transport.Limits) -> transport.Response:
        if request.param == "httpx":
            client: transport.Client = transport.make_client(limits=limits)
        else:
            client = transport.client_for([url], limits)
            assert isinstance(client, plain.PlainClient)  # what an http:// CA gets
        with client:
            return transport.post(client, url + "/api/v1/cfssl/info", b"{}", limits, what="the CA")

    return send


def test_a_normal_answer_comes_back_whole(post: Post, standin: Callable[[Handler], str]) -> None:
    body = b'{"success": true}'
    url = standin(
        lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    )
    r = post(url, transport.Limits())
    assert r.status == 200
    assert r.body == body


def test_declared_oversized_body_is_refused(post: Post, standin: Callable[[Handler], str]) -> None:
    url = standin(
        lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n" + b"x" * 1000)
    )
    with pytest.raises(TransportError, match="more than the 4096-byte limit"):
        post(url, transport.Limits(max_body=4096))


def test_chunked_oversized_body_is_cut_at_the_cap(
    post: Post, standin: Callable[[Handler], str]
) -> None:
    def send(c: socket.socket) -> None:
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"y" * 1024
        for _ in range(64):
            c.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c.sendall(b"0\r\n\r\n")

    with pytest.raises(TransportError, match="larger than the 4096-byte limit"):
        post(standin(send), transport.Limits(max_body=4096))


def test_compressed_answers_are_refused_before_inflating(
    post: Post,
    standin: Callable[[Handler], str],
) -> None:
    import gzip

    bomb = gzip.compress(b"\0" * (8 << 20))  # 8 MiB of zeros, a few KiB on the wire

    def send(c: socket.socket) -> None:
        c.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(bomb), bomb)
        )

    with pytest.raises(TransportError, match="sent a compressed answer"):
        post(standin(send), transport.Limits(max_body=65536))


def test_dribbled_headers_hit_the_total_deadline(
    post: Post, standin: Callable[[Handler], str]
) -> None:
    def send(c: socket.socket) -> None:
        c.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(200):
            c.sendall(b"X")  # one header byte at a time, never finishing the line
            time.sleep(0.1)

    start = time.monotonic()
    with pytest.raises(TransportError, match=r"did not answer within 1s"):
        post(standin(send), transport.Limits(deadline=1.0))
    assert time.monotonic() - start < 5  # not a speed goal: proof it did not wait 20 s


def test_dribbled_body_hits_the_total_deadline(
    post: Post, standin: Callable[[Handler], str]
) -> None:
    def send(c: socket.socket) -> None:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            c.sendall(b"x")
            time.sleep(0.1)

    start = time.monotonic()
    with pytest.raises(TransportError, match=r"did not answer within 1s"):
        post(standin(send), transport.Limits(deadline=1.0))
    # Not a speed goal: proof that the per-chunk read timeout did not keep it alive
    # for the 100 s the dribble would take.
    assert time.monotonic() - start < 5


def test_redirects_are_not_followed(post: Post, standin: Callable[[Handler], str]) -> None:
    followed = threading.Event()
    target = standin(lambda c: followed.set())
    url = standin(
        lambda c: c.sendall(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: %s/x\r\nContent-Length: 0\r\n\r\n"
            % target.encode()
        )
    )
    r = post(url, transport.Limits())
    assert r.status == 307
    assert not followed.wait(0.5)


def test_connection_reset_mid_body_is_a_transport_error(
    post: Post, standin: Callable[[Handler], str]
) -> None:
    def send(c: socket.socket) -> None:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"z" * 100)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    with pytest.raises(TransportError, match="broke"):
        post(standin(send), transport.Limits())


def test_environment_proxies_are_ignored(
    post: Post, standin: Callable[[Handler], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"{}"
    url = standin(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body))
    # A proxy that does not exist: if httpx honoured it, the request would fail.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert post(url, transport.Limits()).body == body


def test_a_tls_handshake_that_never_comes_is_named_by_its_own_bound() -> None:
    """A peer that accepts TCP and never answers the ClientHello: the connect bound
    (TCP and TLS), not the whole-exchange deadline, is what ran out."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # the kernel completes the handshake; nobody ever speaks TLS
    url = f"https://127.0.0.1:{srv.getsockname()[1]}"
    limits = transport.Limits(connect=0.5, deadline=20.0)
    try:
        with (
            transport.make_client(verify=transport.system_trust(), limits=limits) as client,
            pytest.raises(TransportError) as info,
        ):
            transport.get(client, url + "/", limits, what="the API server")
    finally:
        srv.close()
    assert str(info.value) == (
        "cannot connect to the API server: no connection (TCP and TLS handshake) within 0.5s"
    )
