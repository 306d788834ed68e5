"""The one gateway for HTTP: a deadline that covers the whole exchange, a size cap, no
redirects, nothing taken from the environment.

httpx's timeouts are per socket operation, so a server that dribbles its headers or
body a byte at a time never times out. Each request therefore runs in a helper thread
that is abandoned at the deadline (the process is short-lived: ``join`` or the daemon's
worker child); inside it, every read is still bounded by httpx's read timeout and the
body by the size cap. Responses must not be compressed: a small gzip body can inflate to
gigabytes in memory before any cap could look at it, and CFSSL never compresses.

Plain-http peers found by ``client_for`` (a CFSSL CA on http://) are carried by the
standard library instead (plain.py, which says why); every rule above holds for them
too (bounds.py). httpx is imported only where it carries the exchange.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from join_agent.errors import TransportError
from join_agent.net import bounds, plain
from join_agent.net.bounds import Limits, Response

if TYPE_CHECKING:
    import httpx

    Client = httpx.Client | plain.PlainClient

# Limits and Response are bounds.py's, named here too: every caller speaks to this module.
__all__ = [
    "Limits", "Response", "StreamRefused", "TlsVerifyFailed",
    "client_for", "get", "make_client", "post", "stream_lines", "system_trust",
]  # fmt: skip

T = TypeVar("T")


def make_client(
    *, verify: ssl.SSLContext | bool = False, limits: Limits | None = None
) -> httpx.Client:
    """A client that takes nothing from the environment (no proxies, no CA overrides).

    ``verify=False`` is only for plain-http peers, whose trust comes from a pin: it spares
    loading a CA bundle that no handshake would use. HTTPS callers pass a context.
    """
    import httpx

    lim = limits or Limits()
    return httpx.Client(
        trust_env=False,
        follow_redirects=False,
        verify=verify,
        timeout=httpx.Timeout(lim.deadline, connect=min(lim.connect, lim.deadline)),
    )


def system_trust() -> ssl.SSLContext:
    """The operating system's trust store (not certifi's), for https discovery URLs."""
    return ssl.create_default_context()


def client_for(urls: Sequence[str], limits: Limits | None = None) -> Client:
    """A client for these peers: the system trust store when any of them is https, and
    the standard library's HTTP client when none is (plain.py)."""
    if urls and plain.carries(urls):
        return plain.PlainClient()
    https = any(urlsplit(u).scheme.lower() == "https" for u in urls)
    return make_client(verify=system_trust() if https else False, limits=limits)


def post(
    client: Client,
    url: str,
    body: bytes,
    limits: Limits,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """POST ``body`` as JSON and return the whole answer, within ``limits``.

    ``what`` names the peer in errors ("the CA at http://…").
    """
    return _within_deadline("POST", client, url, body, limits=limits, what=what, headers=headers)


def get(
    client: Client,
    url: str,
    limits: Limits,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """GET ``url`` within ``limits``."""
    return _within_deadline("GET", client, url, None, limits=limits, what=what, headers=headers)


class TlsVerifyFailed(TransportError):
    """The peer's certificate does not chain to the CA we trust (it may have changed)."""


class StreamRefused(TransportError):
    """The server answered a streaming request with something other than 200."""

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


def stream_lines(
    client: httpx.Client,
    url: str,
    limits: Limits,
    *,
    what: str,
    seconds: float,
    on_line: Callable[[bytes], T | None],
    headers: Mapping[str, str] | None = None,
) -> T | None:
    """Read a newline-delimited stream (a Kubernetes watch) for at most ``seconds``.

    Each line goes to ``on_line`` as it arrives; the first non-None result ends the stream
    and is returned. None means the stream ended or the time ran out. Every line is capped
    at ``limits.max_body``; an idle stream is normal, so the read timeout is ``seconds``.
    """
    stop = threading.Event()
    done = _bounded(
        lambda: _stream(
            client, url, limits, what=what, seconds=seconds, on_line=on_line, headers=headers,
            stop=stop,
        ),
        seconds + limits.connect,
    )  # fmt: skip
    if not done:
        stop.set()  # the reader gives up at its next chunk; the thread is left behind
        return None
    return done[0]


def _bounded(fn: Callable[[], T], seconds: float) -> list[T]:
    """Run ``fn`` in a helper thread for at most ``seconds``: ``[result]``, or ``[]`` when
    time ran out (the thread is abandoned); its exception is raised here."""
    outcome: list[T | BaseException] = []

    def attempt() -> None:
        try:
            outcome.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread as is
            outcome.append(e)

    worker = threading.Thread(target=attempt, name="join-agent-http", daemon=True)
    worker.start()
    worker.join(seconds)
    if not outcome:
        return []
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return [result]


@contextlib.contextmanager
def _errors_named(what: str) -> Iterator[None]:
    """httpx's connection errors as one sentence naming the peer."""
    import httpx

    try:
        yield
    except httpx.ConnectError as e:
        raise _connect_error(e, what) from None
    except httpx.HTTPError as e:
        raise bounds.broke(e, what) from None


def _stream(
    client: httpx.Client,
    url: str,
    limits: Limits,
    *,
    what: str,
    seconds: float,
    on_line: Callable[[bytes], T | None],
    headers: Mapping[str, str] | None,
    stop: threading.Event,
) -> T | None:
    import httpx

    sent = {"Accept-Encoding": "identity", "Accept": "application/json", **(headers or {})}
    timeout = httpx.Timeout(seconds + 1.0, connect=min(limits.connect, limits.deadline))
    with _errors_named(what):
        try:
            with client.stream("GET", url, headers=sent, timeout=timeout) as r:
                if r.status_code != 200:
                    body = bounds.read_capped(r, limits, what)
                    raise StreamRefused(
                        f"{what} answered the watch with HTTP {r.status_code}",
                        Response(url=url, status=r.status_code, headers=r.headers, body=body),
                    )
                bounds.refuse_compressed(r, what)
                return _lines(r, limits, what, on_line, stop)
        except httpx.ConnectTimeout:
            raise bounds.connect_timeout(what, limits) from None
        except httpx.TimeoutException:
            return None  # an idle watch that outlived its time: the caller looks again


def _lines(
    r: httpx.Response,
    limits: Limits,
    what: str,
    on_line: Callable[[bytes], T | None],
    stop: threading.Event,
) -> T | None:
    # Linear in the stream's size: only the new bytes are searched for a newline.
    pending = bytearray()
    for chunk in r.iter_bytes():
        if stop.is_set():
            return None
        start = len(pending)
        pending += chunk
        while (end := pending.find(b"\n", start)) != -1:
            line = bytes(pending[:end])
            del pending[: end + 1]
            start = 0
            if line.strip():
                result = on_line(line)
                if result is not None:
                    return result
        if len(pending) > limits.max_body:
            raise TransportError(
                f"{what} sent a watch event larger than the {limits.max_body}-byte limit"
            )
    return on_line(bytes(pending)) if pending.strip() else None


def _within_deadline(
    method: str,
    client: Client,
    url: str,
    body: bytes | None,
    *,
    limits: Limits,
    what: str,
    headers: Mapping[str, str] | None,
) -> Response:
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    if body is not None:
        sent["Content-Type"] = "application/json"

    def request() -> Response:
        if isinstance(client, plain.PlainClient):
            return client.exchange(method, url, body, sent, limits=limits, what=what)
        return _exchange(client, method, url, body, sent, limits=limits, what=what)

    done = _bounded(request, limits.deadline)
    if not done:
        raise bounds.deadline(what, limits)  # the thread is left to its read timeout
    return done[0]


def _exchange(
    client: httpx.Client,
    method: str,
    url: str,
    body: bytes | None,
    sent: Mapping[str, str],
    *,
    limits: Limits,
    what: str,
) -> Response:
    import httpx

    with _errors_named(what):
        try:
            with client.stream(method, url, content=body, headers=sent) as r:
                bounds.refuse_compressed(r, what)
                data = bounds.read_capped(r, limits, what)
                return Response(url=url, status=r.status_code, headers=r.headers, body=data)
        except httpx.ConnectTimeout:
            # TCP and the TLS handshake have their own, shorter bound: name that one.
            raise bounds.connect_timeout(what, limits) from None
        except httpx.TimeoutException:
            raise bounds.deadline(what, limits) from None


def _connect_error(e: httpx.ConnectError, what: str) -> TransportError:
    if isinstance(bounds.innermost(e), ssl.SSLCertVerificationError):
        return TlsVerifyFailed(
            f"cannot connect to {what}: its certificate does not verify against the "
            f"trusted CA ({bounds.reason(e)})"
        )
    return bounds.cannot_connect(e, what)
