"""Attacks from the node itself: another user, planted files and links, devices where files
should be, a hostile umask, and an operator's mistakes (docs/security.md, "On the node").

Each runs the real `join-agent` processes after an honest join against the real CFSSL,
with a second real user (`nobody`) owning or able to write what it attacks. Each must be
refused with one sentence that names the path, what is wrong and the command that fixes
it, and what the node already holds must stay byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from join_agent.host import proc
from tests.conftest import Node, alive, need
from tests.lab.cfssl_ca import CfsslCA, free_port
from tests.standins import kubelet_command

pytestmark = [pytest.mark.integration, pytest.mark.root]

JOIN_AGENT = Path(sys.executable).with_name("join-agent")  # the console script, as installed


@pytest.fixture(scope="module", autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        need("root", "these attacks chown files to another user")


@pytest.fixture(scope="module")
def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        need("the user nobody", "a second real user owns the planted files")
        raise


@pytest.fixture
def joined(node: Node) -> Node:
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    return node


def give(path: Path, who: pwd.struct_passwd) -> None:
    os.chown(path, who.pw_uid, who.pw_gid, follow_symlinks=False)


def refused(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """One sentence on stderr, no traceback, holding every needle; returns it."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("join-agent: "), r.stderr
    assert "Traceback" not in r.stderr and "unexpected error" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in last, (needle, last)
    return last


# --- directories and files another user owns or can write --------------------------------


def _targets(node: Node) -> dict[str, Path]:
    return {
        "state_dir": node.state,
        "pki_dir": node.pki,
        "kubeconfig's directory": node.kubeconfig.parent,
        "ancestor": node.root,
    }


@pytest.mark.parametrize("target", ["state_dir", "pki_dir", "kubeconfig's directory", "ancestor"])
@pytest.mark.parametrize("how", ["owned by nobody", "mode 0777", "group-writable"])
def test_a_directory_someone_else_controls_is_refused(
    joined: Node, nobody: pwd.struct_passwd, target: str, how: str
) -> None:
    path = _targets(joined)[target]
    before = joined.tree()
    mode = stat.S_IMODE(path.stat().st_mode)
    if how == "owned by nobody":
        give(path, nobody)
        expected: tuple[str, ...] = ("is owned by uid", "(nobody), not root", f"chown root {path}`")
    else:
        path.chmod(0o777 if how == "mode 0777" else 0o775)
        expected = ("is writable by group", f"chmod go-w {path}`")
    try:
        for verb in ("join", "run", "reset"):
            args = ("reset", "--force") if verb == "reset" else (verb,)
            refused(joined.run(*args), str(path), *expected)
        check = joined.run("check")
        assert check.returncode == 1
        # The ancestor holds the config file too: the config is the first to fail there.
        heading = "FAIL  config: " if target == "ancestor" else "FAIL  trust: "
        assert any(
            line.startswith(heading) and str(path) in line and expected[-1] in line
            for line in check.stdout.splitlines()
        ), check.stdout
        assert joined.tree() == before
    finally:
        os.chown(path, 0, 0)
        path.chmod(mode)


def test_a_sticky_world_writable_directory_on_the_way_is_allowed(joined: Node) -> None:
    """/tmp's case: others may add entries, but not move or remove root's."""
    joined.root.chmod(0o1777)
    try:
        r = joined.run("join")
        assert r.returncode == 0, r.stderr
    finally:
        joined.root.chmod(0o755)


@pytest.mark.parametrize("how", ["owned by nobody", "mode 0666", "mode 0620"])
def test_a_config_file_someone_else_can_write_is_refused_by_every_verb(
    joined: Node, nobody: pwd.struct_passwd, how: str
) -> None:
    before = joined.tree()
    if how == "owned by nobody":
        give(joined.config, nobody)
        expected = "(nobody), not root"
    else:
        joined.config.chmod(int(how.rsplit(maxsplit=1)[-1], 8))
        expected = "is writable by group"
    for args in (("join",), ("run",), ("renew",), ("reset", "--force")):
        refused(joined.run(*args), f"config file {joined.config}", expected)
    r = joined.run("status")
    refused(r, f"config file {joined.config}", expected)
    assert r.returncode == 3  # status could not run: UNKNOWN, not "degraded"
    check = joined.run("check")
    assert check.stdout.startswith(f"FAIL  config: config file {joined.config}")
    assert joined.tree() == before


def test_a_secret_in_a_directory_someone_else_can_write_is_refused(
    joined: Node, nobody: pwd.struct_passwd
) -> None:
    secrets = joined.root / "secrets"
    secrets.mkdir(mode=0o700)
    key = secrets / "cfssl-auth-key"
    shutil.copy(joined.auth_key, key)
    key.chmod(0o600)
    joined.write_config(signer__cfssl={"auth_key_file": str(key)})
    give(secrets, nobody)
    before = joined.tree()
    refused(
        joined.run("join"),
        f"(on the path to {key})",
        "(nobody), not root",
        f"chown root {secrets}`",
    )
    assert joined.tree() == before


def test_a_planted_lock_link_is_refused_and_its_target_untouched(joined: Node) -> None:
    victim = joined.root / "victim"
    victim.write_text("precious\n")
    lock = joined.state / "lock"
    lock.unlink()
    lock.symlink_to(victim)
    before = joined.tree()
    refused(joined.run("join"), f"the lock {lock} is a symlink", f"rm {lock}")
    assert victim.read_text() == "precious\n"
    assert joined.tree() == before


def test_a_write_replaces_a_link_in_its_place_and_never_follows_it(joined: Node) -> None:
    """The kubeconfig's name is a link to a file holding the same text: the old writer
    found it "unchanged" and chmodded the link's target."""
    victim = joined.root / "victim.conf"
    victim.write_bytes(joined.kubeconfig.read_bytes())
    victim.chmod(0o644)
    joined.kubeconfig.unlink()
    joined.kubeconfig.symlink_to(victim)
    r = joined.run("join")
    assert r.returncode == 0, r.stderr
    assert not joined.kubeconfig.is_symlink()
    assert stat.S_IMODE(joined.kubeconfig.stat().st_mode) == 0o600
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


@contextlib.contextmanager
def bystander(nobody: pwd.struct_passwd) -> Iterator[subprocess.Popen[bytes]]:
    """A process of another user: what a planted pidfile would have root signal."""
    p = subprocess.Popen(["sleep", "300"], user=nobody.pw_uid, group=nobody.pw_gid)
    try:
        yield p
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("how", ["mode 0666", "owned by nobody"])
def test_reset_does_not_kill_what_a_pidfile_others_could_write_names(
    joined: Node, nobody: pwd.struct_passwd, how: str
) -> None:
    with bystander(nobody) as victim:
        pidfile = joined.state / "kubelet.pid"
        pidfile.write_text(f"{victim.pid} {proc.start_time(victim.pid)}\n")
        if how == "owned by nobody":
            give(pidfile, nobody)
            expected = "(nobody), not root"
        else:
            pidfile.chmod(0o666)
            expected = "is writable by group and others (mode 0666)"
        before = joined.tree()
        refused(joined.run("reset", "--force"), f"the kubelet pidfile {pidfile}", expected)
        time.sleep(0.3)
        assert alive(victim.pid)
        assert joined.tree() == before


def test_renew_does_not_signal_what_an_agent_pidfile_others_could_write_names(
    joined: Node, nobody: pwd.struct_passwd
) -> None:
    with bystander(nobody) as victim:
        pidfile = joined.state / "agent.pid"
        pidfile.write_text(f"{victim.pid} {proc.start_time(victim.pid)}\n")
        pidfile.chmod(0o646)
        before = joined.tree()
        refused(joined.run("renew"), f"the pidfile {pidfile}", "writable by others (mode 0646)")
        time.sleep(0.3)
        assert alive(victim.pid)  # SIGUSR1 would have ended it
        assert joined.tree() == before


# --- reads: devices, FIFOs, sizes -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "huge"])
def test_status_reads_no_device_fifo_or_giant_behind_the_current_link(
    joined: Node, kind: str
) -> None:
    target: Path
    if kind == "/dev/zero":
        target = Path("/dev/zero")
    elif kind == "fifo":
        target = joined.pki / "fifo"
        os.mkfifo(target, 0o600)
    else:
        target = joined.pki / "huge.pem"
        with target.open("wb") as f:
            f.truncate(64 << 20)
        target.chmod(0o600)
    joined.current.unlink()
    joined.current.symlink_to(target)
    r = subprocess.run(
        [sys.executable, "-m", "join_agent", "--config", str(joined.config), "status"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "unexpected error" not in r.stdout + r.stderr
    said = {"/dev/zero": "is a character device", "fifo": "is a FIFO", "huge": "larger than"}
    assert said[kind] in r.stdout, r.stdout


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "huge", "directory"])
def test_pin_reads_only_a_regular_file_of_sane_size(tmp_path: Path, kind: str) -> None:
    target = {"/dev/zero": Path("/dev/zero"), "directory": tmp_path}.get(kind, tmp_path / kind)
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "huge":
        with target.open("wb") as f:
            f.truncate(64 << 20)
    r = subprocess.run(
        [sys.executable, "-m", "join_agent", "pin", str(target)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    refused(r, str(target))


def _pretend_the_daemon_runs(node: Node) -> None:
    """An agent.pid naming this test process: `status` then believes status.json."""
    me = os.getpid()
    (node.state / "agent.pid").write_text(f"{me} {proc.start_time(me)}\n")


DAMAGE = {
    "not JSON": b"{ this is not json",
    "nested past reason": b"[" * 100_000 + b"]" * 100_000,
    "wrong types": json.dumps(
        {"agent": {"pid": "1", "state": 3}, "renewal": [], "certificates": [1]}
    ).encode(),
    "a timestamp that is not one": json.dumps({"renewal": {"last_success": "yesterday"}}).encode(),
    "too large": b'{"pad": "' + b"x" * (2 << 20) + b'"}',
    "a list": b"[]",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_status_file_is_reported_and_the_files_judged(joined: Node, damage: str) -> None:
    _pretend_the_daemon_runs(joined)
    (joined.state / "status.json").write_bytes(DAMAGE[damage])
    r = joined.run("status", "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)  # valid credentials; a problem to see
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["state"] == "valid" and doc["source"] == "files"
    assert any("judged from the files on disk alone" in p for p in doc["problems"]), doc
    text = joined.run("status")
    assert "unexpected error" not in text.stdout + text.stderr


def test_a_status_file_that_is_a_fifo_does_not_hang_status(joined: Node) -> None:
    _pretend_the_daemon_runs(joined)
    os.mkfifo(joined.state / "status.json", 0o644)
    r = joined.run("status", "--json")
    assert r.returncode == 1, r.stderr
    assert "is a FIFO" in " ".join(json.loads(r.stdout)["problems"])


# --- umask ----------------------------------------------------------------------------------


def test_under_umask_000_nothing_is_created_writable_by_others(tmp_path: Path, ca: CfsslCA) -> None:
    node = Node(root=tmp_path / "node", ca=ca)
    node.root.mkdir()
    ca.write_auth_key(node.auth_key)
    paths = {
        "pki_dir": str(node.root / "var" / "lib" / "kubelet" / "pki"),
        "kubeconfig": str(node.root / "etc" / "kubernetes" / "kubelet.conf"),
        "ca_file": str(node.root / "etc" / "kubernetes" / "pki" / "ca.crt"),
        "state_dir": str(node.root / "var" / "lib" / "join-agent"),
    }
    node.write_config(paths=paths)
    r = subprocess.run(
        [sys.executable, "-m", "join_agent", "--config", str(node.config), "join"],
        capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=lambda: os.umask(0),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    created = [p for p in node.root.rglob("*") if p not in (node.config, node.auth_key)]
    assert len(created) > 8
    for p in created:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        assert not st.st_mode & 0o022, f"{p} is {stat.S_IMODE(st.st_mode):04o}"
    assert stat.S_IMODE(Path(paths["state_dir"]).stat().st_mode) == 0o700
    assert stat.S_IMODE((node.root / "etc" / "kubernetes").stat().st_mode) == 0o755


# --- planted code: what every child process could load or run ------------------------------


PLANTED_PYTHON = """\
import os, sys
with open({marker!r}, "a") as f:
    f.write(" ".join(sys.argv) + "\\n")
"""
PLANTED_TOOL = """\
#!/bin/sh
echo "$0 $*" >> {marker}
"""
TOOLS = ("systemctl", "ps", "sh", "python3", "kubelet", "join-agent-test-tool")


def plant(directory: Path, library: Path, marker: Path, who: pwd.struct_passwd) -> None:
    """Code another user leaves where a child's import path or PATH could find it: a
    ``join_agent`` package and tools in ``directory`` (the working directory, first on
    PATH), ``sitecustomize``/``usercustomize`` in ``library`` (first on PYTHONPATH)."""
    for d in (directory, library):
        d.mkdir(mode=0o777)
        d.chmod(0o777)
    package = directory / "join_agent"
    package.mkdir()
    for name in ("__init__.py", "__main__.py"):
        (package / name).write_text(PLANTED_PYTHON.format(marker=str(marker)))
    for name in ("sitecustomize.py", "usercustomize.py"):
        (library / name).write_text(PLANTED_PYTHON.format(marker=str(marker)))
    for tool in TOOLS:
        path = directory / tool
        path.write_text(PLANTED_TOOL.format(marker=marker))
        path.chmod(0o777)
    for p in [directory, library, *directory.rglob("*"), *library.rglob("*")]:
        give(p, who)


def test_planted_code_reaches_no_child_the_agent_starts(
    tmp_path: Path, ca: CfsslCA, nobody: pwd.struct_passwd
) -> None:
    """The worker (python -m join_agent), the kubelet and a [[certificate]] action, each
    started by `join-agent run` from a directory another user filled, with that
    directory first on PATH and PYTHONPATH: none of them loads or runs what is there."""
    node = Node(root=tmp_path / "node", ca=ca)
    node.root.mkdir()
    ca.write_auth_key(node.auth_key)
    marker = tmp_path / "PLANTED-CODE-RAN"
    planted, library = tmp_path / "planted", tmp_path / "planted-lib"
    plant(planted, library, marker, nobody)
    action_log = node.root / "action.log"
    action = node.root / "action.sh"
    action.write_text(
        "#!/bin/sh\n"
        f'echo "cwd=$(pwd) path=$PATH python=$PYTHONPATH" >> {action_log}\n'
        "join-agent-test-tool || true\n"
    )
    action.chmod(0o755)
    port = free_port()
    record = node.kubelet_record
    node.write_config(
        renewal={"retry_min": "1s", "retry_max": "3s"},
        kubelet={
            "command": kubelet_command(
                f"--standin-record={record}",
                f"--standin-healthz-port={port}",
                "--standin-run-tool=join-agent-test-tool",
            ),
            "healthz_url": f"http://127.0.0.1:{port}/healthz",
            "stable_after": "1s",
        },
    )
    with node.config.open("a") as f:
        f.write(
            "[[certificate]]\n"
            'name = "extra"\nprofile = "client"\ncommon_name = "extra-client"\n'
            f'cert_file = "{node.root / "extra.crt"}"\nkey_file = "{node.root / "extra.key"}"\n'
            f'[certificate.action]\ncommand = ["{action}"]\n'
        )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "JOIN_AGENT_TEST_FAULT")
    }
    env.update(
        PATH=f"{planted}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=str(library),
        PYTHONUSERBASE=str(library),
        LD_LIBRARY_PATH=str(library),
    )
    agent = subprocess.Popen(
        [str(JOIN_AGENT), "--config", str(node.config), "run"],
        cwd=planted, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (record.exists() and action_log.exists()):
            assert agent.poll() is None, agent.communicate()[1]
            assert time.monotonic() < deadline, "no kubelet start and no action in 60 s"
            time.sleep(0.2)
        agent.send_signal(signal.SIGUSR1)  # one more worker, after the kubelet started
        time.sleep(3)
    finally:
        agent.terminate()
        agent.wait(30)
    # The resident process trusts the environment of whoever started it (the package's
    # units give it a clean one); every line it may have written says so.
    ran = marker.read_text().splitlines() if marker.exists() else []
    children = [line for line in ran if not line.endswith(f"--config {node.config} run")]
    assert len(ran) == len(children) + 1  # the resident loaded sitecustomize: it was there
    assert children == [], ran
    start = node.kubelet_starts()[0]
    assert start["cwd"] == "/"
    assert start["tool"] is None
    assert str(planted) not in start["env"]["PATH"]
    assert not [n for n in start["env_names"] if n.startswith(("PYTHON", "LD_"))]
    line = action_log.read_text().splitlines()[0]
    assert line.startswith("cwd=/ ") and str(planted) not in line


def test_a_bare_or_foreign_kubelet_command_is_refused(
    joined: Node, nobody: pwd.struct_passwd
) -> None:
    joined.write_config(kubelet={"command": ["kubelet", "--v=2"]})
    refused(joined.run("run"), "kubelet.command starts with 'kubelet'", "absolute path")
    script = joined.root / "kubelet.py"
    shutil.copy(Path(kubelet_command()[1]), script)
    give(script, nobody)
    joined.write_config(kubelet={"command": [sys.executable, str(script)]})
    before = joined.tree()
    last = refused(joined.run("run"), f"kubelet.command argument {script}", "(nobody), not root")
    assert f"chown root {script}" in last
    check = joined.run("check")
    assert any(
        line.startswith("FAIL  trust: kubelet.command argument")
        for line in check.stdout.splitlines()
    ), check.stdout
    assert joined.tree() == before


# --- operator mistakes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "said"),
    [
        (
            "a" * 53,
            "it has 53 characters: the certificate's CN system:node:<name> may have at most 64",
        ),
        ("a" * 64, "has 64 characters (DNS allows 63)"),
        ("a" * 40 + ".example.com", "it has 52 characters"),  # at the limit: accepted
    ],
)
def test_node_names_are_held_to_every_limit_up_front(node: Node, name: str, said: str) -> None:
    node.write_config(node={"name": name})
    r = node.run("join")
    if len(name) <= 52:
        assert r.returncode == 0, r.stderr
        return
    refused(r, "node.name", said)
    assert not node.state.exists()  # refused before anything was written or asked
    check = node.run("check")
    assert said in check.stdout


def test_a_hostname_past_the_cn_limit_is_one_sentence(node: Node) -> None:
    if not shutil.which("unshare"):
        need("unshare", "util-linux")
    cfg = node.config.read_text().replace('name = "worker-1"\n', "")
    node.config.write_text(cfg)
    name = "h" * 60
    r = subprocess.run(
        ["unshare", "--uts", "sh", "-c", f'hostname {name} && exec "$@"', "-",
         sys.executable, "-m", "join_agent", "--config", str(node.config), "join"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    refused(r, f"node name {name!r} from the hostname cannot be used", "at most 52")


def test_the_cli_takes_no_abbreviation_and_repeats_no_secret(node: Node) -> None:
    secret = "abcdef.0123456789abcdef"
    r = node.run("join", "--token", secret)
    assert r.returncode == 2
    assert "0123456789abcdef" not in r.stdout + r.stderr
    assert "--token-file" in r.stderr and "shell history" in r.stderr
    for args in (("join", "--token-fi", "/x"), ("reset", "--for"), ("status", "--js")):
        r = node.run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "unrecognized arguments" in r.stderr
    r = node.run(secret)
    assert r.returncode == 2 and "0123456789abcdef" not in r.stderr
    assert "worker" not in r.stderr  # the hidden verb is not offered
    assert "worker" not in node.run("--help").stdout


def _agent(node: Node, tmp: Path) -> subprocess.Popen[bytes]:
    log = (tmp / "agent.log").open("ab")
    env = {
        k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY")
    }
    return subprocess.Popen(
        [sys.executable, "-m", "join_agent", "--config", str(node.config), "run"],
        stdout=log, stderr=log, env=env,
    )  # fmt: skip


def _wait(cond: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_reload_that_moves_state_dir_is_refused_and_the_daemon_stays_visible(
    joined: Node, tmp_path: Path
) -> None:
    joined.write_config(kubelet={"manage": False})
    agent = _agent(joined, tmp_path)
    try:
        _wait(lambda: joined.run("status").returncode == 0, "the daemon's status")
        joined.write_config(
            kubelet={"manage": False}, paths={"state_dir": str(joined.root / "elsewhere")}
        )
        agent.send_signal(signal.SIGHUP)
        log = tmp_path / "agent.log"
        _wait(lambda: "reload_refused" in log.read_text(), "the refusal in the log")
        assert "paths.state_dir changed, which a running agent cannot apply" in log.read_text()
        assert "systemctl restart join-agent" in log.read_text()
        doc = json.loads((joined.state / "status.json").read_text())
        assert doc["agent"]["pid"] == agent.pid  # still the old state_dir's daemon
        assert not (joined.root / "elsewhere").exists()
    finally:
        agent.terminate()
        agent.wait(30)


def test_renew_asks_at_once_whatever_backoff_is_pending(
    joined: Node, tmp_path: Path, ca: CfsslCA
) -> None:
    # The CA is not where the config says: the first renewal fails, and the next try
    # would come only after a 10-minute floor.
    dead = f"http://127.0.0.1:{free_port()}"
    joined.write_config(
        kubelet={"manage": False},
        renewal={"retry_min": "10m", "retry_max": "1h"},
        signer__cfssl={"urls": [dead]},
    )
    agent = _agent(joined, tmp_path)
    try:
        agent_pid = agent.pid
        _wait((joined.state / "status.json").exists, "status.json")
        os.kill(agent_pid, signal.SIGUSR1)
        _wait(
            lambda: (
                (json.loads((joined.state / "status.json").read_text()).get("renewal") or {}).get(
                    "failures", 0
                )
                >= 1
            ),
            "a failed attempt",
        )
        # Back at the right CA; the operator asks for a renewal now.
        joined.write_config(
            kubelet={"manage": False}, renewal={"retry_min": "10m", "retry_max": "1h"}
        )
        agent.send_signal(signal.SIGHUP)
        time.sleep(1)
        r = joined.run("renew")
        assert r.returncode == 0, r.stderr
        # Not after the 10-minute backoff: the verb waits 300 s at most, then fails.
        assert "renewed by the running daemon" in r.stdout
    finally:
        agent.terminate()
        agent.wait(30)
