"""`status` against a real `join-agent run` (real CFSSL CA, the stand-in kubelet with its
healthz): the fast path (verbs/status_fast.py) prints what the usual path prints, imports
none of what it was made to avoid, and gives way to the usual path whenever the daemon's
record of its settings may not say what the config file says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from join_agent.host import platform
from join_agent.storage import runtime
from tests.conftest import Node, stop
from tests.lab import status_keys
from tests.lab.cfssl_ca import CfsslCA, free_port
from tests.standins import kubelet_command

# What the fast path must never load: each costs more than judging the node does
# (docs/benchmarks.md), and none is needed to read the record and status.json.
NEVER = (
    "argparse", "tomllib", "typing", "pathlib", "dataclasses", "inspect", "socket",
    "selectors", "urllib", "ipaddress", "logging", "structlog", "cryptography", "httpx",
    "yaml", "subprocess", "shutil", "asyncio", "ssl", "email", "http", "encodings.idna",
    "join_agent.config", "join_agent.usage", "join_agent.log", "join_agent.worker",
)  # fmt: skip
# The console script's own start: `from join_agent.cli import script` (and its `re`).
SCRIPT = "import re, sys\nfrom join_agent.cli import script\nsys.exit(script())"


@pytest.fixture
def running(tmp_path: Path, ca: CfsslCA) -> Iterator[Node]:
    n = Node(root=tmp_path / "node", ca=ca)
    n.root.mkdir()
    ca.write_auth_key(n.auth_key)
    port = free_port()
    n.write_config(
        kubelet={
            "command": kubelet_command(
                f"--standin-record={n.kubelet_record}", f"--standin-healthz-port={port}"
            ),
            "healthz_url": f"http://127.0.0.1:{port}/healthz",
            "stable_after": "1s",
        }
    )
    agent = n.start()
    try:
        n.wait_status(lambda d: d["state"] == "valid" and d["kubelet"]["state"] == "running")
        yield n
    finally:
        stop(agent)


def status(config: str, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`join-agent --config CONFIG status ARGS` as the console script runs it, and the
    modules it imported after the interpreter's start."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", SCRIPT, "--config", config, "status", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", r.stderr, re.M))
    r.stderr = "\n".join(ln for ln in r.stderr.splitlines() if not ln.startswith("import time:"))
    return r, imported


def fast(imported: set[str]) -> bool:
    return "join_agent.verbs.status" in imported and "join_agent.config.loading" not in imported


def same_moment(text: str) -> str:
    """The output without what moves from one second to the next."""
    text = re.sub(r'"checked_at": "[^"]*"', '"checked_at": "-"', text)
    text = re.sub(r'"seconds_left": \d+', '"seconds_left": 0', text)
    return re.sub(r"'seconds_left'=\d+s", "'seconds_left'=0s", text)


@pytest.mark.parametrize("output", [(), ("--json",), ("--nagios",)], ids=["text", "json", "nagios"])
def test_the_fast_path_prints_what_the_usual_path_prints(
    running: Node, output: tuple[str, ...]
) -> None:
    config = str(running.config)
    quick, imported = status(config, *output)
    assert fast(imported), sorted(imported)
    # The same file named another way finds no record: the usual path, argparse and all.
    spelt = f"{running.config.parent}/./{running.config.name}"
    usual, usual_imported = status(spelt, *output)
    assert not fast(usual_imported) and "argparse" in usual_imported
    assert (quick.returncode, quick.stderr) == (usual.returncode, usual.stderr) == (0, "")
    assert same_moment(quick.stdout) == same_moment(usual.stdout)
    if not output:
        assert "State:        valid, healthy" in quick.stdout
        assert "healthz ok" in quick.stdout  # the kubelet was asked, as on the usual path
    if output == ("--json",):  # every key it prints is in docs/status.md's table
        assert status_keys.undocumented(json.loads(quick.stdout)) == set()


def test_the_fast_path_imports_none_of_what_it_avoids(running: Node) -> None:
    for output in ((), ("--json",), ("--nagios",)):
        r, imported = status(str(running.config), *output)
        assert r.returncode == 0 and fast(imported)
        loaded = sorted(m for m in imported if m.startswith(NEVER))
        assert loaded == [], f"status {' '.join(output)} imported {loaded}"


def test_the_usual_path_runs_whenever_the_record_may_be_stale(running: Node) -> None:
    config = str(running.config)
    record = Path(str(runtime.record_path(platform.current().runtime_dir, config)))
    assert json.loads(record.read_text())["settings"]["state_dir"] == str(running.state)
    # An edit the daemon has not loaded (here: none at all, but a new mtime).
    os.utime(running.config)
    r, imported = status(config)
    assert r.returncode == 0 and not fast(imported)
    # Reloaded: the daemon records the file as it is now.
    assert running.run("reload").returncode == 0
    assert fast(status(config)[1])
    # A record someone else could have written is not believed.
    record.chmod(0o666)
    try:
        r, imported = status(config)
        assert r.returncode == 0 and not fast(imported)
    finally:
        record.chmod(0o644)
    # Nor one that names another version of join-agent.
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "version": "0.0.0"}))
    assert not fast(status(config)[1])
    record.write_text(json.dumps(doc))
    assert fast(status(config)[1])


def test_the_record_goes_with_the_daemon(tmp_path: Path, ca: CfsslCA) -> None:
    n = Node(root=tmp_path / "node", ca=ca)
    n.root.mkdir()
    ca.write_auth_key(n.auth_key)
    n.write_config(kubelet={"manage": False})
    record = Path(str(runtime.record_path(platform.current().runtime_dir, str(n.config))))
    agent = n.start()
    try:
        n.wait_status(lambda d: d["state"] == "valid")
        assert record.stat().st_mode & 0o777 == 0o644 and record.stat().st_uid == 0
        # One line, as the SMF refresh method reads it (`grep '"pid": PID[,}]'`).
        assert re.search(rf'"pid": {agent.pid}[,}}]', record.read_text())
        assert record.read_text().count("\n") == 1
        assert oct(record.parent.stat().st_mode & 0o777) == "0o755"
    finally:
        stop(agent)
    assert not record.exists()
    r, imported = status(str(n.config))
    assert r.returncode == 1 and not fast(imported)  # degraded: nothing renews
