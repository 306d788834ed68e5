"""The command line's own rules: no abbreviations, usage errors that repeat no value."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from join_agent import cli, usage
from join_agent.errors import ConfigError, JoinAgentError


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


@pytest.mark.parametrize(
    ("argv", "verb"),
    [
        (["status"], "status"),
        (["--config", "/x.toml", "status", "--json"], "status"),
        (["--debug", "join", "--server", "https://10.0.0.5:6443", "--token-file", "-"], "join"),
        (["--config=/x.toml", "worker", "enroll"], "worker"),
        (["reload", "--pid", "7"], "reload"),
        (["reset", "--force"], "reset"),
        (["pin", "ca.pem"], "pin"),
        (["wait", "--timeout", "90s"], "wait"),
        (["run", "--debug"], "run"),
        (["--config", "status", "renew"], "renew"),  # a config file named "status"
        (["check"], "check"),
    ],
)
def test_the_parser_of_one_verb_reads_argv_as_the_whole_parser_does(
    argv: list[str], verb: str
) -> None:
    assert usage.verb_of(argv) == verb
    assert usage.parser(verb).parse_args(argv) == usage.parser().parse_args(argv)


def test_only_config_and_debug_may_come_before_the_verb_for_the_one_verb_parser() -> None:
    assert usage.verb_of(["--config", "status", "join"]) == "join"
    assert usage.verb_of(["--debug", "--config=/x", "pin", "f"]) == "pin"
    assert usage.verb_of(["-h", "status"]) is None
    assert usage.verb_of(["--version"]) is None
    assert usage.verb_of(["statuz"]) is None
    assert usage.verb_of([]) is None


def test_the_collector_is_off_for_verbs_that_run_once_and_on_for_those_that_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`script` (the console script, `python -m join_agent`) turns the cyclic collector off;
    `run`, `wait` and `worker` turn it back on, since they stay."""
    from join_agent.daemon import startup
    from join_agent.kubelet import settings
    from join_agent.verbs import wait

    seen: list[tuple[str, bool]] = []

    def record(verb: str, result: Any) -> Any:
        seen.append((verb, gc.isenabled()))
        return result

    monkeypatch.setattr(cli, "_config", lambda args: None)
    monkeypatch.setattr(startup, "main", lambda cfg, env: record("run", 0))
    monkeypatch.setattr(wait, "until_joined", lambda *a, **k: record("wait", (True, "joined")))
    monkeypatch.setattr(cli, "_VERBS", {**cli._VERBS, "check": lambda args: record("check", 0)})
    monkeypatch.setattr(settings, "facts", lambda cfg: record("worker", {}))
    try:
        for argv in (["run"], ["wait"], ["check"], ["worker", "kubelet"]):
            monkeypatch.setattr(sys, "argv", ["join-agent", *argv])
            assert cli.script() == 0
    finally:
        gc.enable()
        gc.unfreeze()
    assert seen == [("run", True), ("wait", True), ("check", False), ("worker", True)]


def test_run_under_smf_says_configuration_error_for_what_no_restart_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 96 (SMF_EXIT_ERR_CONFIG) puts the service into maintenance at once with the
    reason; exit 1 would have it restarted until "restarting too quickly"."""
    bad = tmp_path / "config.toml"
    bad.write_text("[signer]\nkind = 'nonsense'\n")
    monkeypatch.delenv("SMF_FMRI", raising=False)
    assert cli.main(["--config", str(bad), "run"]) == 1
    monkeypatch.setenv("SMF_FMRI", "svc:/system/kubernetes/join-agent:default")
    assert cli.main(["--config", str(bad), "run"]) == 96
    assert "signer.kind" in capsys.readouterr().err
    bad.chmod(0o666)  # refused by the trust rule: no restart makes it root's
    assert cli.main(["--config", str(bad), "run"]) == 96
    # Only `run`, and only for what restarting cannot fix.
    assert cli.main(["--config", str(bad), "check"]) == 1
    assert cli.exit_code("run", JoinAgentError("already running"), {"SMF_FMRI": "x"}) == 1
    assert cli.exit_code("run", ConfigError("bad"), {}) == 1


def test_operator_hints_name_the_service_manager_of_the_platform(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On illumos a hint says svcadm, never systemctl."""
    from join_agent.config import loading
    from join_agent.host import platform, preflight
    from join_agent.storage import state
    from join_agent.verbs import reset

    cfssl = {"urls": ["http://10.0.0.2:8888"], "ca_pins": ["sha256:" + "ab" * 32]}
    cfg = loading.parse(
        {"cluster": {"server": "https://10.0.0.1:6443"}, "signer": {"cfssl": cfssl}}
    )
    monkeypatch.setattr(preflight, "require_directories", lambda cfg: None)
    monkeypatch.setattr(state, "running_agent", lambda state_dir: 4242)
    said = {}
    for name, defaults in (("linux", platform.LINUX), ("illumos", platform.ILLUMOS)):
        monkeypatch.setattr(platform, "current", lambda d=defaults: d)
        with pytest.raises(JoinAgentError) as e:
            reset.reset(cfg)
        said[name] = str(e.value)
    assert "(systemctl stop join-agent)" in said["linux"]
    assert "(svcadm disable -t join-agent)" in said["illumos"]
    assert "systemctl" not in said["illumos"]
    # A renewal the daemon did not report in time: where its log is.
    from join_agent.verbs import renew

    monkeypatch.setattr(renew, "WAIT_SECONDS", 0.3)
    monkeypatch.setattr(os, "kill", lambda pid, sig: None)  # no daemon to ask here
    monkeypatch.setattr(state, "read", lambda state_dir: None)
    for name, defaults in (("linux", platform.LINUX), ("illumos", platform.ILLUMOS)):
        monkeypatch.setattr(platform, "current", lambda d=defaults: d)
        ok, said[name] = renew.renew(cfg, {})
        assert not ok
    assert said["linux"].endswith("see its log (journalctl -u join-agent)")
    assert said["illumos"].endswith('see its log (tail "$(svcs -L join-agent)")')
