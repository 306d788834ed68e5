"""`status`'s fast path, its pure parts: which command lines it takes (every other goes to
argparse, unchanged), where a daemon's settings record lives, and when a record is used
(tests/integration/test_status_fast.py runs it against a real daemon)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from join_agent import __version__
from join_agent.config import loading
from join_agent.storage import runtime
from join_agent.verbs import status_fast


@pytest.mark.parametrize(
    ("words", "form"),
    [
        (["status"], (None, "")),
        (["status", "--json"], (None, "--json")),
        (["status", "--nagios"], (None, "--nagios")),
        (["--config", "/c.toml", "status"], ("/c.toml", "")),
        (["--config=/c.toml", "status", "--json"], ("/c.toml", "--json")),
        (["status", "--config", "/c.toml", "--nagios"], ("/c.toml", "--nagios")),
        (["status", "--json", "--config=rel.toml"], ("rel.toml", "--json")),
        (["--config", "status", "status"], ("status", "")),
    ],
)
def test_the_forms_it_answers(words: list[str], form: tuple[str | None, str]) -> None:
    assert status_fast.form_of(words) == form


@pytest.mark.parametrize(
    "words",
    [
        [],
        ["run"],
        ["status", "--help"],
        ["-h"],
        ["--debug", "status"],
        ["status", "--debug"],
        ["--json", "status"],  # argparse refuses an output option before the verb
        ["status", "--json", "--nagios"],  # and two of them
        ["status", "--json", "--json"],
        ["status", "status"],
        ["--config", "/a.toml", "status", "--config", "/b.toml"],
        ["--config", "status"],  # no verb left
        ["status", "--config"],
        ["status", "--config", "--json"],  # a value argparse would not take
        ["--config=", "status"],
        ["status", "--jso"],  # no abbreviations, and argparse's own error for it
        ["status", "extra"],
        ["status", "--"],
    ],
)
def test_every_other_command_line_goes_to_argparse(words: list[str]) -> None:
    assert status_fast.form_of(words) is None


def test_the_config_file_is_found_as_the_cli_finds_it(tmp_path: Path) -> None:
    env = {"JOIN_AGENT_CONFIG": "/from/env.toml"}
    for flag, environ in ((None, {}), (None, env), ("/flag.toml", env), ("rel.toml", {})):
        assert status_fast.config_file(flag, environ) == str(loading.config_path(flag, environ))


def test_a_record_is_named_after_its_config_file_one_to_one() -> None:
    a = runtime.record_path("/run/ja", "/etc/join-agent/config.toml")
    assert a == "/run/ja/%2Fetc%2Fjoin-agent%2Fconfig.toml.json"
    # Escaping keeps distinct paths apart, "%" included.
    names = {runtime.record_path("/r", p) for p in ("/a/b", "/a%2Fb", "/a%252Fb", "/a-b")}
    assert len(names) == 4
    assert runtime.record_path("/r", "/" + "x" * 300) is None


SETTINGS: dict[str, Any] = {
    "state_dir": "/s", "pki_dir": "/p", "kubeconfig": "/k", "ca_file": "/c",
    "signer_kind": "cfssl", "server": "https://10.0.0.1:6443", "node_name": "n1",
    "clock_skew": 300.0, "overdue_after": 900.0, "manage_kubelet": True,
    "healthz": {"url": "http://127.0.0.1:10248/healthz", "host": "127.0.0.1", "port": 10248,
                "path": "/healthz"},
    "serving": False, "certificates": False,
}  # fmt: skip


def write_record(tmp_path: Path, config: Path, changes: dict[str, Any] | None = None) -> Path:
    stamp = runtime.stamp(config)
    doc = {"schema": 1, "version": __version__, "config": str(config), "stamp": stamp}
    doc["settings"] = copy.deepcopy(SETTINGS)
    doc.update(changes or {})
    path = runtime.record_path(str(tmp_path / "run"), str(config))
    assert path is not None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_text(json.dumps(doc))
    return Path(path)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    c = tmp_path / "config.toml"
    c.write_text("# the daemon's\n")
    return c


def settings(tmp_path: Path, config: Path) -> object:
    return runtime.settings_for(str(tmp_path / "run"), str(config), __version__)


def test_a_record_of_this_config_and_version_is_used(tmp_path: Path, config: Path) -> None:
    write_record(tmp_path, config)
    assert settings(tmp_path, config) == SETTINGS


@pytest.mark.parametrize(
    "changes",
    [
        {"version": "0.0.1"},  # written by another version: its settings may mean otherwise
        {"schema": 2},
        {"config": "/elsewhere.toml"},
        {"stamp": None},
        {"settings": {**SETTINGS, "clock_skew": "5m"}},
        {"settings": {**SETTINGS, "manage_kubelet": 1}},
        {"settings": {**SETTINGS, "healthz": {"url": "x", "host": "h", "port": "80", "path": "/"}}},
        {"settings": {k: v for k, v in SETTINGS.items() if k != "serving"}},
        {"settings": {**SETTINGS, "clock_skew": True}},
    ],
)
def test_a_record_that_may_not_say_what_the_file_says_is_not_used(
    tmp_path: Path, config: Path, changes: dict[str, Any]
) -> None:
    write_record(tmp_path, config, changes)
    assert settings(tmp_path, config) is None


def test_an_edited_replaced_or_chmodded_config_makes_its_record_stale(
    tmp_path: Path, config: Path
) -> None:
    write_record(tmp_path, config)
    assert settings(tmp_path, config) is not None
    config.write_text("# the daemon's\n")  # same size and text: a new mtime
    assert settings(tmp_path, config) is None
    write_record(tmp_path, config)
    config.chmod(0o600)  # ctime: its trust is looked at again, on the usual path
    assert settings(tmp_path, config) is None
    write_record(tmp_path, config)
    replacement = tmp_path / "new.toml"
    replacement.write_text("# the daemon's\n")
    replacement.replace(config)
    assert settings(tmp_path, config) is None


def test_a_record_or_config_others_could_write_is_not_used(tmp_path: Path, config: Path) -> None:
    record = write_record(tmp_path, config)
    record.chmod(0o666)
    assert settings(tmp_path, config) is None
    record.chmod(0o644)
    assert settings(tmp_path, config) is not None
    config.chmod(0o646)  # the usual path refuses such a config with its sentence
    write_record(tmp_path, config)
    assert settings(tmp_path, config) is None


def test_damaged_records_are_not_used(tmp_path: Path, config: Path) -> None:
    record = write_record(tmp_path, config)
    for text in ("", "{", "[]", "null", '{"schema": 1}', "[" * 100_000):
        record.write_text(text)
        assert settings(tmp_path, config) is None
    record.unlink()
    os.mkfifo(record)
    assert settings(tmp_path, config) is None
