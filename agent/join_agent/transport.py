"""The one gateway for HTTP: a deadline that covers the whole exchange, a size cap, no
redirects, nothing taken from the environment.

httpx's timeouts are per socket operation, so a server that dribbles its headers or
body a byte at a time never times out. Each request therefore runs in a helper thread
that is abandoned at the deadline (the process is short-lived: ``join`` or the daemon's
worker child); inside it, every read is still bounded by httpx's read timeout and the
body by the size cap. Responses must not be compressed: a small gzip body can inflate to
gigabytes in memory before any cap could look at it, and CFSSL never compresses.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from .errors import TransportError


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (seconds, bytes); tests shrink them."""

    connect: float = 5.0
    deadline: float = 30.0
    max_body: int = 1 << 20


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    headers: httpx.Headers
    body: bytes = field(repr=False)


def make_client(
    *, verify: ssl.SSLContext | bool = False, limits: Limits | None = None
) -> httpx.Client:
    """A client that takes nothing from the environment (no proxies, no CA overrides).

    ``verify=False`` is only for plain-http peers, whose trust comes from a pin: it spares
    loading a CA bundle that no handshake would use. HTTPS callers pass a context.
    """
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


def client_for(urls: Sequence[str], limits: Limits | None = None) -> httpx.Client:
    """A client for these peers: the system trust store when any of them is https."""
    https = any(urlsplit(u).scheme.lower() == "https" for u in urls)
    return make_client(verify=system_trust() if https else False, limits=limits)


def post(client: httpx.Client, url: str, body: bytes, limits: Limits, *, what: str) -> Response:
    """POST ``body`` as JSON and return the whole answer, within ``limits``.

    ``what`` names the peer in errors ("the CA at http://…").
    """
    return _within_deadline("POST", client, url, body, limits=limits, what=what)


def get(client: httpx.Client, url: str, limits: Limits, *, what: str) -> Response:
    """GET ``url`` within ``limits`` (a probe: it asks for nothing)."""
    return _within_deadline("GET", client, url, None, limits=limits, what=what)


def _within_deadline(
    method: str, client: httpx.Client, url: str, body: bytes | None, *, limits: Limits, what: str
) -> Response:
    outcome: list[Response | BaseException] = []

    def attempt() -> None:
        try:
            outcome.append(_request(method, client, url, body, limits=limits, what=what))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread as is
            outcome.append(e)

    worker = threading.Thread(target=attempt, name="join-agent-http", daemon=True)
    worker.start()
    worker.join(limits.deadline)
    if not outcome:
        raise _deadline(what, limits)  # the thread is left to its read timeout
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _request(
    method: str, client: httpx.Client, url: str, body: bytes | None, *, limits: Limits, what: str
) -> Response:
    headers = {"Accept-Encoding": "identity"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        with client.stream(method, url, content=body, headers=headers) as r:
            encoding = r.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise TransportError(
                    f"{what} sent a compressed answer ({encoding[:20]}) although asked not to"
                )
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_body:
                raise TransportError(
                    f"{what} sent a {int(declared)}-byte answer, more than the "
                    f"{limits.max_body}-byte limit"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in r.iter_bytes():  # identity-encoded (checked above): raw bytes
                size += len(chunk)
                if size > limits.max_body:
                    raise TransportError(
                        f"{what} sent an answer larger than the {limits.max_body}-byte limit"
                    )
                chunks.append(chunk)
            return Response(url=url, status=r.status_code, headers=r.headers, body=b"".join(chunks))
    except httpx.TimeoutException:
        raise _deadline(what, limits) from None
    except httpx.ConnectError as e:
        raise TransportError(f"cannot connect to {what}: {_reason(e)}") from None
    except httpx.HTTPError as e:
        raise TransportError(f"the connection to {what} broke: {_reason(e)}") from None


def _deadline(what: str, limits: Limits) -> TransportError:
    return TransportError(f"{what} did not answer within {limits.deadline:g}s")


def _reason(e: Exception) -> str:
    # httpx wraps the OS error; its innermost message is the readable one
    # ("[Errno 111] Connection refused").
    inner: BaseException = e
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text)[:200]
