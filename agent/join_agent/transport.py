"""The one gateway for HTTP: deadlines that cover the body, a size cap, no redirects.

httpx's read timeout is per chunk, so a server dribbling one byte a second would never
time out; the total deadline here is checked between chunks, and a stalled read is cut
by the read timeout, which is never longer than the deadline.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field

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


def post(client: httpx.Client, url: str, body: bytes, limits: Limits, *, what: str) -> Response:
    """POST ``body`` as JSON and return the whole answer, within ``limits``.

    ``what`` names the peer in errors ("the CA at http://…").
    """
    start = time.monotonic()
    try:
        with client.stream(
            "POST", url, content=body, headers={"Content-Type": "application/json"}
        ) as r:
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_body:
                raise TransportError(
                    f"{what} sent a {int(declared)}-byte answer, more than the "
                    f"{limits.max_body}-byte limit"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > limits.max_body:
                    raise TransportError(
                        f"{what} sent an answer larger than the {limits.max_body}-byte limit"
                    )
                if time.monotonic() - start > limits.deadline:
                    raise _deadline(what, limits)
                chunks.append(chunk)
            if time.monotonic() - start > limits.deadline:
                raise _deadline(what, limits)
            return Response(url=url, status=r.status_code, headers=r.headers, body=b"".join(chunks))
    except httpx.TimeoutException:
        raise _deadline(what, limits) from None
    except httpx.ConnectError as e:
        raise TransportError(f"cannot connect to {what}: {_reason(e)}") from None
    except httpx.DecodingError:
        raise TransportError(f"{what} sent an answer that cannot be decoded") from None
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
    return text.replace("[Errno 111] ", "").replace("[Errno 104] ", "")[:200]
