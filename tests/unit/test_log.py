"""log: JSON lines off a TTY, and a registered secret never reaches a line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from join_agent import log

TOKEN = "abcdef.0123456789abcdef"  # a bootstrap token
KEY = bytes(range(1, 33))  # b"\x01\x02...\x20": a binary auth key (all ASCII, non-printable)


class _Url:
    """A value that is neither str nor container: logged through str()."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A configured logger writing to a buffer, with only this test's secrets registered."""
    monkeypatch.setattr(log, "_SECRETS", set())
    stream = io.StringIO()
    log.setup(stream=stream)
    log.register_secret(KEY)
    log.register_secret(TOKEN)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)


def assert_no_secret(stream: io.StringIO) -> list[dict[str, Any]]:
    raw = stream.getvalue()
    events = lines(stream)
    text_forms = [TOKEN, KEY.hex(), KEY.decode("ascii"), repr(KEY)[2:-1]]
    for event in events:
        for s in strings(event):
            for form in text_forms:
                assert form not in s, (form, s)
    for form in (TOKEN, KEY.hex(), json.dumps(KEY.decode("ascii"))[1:-1]):
        assert form not in raw
    return events


def test_json_lines_with_level_and_utc_timestamp(out: io.StringIO) -> None:
    log.get_logger("t").info("joined", node="node-1")
    [event] = assert_no_secret(out)
    assert event["event"] == "joined"
    assert event["node"] == "node-1"
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z")


def test_debug_is_off_unless_asked(out: io.StringIO) -> None:
    log.get_logger("t").debug("noise")
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        (f"bootstrap token {TOKEN} was refused", {}),
        (f"auth key {KEY.hex()} was refused", {}),
        ("auth key " + KEY.decode("ascii") + " was refused", {}),
        ("nested", {"detail": {"inner": {"value": f"Bearer {TOKEN}"}, "n": 1}}),
        ("nested hex", {"detail": {"inner": [KEY.hex()]}}),
        ("listed", {"items": ["a", TOKEN, {"k": KEY.hex()}, 3, None]}),
        ("tupled", {"items": (TOKEN, KEY.hex())}),
        ("as an object", {"url": _Url(f"https://x/?token={TOKEN}")}),
        ("named field", {"token": "unregistered-but-named-token-value"}),
        ("named field", {"auth_key": "unregistered-auth-key-value"}),
        ("named nested", {"headers": {"password": "unregistered-password"}}),
    ],
)
def test_secrets_never_reach_a_line(out: io.StringIO, message: str, fields: dict[str, Any]) -> None:
    log.get_logger("t").info(message, **fields)
    [event] = assert_no_secret(out)
    assert "unregistered" not in out.getvalue()
    assert log.REDACTED in out.getvalue()
    assert event["level"] == "info"


def test_a_field_named_token_is_redacted_whatever_its_value(out: io.StringIO) -> None:
    log.get_logger("t").info("fetched", token="abc")
    [event] = assert_no_secret(out)
    assert event["token"] == log.REDACTED


def test_secrets_in_a_traceback_are_redacted(out: io.StringIO) -> None:
    def fail() -> None:
        raise ValueError(f"server refused token {TOKEN} with key {KEY.hex()}")

    try:
        fail()
    except ValueError:
        log.get_logger("t").exception("enrollment failed")
    [event] = assert_no_secret(out)
    assert "ValueError: server refused token [redacted]" in event["exception"]


def test_bound_context_is_redacted(out: io.StringIO) -> None:
    log.get_logger("t").bind(signer=f"cfssl key={KEY.hex()}").info("ready")
    [event] = assert_no_secret(out)
    assert event["signer"] == f"cfssl key={log.REDACTED}"


def test_other_values_pass_unchanged(out: io.StringIO) -> None:
    log.get_logger("t").info("renewed", serial="abcdef01", days=30, ok=True, ratio=0.5)
    [event] = assert_no_secret(out)
    assert (event["serial"], event["days"], event["ok"], event["ratio"]) == (
        "abcdef01",
        30,
        True,
        0.5,
    )


def test_a_binary_secret_logged_as_bytes_is_redacted(out: io.StringIO) -> None:
    log.get_logger("t").info("signing", key_material=KEY)
    assert_no_secret(out)


def test_uppercase_hex_of_a_binary_secret_is_redacted(out: io.StringIO) -> None:
    log.get_logger("t").info(f"auth key file holds {KEY.hex().upper()}")
    assert KEY.hex().upper() not in out.getvalue()


def test_lines_to_journald_carry_their_priority(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """journald strips a "<N>" prefix and files the line at priority N; each line is still
    one JSON object behind it. Only for the stream $JOURNAL_STREAM names."""
    import os

    path = tmp_path / "journal"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert log.to_journal(stream, os.environ)
        log.setup(stream=stream, debug=True)
        try:
            logger = log.get_logger("t")
            logger.debug("d")
            logger.info("i")
            logger.warning("w")
            logger.error("e")
        finally:
            structlog.reset_defaults()
    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert [json.loads(line[3:])["event"] for line in lines] == ["d", "i", "w", "e"]
    with (tmp_path / "other").open("w") as elsewhere:
        assert not log.to_journal(elsewhere, os.environ)  # inherited, but not journald's
    assert not log.to_journal(io.StringIO(), os.environ)


DEFERRED = """
import io, json, sys
from join_agent import log
if sys.argv[1] == "deferred":
    log.defer_asyncio()
out = io.StringIO()
log.setup(stream=out)
log.register_secret("s3cr3t-value")
try:
    raise ValueError("with s3cr3t-value inside")
except ValueError:
    log.get_logger("t").exception("failed", token="x", n=1, data=b"\\x00")
log.get_logger("t").info("plain", path="/etc")
loaded = [m for m in ("asyncio.base_events", "ssl", "_ssl") if m in sys.modules]
lines = [json.loads(line) for line in out.getvalue().splitlines()]
for line in lines:
    line.pop("timestamp")
import asyncio  # what uses it gets the real module
async def three() -> int:
    return 3
print(json.dumps({"loaded": loaded, "lines": lines, "run": asyncio.run(three())}))
"""


def test_the_daemon_logs_the_same_lines_without_loading_asyncio() -> None:
    """`run` keeps structlog's asyncio (and with it ssl and OpenSSL, ≈ 5.8 MiB) out of
    the process (log.defer_asyncio): the lines are the same, and asyncio still works for
    whatever asks for it."""
    runs = {
        how: json.loads(
            subprocess.run(
                [sys.executable, "-c", DEFERRED, how], capture_output=True, text=True, check=True
            ).stdout
        )
        for how in ("deferred", "as-is")
    }
    assert runs["deferred"]["loaded"] == []
    assert runs["as-is"]["loaded"] != []  # structlog does load it: the stand-in is why not
    assert runs["deferred"]["lines"] == runs["as-is"]["lines"]
    assert "s3cr3t" not in json.dumps(runs["deferred"]["lines"])
    assert runs["deferred"]["run"] == runs["as-is"]["run"] == 3
