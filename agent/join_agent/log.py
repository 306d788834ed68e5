"""Logging through structlog: JSON lines off a TTY (journald, SMF logs), console lines on one.

Secrets never reach a log line: every known secret value is replaced wherever it shows
up, and fields whose names say "secret" are dropped to a marker.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

# The stdlib's level numbers, without importing logging (a status call is timed).
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
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


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced."""
    return _scrub_text(text)


def _scrub_text(text: str) -> str:
    # Case-insensitive: a hex key is the same key in either case.
    for s in sorted(_SECRETS, key=len, reverse=True):
        if s.lower() in text.lower():
            text = re.sub(re.escape(s), REDACTED, text, flags=re.IGNORECASE)
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


class _Settings:
    level = INFO
    stream: TextIO | None = None
    configured = False


def tag(**fields: object) -> None:
    """Fields every line of this process carries from now on: a worker child's lines go
    to the daemon's stream (its stderr, journald) and say whose they are. (structlog's
    context variables, which ``merge_contextvars`` adds to each line without overriding
    the line's own keys.)"""
    import structlog.contextvars

    structlog.contextvars.bind_contextvars(**fields)


class _Deferred(ModuleType):
    """A module that is imported when it is first used, not when it is imported."""

    def __init__(self, name: str, lock: AbstractContextManager[object]) -> None:
        super().__init__(name)
        self._lock = lock

    def __getattr__(self, attr: str) -> Any:
        with self._lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            __import__(self.__name__)
        return getattr(sys.modules[self.__name__], attr)


def defer_asyncio() -> None:
    """Keep asyncio out of a process until something uses it (``join-agent run``: never).

    structlog imports asyncio (in ``structlog.stdlib``, and in 22.x ``_log_levels`` or 26.x
    ``_native``) for its ``a*()`` methods alone, and asyncio brings ssl and OpenSSL: ≈ 5.8
    MiB of the daemon's 24 (docs/benchmarks.md). Called before structlog's first import,
    this leaves a stand-in in ``sys.modules`` that takes the import statements' place; the
    first attribute read from it imports the real module, so nothing can tell but the
    memory. (importlib.util.LazyLoader cannot do it on 3.11: an import statement reads the
    module's ``__spec__``, and that read loads it.)
    """
    if "structlog" in sys.modules or "asyncio" in sys.modules:
        return
    import importlib.machinery
    import threading

    # Re-entrant: loading the real module may read another stand-in.
    stand_in = _Deferred("asyncio", threading.RLock())
    stand_in.__spec__ = importlib.machinery.PathFinder.find_spec("asyncio")  # find_spec works
    sys.modules["asyncio"] = stand_in


def setup(*, debug: bool = False, quiet: bool = False, stream: TextIO | None = None) -> None:
    """Choose where and how much to log; logs go to stderr, command output to stdout.

    structlog itself is configured (and imported: ≈ 37 ms, a fifth of a whole ``join``)
    only when the first line is actually logged. ``quiet`` is for one-shot verbs, which
    report on stdout and log only warnings unless ``debug``.
    """
    _Settings.level = DEBUG if debug else WARNING if quiet else INFO
    _Settings.stream = stream
    _Settings.configured = False


def _configure() -> None:
    if _Settings.configured:
        return
    import structlog

    out = _Settings.stream or sys.stderr
    renderer: Any
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    elif to_journal(out, os.environ):
        renderer = _Prioritised(structlog.processors.JSONRenderer())
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
        wrapper_class=structlog.make_filtering_bound_logger(_Settings.level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    _Settings.configured = True


# syslog priorities by structlog method: journald reads a "<N>" prefix off each line of a
# stream (SyslogLevelPrefix=, on by default) and keeps the rest, so every line stays one
# JSON object and `journalctl -p err` finds the errors.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3,
            "critical": 2}  # fmt: skip


def to_journal(out: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``out`` is journald's stream: $JOURNAL_STREAM names its device and inode
    (systemd.exec(5)); a pipe or file that merely inherited the variable is not."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(out.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (
        device.isdigit()
        and inode.isdigit()
        and (st.st_dev, st.st_ino)
        == (
            int(device),
            int(inode),
        )
    )


class _Prioritised:
    """A final structlog processor: the wrapped renderer's line behind its "<N>" prefix."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        return f"<{PRIORITY.get(method, 6)}>{self.inner(logger, method, event)}"


class Logger:
    """A structlog logger that imports structlog only for a line that will be written."""

    def __init__(self, name: str) -> None:
        self.name = name

    def bind(self, **context: Any) -> Any:
        """A real structlog BoundLogger carrying ``context``."""
        _configure()
        import structlog

        return structlog.get_logger(self.name).bind(**context)

    def _log(self, level: int, method: str, event: str, context: dict[str, Any]) -> None:
        if level >= _Settings.level:
            getattr(self.bind(), method)(event, **context)

    def debug(self, event: str, **context: Any) -> None:
        self._log(DEBUG, "debug", event, context)

    def info(self, event: str, **context: Any) -> None:
        self._log(INFO, "info", event, context)

    def warning(self, event: str, **context: Any) -> None:
        self._log(WARNING, "warning", event, context)

    def error(self, event: str, **context: Any) -> None:
        self._log(ERROR, "error", event, context)

    def exception(self, event: str, **context: Any) -> None:
        self._log(ERROR, "exception", event, context)


def get_logger(name: str) -> Logger:
    return Logger(name)
