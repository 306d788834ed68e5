"""The command line's own rules: no abbreviations, usage errors that repeat no value."""

from __future__ import annotations

import pytest

from join_agent import cli, usage


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (
            "unrecognized arguments: --token abcdef.0123456789abcdef",
            "unrecognized arguments: --token ...; the bootstrap token is read from a file",
        ),
        ("unrecognized arguments: --token=abcdef.0123456789abcdef", "arguments: --token;"),
        ("unrecognized arguments: --auth-key=00112233445566778899aabbccddeeff", "--auth-key"),
        (
            "argument VERB: invalid choice: 'abcdef.0123456789abcdef' (choose from 'join', "
            "'worker')",
            "argument VERB: invalid choice: '...' (verbs: join, run, status, wait, check, renew, "
            "reload, reset, pin)",
        ),
        ("argument --token-file: expected one argument", "expected one argument"),
    ],
)
def test_usage_errors_repeat_no_value(message: str, said: str) -> None:
    out = usage.safe_usage_error(message)
    assert said in out
    for secret in ("0123456789abcdef", "00112233445566778899"):
        assert secret not in out
    assert "worker" not in out


def test_no_option_is_taken_by_its_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["join", "--token-fi", "x"], ["--conf", "c.toml", "status"], ["reset", "--for"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
