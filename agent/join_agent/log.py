"""structlog setup: JSON lines off a TTY (journald, SMF logs), console lines on one.

Secrets never reach a log line: every known secret value is replaced wherever it shows
up, and fields whose names say "secret" are dropped to a marker.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRETS: set[str] = set()
_SECRET_WORDS = ("token", "auth_key", "private_key", "password", "secret")
REDACTED = "[redacted]"


def register_secret(value: str | bytes) -> None:
    """Make sure ``value`` (and its hex form, for binary keys) never appears in a log."""
    if isinstance(value, bytes):
        # bytes.fromhex() accepts either case, so an operator may have written either.
        _SECRETS.update((value.hex(), value.hex().upper()))
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return
        value = text
    # Shorter strings would redact ordinary words; no usable key or token is that short.
    if len(value) >= 6:
        _SECRETS.add(value)


def _scrub_text(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


def _secret_field(name: object) -> bool:
    return isinstance(name, str) and (name == "key" or any(w in name for w in _SECRET_WORDS))


def _scrub(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if any(s in raw.hex() for s in _SECRETS):
            return REDACTED
        return _scrub_text(raw.decode("ascii", "replace"))
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: REDACTED if _secret_field(k) else _scrub(v) for k, v in value.items()}
    return _scrub_text(str(value))


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace secret values and secret-named fields."""
    for k, v in list(event.items()):
        event[k] = REDACTED if _secret_field(k) else _scrub(v)
    return event


def setup(*, debug: bool = False, stream: TextIO | None = None) -> None:
    """Configure structlog once per process; logs go to stderr, command output to stdout."""
    out = stream or sys.stderr
    renderer: Any
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
