"""guard's rule (what only root could have put there), the children's environment, and
the sentences they speak; against real files with real owners and modes."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from join_agent.host import children
from join_agent.storage import guard

NOBODY = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
as_root = pytest.mark.skipif(NOBODY is None, reason="chown to another user needs root")


def stat_of(mode: int, uid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "on_the_way", "wrong"),
    [
        (stat.S_IFDIR | 0o755, False, None),
        (stat.S_IFDIR | 0o775, False, "is writable by group (mode 0775)"),
        (stat.S_IFDIR | 0o777, True, "is writable by group and others (mode 0777)"),
        (stat.S_IFDIR | 0o1777, True, None),  # /tmp: others add, cannot move root's
        (stat.S_IFDIR | 0o1777, False, "is writable by group and others (mode 1777)"),
        (stat.S_IFREG | 0o1777, True, "is writable by group and others (mode 1777)"),
        (stat.S_IFREG | 0o644, False, None),
        (stat.S_IFREG | 0o602, False, "is writable by others (mode 0602)"),
        (stat.S_IFLNK | 0o777, False, None),  # a link's own mode means nothing
    ],
)
def test_judge_one_component(mode: int, on_the_way: bool, wrong: str | None) -> None:
    found = guard.judge(stat_of(mode), uids={0}, on_the_way=on_the_way)
    assert (found[0] if found else None) == wrong
    if found:
        assert found[1] == "chmod go-w"


def test_judge_an_owner_who_is_not_root() -> None:
    found = guard.judge(stat_of(stat.S_IFREG | 0o600, uid=65534), uids={0}, on_the_way=False)
    assert found is not None
    assert found[0].startswith("is owned by uid 65534") and found[0].endswith(", not root")
    assert found[1] == "chown root"
    # A link is judged by its owner too: only its owner can have pointed it anywhere.
    assert guard.judge(stat_of(stat.S_IFLNK | 0o777, uid=65534), uids={0}, on_the_way=False)


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        (0o600, ""),
        (0o640, "readable by group"),
        (0o622, "writable by group and others"),
        (0o666, "readable and writable by group and others"),
        (0o674, "readable, writable and executable by group, readable by others"),
    ],
)
def test_access_in_words(mode: int, said: str) -> None:
    assert guard.access(mode) == said


@as_root
def test_a_path_is_judged_from_the_root_down(tmp_path: Path) -> None:
    assert NOBODY is not None
    top = tmp_path / "top"
    inner = top / "inner"
    inner.mkdir(parents=True)
    f = inner / "file"
    f.write_text("x")
    assert guard.problem(f, "the file") is None
    os.chown(top, NOBODY.pw_uid, NOBODY.pw_gid)
    said = guard.problem(f, "the file")
    assert said == (
        f"the file {top} (on the path to {f}) is owned by uid {NOBODY.pw_uid} (nobody), "
        f"not root: run `chown root {top}`"
    )
    os.chown(top, 0, 0)
    top.chmod(0o1777)
    assert guard.problem(f, "the file") is None  # sticky on the way
    assert guard.problem(top, "the directory", "dir") is not None  # but not at the end


@as_root
def test_a_root_made_link_is_followed_only_where_it_leads_passes(tmp_path: Path) -> None:
    assert NOBODY is not None
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    target = theirs / "config.toml"
    target.write_text("x")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert guard.problem(link, "config file") is None
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    said = guard.problem(link, "config file")
    assert said is not None and f"config file {theirs} (on the path to {target})" in said
    # A link another user made is refused for that alone.
    os.chown(theirs, 0, 0)
    os.chown(link, NOBODY.pw_uid, NOBODY.pw_gid, follow_symlinks=False)
    assert "(nobody), not root" in (guard.problem(link, "config file") or "")


def test_read_refuses_what_is_not_a_small_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(guard.UnsafePath, match="is a FIFO, not a regular file"):
        guard.read(fifo, "the file", cap=10)  # and it did not block
    with pytest.raises(guard.UnsafePath, match="is a character device"):
        guard.read(Path("/dev/zero"), "the file", cap=10, trusted=False)
    with pytest.raises(guard.UnsafePath, match="is a directory"):
        guard.read(tmp_path, "the file", cap=10)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    with pytest.raises(guard.UnsafePath, match="larger than the 10 bytes such a file may have"):
        guard.read(big, "the file", cap=10)
    assert guard.read(big, "the file", cap=11) == b"x" * 11
    with pytest.raises(FileNotFoundError):
        guard.read(tmp_path / "missing", "the file", cap=10)
    # /proc files say size 0: the cap still holds while reading.
    assert guard.read(Path("/proc/self/stat"), "the file", cap=4096, trusted=False)
    with pytest.raises(guard.UnsafePath, match="larger than"):
        guard.read(Path("/proc/self/stat"), "the file", cap=4, trusted=False)


@as_root
def test_read_refuses_a_trusted_file_someone_else_owns(tmp_path: Path) -> None:
    assert NOBODY is not None
    f = tmp_path / "pidfile"
    f.write_text("1\n")
    os.chown(f, NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(guard.UnsafePath, match=r"\(nobody\), not root: run `chown root"):
        guard.read(f, "the pidfile", cap=10)
    assert guard.read(f, "the pidfile", cap=10, trusted=False) == b"1\n"


def test_ensure_dir_sets_exact_modes_under_any_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        guard.ensure_dir(tmp_path / "a" / "b" / "state", 0o700)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "a" / "b" / "state").stat().st_mode) == 0o700
    (tmp_path / "a").chmod(0o777)
    with pytest.raises(guard.UnsafePath, match="is writable by group and others"):
        guard.ensure_dir(tmp_path / "a" / "b" / "state", 0o700)
    with pytest.raises(guard.UnsafePath, match="is writable by group and others"):
        guard.ensure_dir(tmp_path / "a" / "new", 0o700)  # nothing made under it either
    assert not (tmp_path / "a" / "new").exists()


def test_command_problems(tmp_path: Path) -> None:
    assert guard.command_problems(["kubelet"], "kubelet.command") == [
        "kubelet.command starts with 'kubelet', not an absolute path: PATH would choose it"
    ]
    script = tmp_path / "run.py"
    script.write_text("print()")
    conf = tmp_path / "conf.yaml"
    conf.write_text("{}")
    assert guard.command_problems(["/bin/sh", str(script), f"--config={conf}"], "x") == []
    script.chmod(0o666)
    conf.chmod(0o646)
    found = guard.command_problems(["/bin/sh", str(script), f"--config={conf}"], "x")
    assert [p.split(" is ")[0] for p in found] == [f"x argument {script}", f"x argument {conf}"]


@as_root
def test_safe_path_keeps_only_directories_root_alone_can_write(tmp_path: Path) -> None:
    assert NOBODY is not None
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    ours = tmp_path / "ours"
    ours.mkdir()
    path = f"{theirs}:.:bin:{open_dir}:{ours}:/usr/bin:{tmp_path / 'missing'}:{ours}"
    assert children.safe_path(path) == f"{ours}:/usr/bin"
    assert children.safe_path(f"{theirs}:.") == children.DEFAULT_PATH


def test_children_environments() -> None:
    ours = {
        "PATH": "/usr/bin:.",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "HOME": "/root",
        "PYTHONPATH": "/tmp",
        "PYTHONSTARTUP": "/tmp/x",
        "LD_PRELOAD": "/tmp/x.so",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "1",
        "LISTEN_FDS": "1",
        "CREDENTIALS_DIRECTORY": "/run/credentials/join-agent.service",
        "JOIN_AGENT_TEST_FAULT": "x",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    assert children.worker_env(ours) == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "CREDENTIALS_DIRECTORY": "/run/credentials/join-agent.service",
        "JOIN_AGENT_TEST_FAULT": "x",
    }
    assert children.kubelet_env(ours) == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "HOME": "/root",
        "JOIN_AGENT_TEST_FAULT": "x",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    argv = children.worker_argv(Path("/etc/join-agent/config.toml"), "enroll")
    assert argv[1:3] == ["-I", "-m"] and argv[0].startswith("/")
