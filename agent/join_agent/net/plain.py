"""Plain-http peers through the standard library's http.client instead of httpx.

A CFSSL CA on http:// is trusted by its pin, not by TLS, and a join asks it two small
questions. On Debian bookworm's versions, where the .deb runs, httpx cost such a join
more than everything else it does (docs/benchmarks.md): importing httpx 0.23 (with
rfc3986, httpcore and asyncio) takes ≈75 ms, and httpcore before 0.17.2 writes a POST's
headers and body apart without TCP_NODELAY, so a POST on a kept-alive connection waits
≈40 ms for the peer's delayed ACK (encode/httpcore#651). http.client sends a small
request in one write, and each request here has a connection of its own, which a
request abandoned at its deadline (transport.py) keeps to itself.

Everything else is as for httpx, in transport.py and bounds.py: the deadline over the
whole exchange, the size cap, no compressed answers, no redirects (http.client follows
none), nothing from the environment (it reads no proxy variables), the same sentences.
https peers, and all of Kubernetes, stay on httpx.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from urllib.parse import urlsplit

from join_agent.net import bounds
from join_agent.net.bounds import Limits, Response


def carries(urls: Sequence[str]) -> bool:
    """Whether these peers are all this client's: http://, named in ASCII (http.client
    sends the name as it is; httpx encodes an internationalised one)."""
    return all(
        urlsplit(u).scheme.lower() == "http" and (urlsplit(u).hostname or "").isascii()
        for u in urls
    )


class PlainClient:
    """What ``transport.client_for`` returns for http:// peers; used as httpx's client is
    (``with``, then ``transport.post``/``get``)."""

    def __enter__(self) -> PlainClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        return None  # every connection is closed with its request

    def exchange(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        *,
        limits: Limits,
        what: str,
    ) -> Response:
        """One request on a connection of its own, and the whole answer."""
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        # The port is always given: http.client would read one out of an IPv6 address.
        conn = http.client.HTTPConnection(
            parts.hostname or "", parts.port or 80, timeout=min(limits.connect, limits.deadline)
        )
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise bounds.connect_timeout(what, limits) from None
            except OSError as e:
                raise bounds.cannot_connect(e, what) from None
            if conn.sock is not None:
                conn.sock.settimeout(limits.deadline)  # every read and write, as httpx's
            return _ask(conn, method, target, body, headers, url=url, limits=limits, what=what)
        finally:
            conn.close()


def _ask(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    body: bytes | None,
    headers: Mapping[str, str],
    *,
    url: str,
    limits: Limits,
    what: str,
) -> Response:
    try:
        conn.request(method, target, body=body, headers={"Accept": "*/*", **headers})
        answer = _Answer(conn.getresponse())
        bounds.refuse_compressed(answer, what)
        data = bounds.read_capped(answer, limits, what)
    except TimeoutError:
        raise bounds.deadline(what, limits) from None
    except (http.client.HTTPException, OSError) as e:
        raise bounds.broke(e, what) from None
    return Response(url=url, status=answer.status, headers=answer.headers, body=data)


class _Answer:
    """An http.client response as bounds.py reads one."""

    def __init__(self, r: http.client.HTTPResponse) -> None:
        self._r = r
        self.status = r.status
        fields: dict[str, str] = {}
        for name, value in r.getheaders():  # a repeated field is joined, as httpx joins it
            key = name.lower()
            fields[key] = f"{fields[key]}, {value}" if key in fields else value
        self.headers: Mapping[str, str] = fields

    def iter_bytes(self) -> Iterator[bytes]:
        while chunk := self._r.read(64 << 10):
            yield chunk
        if self._r.length:  # the peer closed before the Content-Length it announced
            raise http.client.IncompleteRead(b"", self._r.length)
