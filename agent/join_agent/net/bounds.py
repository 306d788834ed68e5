"""What every HTTP exchange keeps to, whichever client carries it (transport.py's httpx,
plain.py's http.client): its limits, the one answer type, no compressed answers, the size
cap, and the sentences that name the peer when something goes wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from join_agent.errors import TransportError


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
    headers: Mapping[str, str]  # looked up by lower-case names
    body: bytes = field(repr=False)


class Answer(Protocol):
    """An answer being read: its headers and its body, chunk by chunk."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def iter_bytes(self) -> Iterator[bytes]: ...


def refuse_compressed(r: Answer, what: str) -> None:
    encoding = r.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise TransportError(
            f"{what} sent a compressed answer ({encoding[:20]}) although asked not to"
        )


def read_capped(r: Answer, limits: Limits, what: str) -> bytes:
    declared = r.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body:
        raise TransportError(
            f"{what} sent a {int(declared)}-byte answer, more than the {limits.max_body}-byte limit"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in r.iter_bytes():  # identity-encoded (checked first): raw bytes
        size += len(chunk)
        if size > limits.max_body:
            raise TransportError(
                f"{what} sent an answer larger than the {limits.max_body}-byte limit"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def deadline(what: str, limits: Limits) -> TransportError:
    return TransportError(f"{what} did not answer within {limits.deadline:g}s")


def connect_timeout(what: str, limits: Limits) -> TransportError:
    bound = min(limits.connect, limits.deadline)
    return TransportError(
        f"cannot connect to {what}: no connection (TCP and TLS handshake) within {bound:g}s"
    )


def cannot_connect(e: BaseException, what: str) -> TransportError:
    return TransportError(f"cannot connect to {what}: {reason(e)}")


def broke(e: BaseException, what: str) -> TransportError:
    return TransportError(f"the connection to {what} broke: {reason(e)}")


def innermost(e: BaseException) -> BaseException:
    inner = e
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    return inner


def reason(e: BaseException) -> str:
    # A client wraps the OS error; its innermost message is the readable one
    # ("[Errno 111] Connection refused").
    inner = innermost(e)
    text = str(inner) or type(inner).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text)[:200]
