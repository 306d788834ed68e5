"""store: the one atomic writer, versioned pairs behind a symlink, recovery and the lock.

Real files in tmp_path; nothing of ours is replaced by a fake.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from join_agent.errors import LockedError, StoreError
from join_agent.storage import files, store
from tests.lab.certs import CA, NOW, cert_pem, ec_key, key_pem

SECOND = dt.timedelta(seconds=1)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def leaf(ca: CA, key: Any, serial_hint: int = 0) -> list[x509.Certificate]:
    cert = ca.issue(key.public_key(), not_before=NOW - dt.timedelta(minutes=serial_hint + 1))
    return [cert]


# -- atomic_write ----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0, 0o077, 0o022])
def test_atomic_write_creates_mode_0600_whatever_the_umask(
    tmp_path: Path, set_umask: Callable[[int], None], umask: int
) -> None:
    set_umask(umask)
    path = tmp_path / "secret.pem"
    store.atomic_write(path, b"data")
    assert path.read_bytes() == b"data"
    assert mode_of(path) == 0o600


def test_atomic_write_gives_exactly_the_mode_asked_for(
    tmp_path: Path, set_umask: Callable[[int], None]
) -> None:
    set_umask(0o077)
    path = tmp_path / "ca.crt"
    store.atomic_write(path, b"ca", 0o644)
    assert mode_of(path) == 0o644


def test_atomic_write_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "file"
    store.atomic_write(path, b"x")
    assert path.read_bytes() == b"x"


def test_atomic_write_replaces_by_rename(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.conf"
    path.write_bytes(b"old content")
    with path.open("rb") as old:
        old_inode = os.fstat(old.fileno()).st_ino
        store.atomic_write(path, b"new content")
        # the old file was not truncated or rewritten in place: its reader still sees it
        assert old.read() == b"old content"
    assert path.read_bytes() == b"new content"
    assert path.stat().st_ino != old_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kubelet.conf"]


def test_atomic_write_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "kubelet.conf"
    target.mkdir()
    (target / "occupant").write_bytes(b"keep me")
    with pytest.raises(StoreError) as info:
        store.atomic_write(target, b"data")
    assert str(info.value).startswith(f"cannot write {target}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kubelet.conf"]
    assert (target / "occupant").read_bytes() == b"keep me"


def test_atomic_write_keeps_the_old_file_when_it_fails(tmp_path: Path) -> None:
    """The temp file's name is taken by a directory: nothing is written, nothing is lost."""
    path = tmp_path / "status.json"
    path.write_bytes(b"old")
    blocker = tmp_path / f"{files.TMP_PREFIX}status.json.{os.getpid()}"
    blocker.mkdir()
    with pytest.raises(StoreError):
        store.atomic_write(path, b"new")
    assert path.read_bytes() == b"old"


# -- PairStore.install, versions, prune ------------------------------------------------


def test_install_writes_a_timestamped_version_and_a_relative_link(
    tmp_path: Path, ca: CA, node_key: Any
) -> None:
    pki_dir = tmp_path / "pki"
    s = store.PairStore(pki_dir, "kubelet-client")
    chain = leaf(ca, node_key)
    version = s.install(chain, key_pem(node_key), NOW)

    assert version == pki_dir / "kubelet-client-2024-06-01-12-00-00.pem"
    assert mode_of(version) == 0o600
    current = pki_dir / "kubelet-client-current.pem"
    assert current.is_symlink()
    assert os.readlink(current) == "kubelet-client-2024-06-01-12-00-00.pem"
    assert version.read_bytes() == cert_pem(chain[0]) + key_pem(node_key)

    pair = s.load_current()
    assert pair is not None
    assert pair.path == current
    assert pair.chain == tuple(chain)
    assert pair.key_pem == key_pem(node_key)


def test_install_names_the_version_in_utc(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    local = NOW.astimezone(dt.timezone(dt.timedelta(hours=-7)))
    version = s.install(leaf(ca, node_key), key_pem(node_key), local)
    assert version.name == "kubelet-client-2024-06-01-12-00-00.pem"


def test_second_install_in_the_same_second_gets_another_name(
    tmp_path: Path, ca: CA, node_key: Any
) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    first = s.install(leaf(ca, node_key, 1), key_pem(node_key), NOW)
    second = s.install(leaf(ca, node_key, 2), key_pem(node_key), NOW)
    assert first != second
    assert re.fullmatch(r"kubelet-client-2024-06-01-12-00-00-\d+\.pem", second.name)
    assert os.readlink(s.current) == second.name
    assert first.exists()


def test_load_current_is_none_before_the_first_install(tmp_path: Path) -> None:
    assert store.PairStore(tmp_path / "absent", "kubelet-client").load_current() is None


def test_prune_keeps_current_and_three_previous(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    installed = [
        s.install(leaf(ca, node_key, i), key_pem(node_key), NOW + i * SECOND) for i in range(6)
    ]
    assert s.versions() == installed[2:]
    assert os.readlink(s.current) == installed[-1].name


def test_prune_never_removes_what_current_points_at(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    installed = [
        s.install(leaf(ca, node_key, i), key_pem(node_key), NOW + i * SECOND) for i in range(5)
    ]
    assert s.versions() == installed[1:]
    s.switch(installed[1])  # a rollback to the oldest kept version
    s.prune(keep=1)
    assert s.versions() == [installed[1], installed[4]]


def test_other_prefixes_are_not_touched(tmp_path: Path, ca: CA, node_key: Any) -> None:
    server = store.PairStore(tmp_path, "kubelet-server")
    server_version = server.install(leaf(ca, node_key), key_pem(node_key), NOW)
    client = store.PairStore(tmp_path, "kubelet-client")
    for i in range(6):
        client.install(leaf(ca, node_key, i), key_pem(node_key), NOW + i * SECOND)
    assert server_version.exists()
    assert server.versions() == [server_version]


def test_prune_orders_same_second_versions_by_install(
    tmp_path: Path, ca: CA, node_key: Any
) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    installed = [s.install(leaf(ca, node_key, i), key_pem(node_key), NOW) for i in range(5)]
    assert s.versions() == installed[1:]


# -- recover ---------------------------------------------------------------------------


def pending_link(s: store.PairStore) -> Path:
    return s.directory / f"{files.TMP_PREFIX}{s.prefix}-current.pem"


def interrupted_switch(
    tmp_path: Path, ca: CA, key: Any, *, prefix: str = "kubelet-client", truncate: bool = False
) -> tuple[store.PairStore, Path, Path]:
    """A store whose second install stopped after writing the version and the temp link."""
    s = store.PairStore(tmp_path, prefix)
    first = s.install(leaf(ca, key, 1), key_pem(key), NOW)
    data = store.pair_pem(leaf(ca, key, 2), key_pem(key))
    second = tmp_path / f"{prefix}-2024-06-01-12-00-01.pem"
    store.atomic_write(second, data[: len(data) // 2] if truncate else data)
    os.symlink(second.name, pending_link(s))
    return s, first, second


def test_recover_finishes_a_switch_to_a_valid_pair(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s, _first, second = interrupted_switch(tmp_path, ca, node_key)
    done = s.recover()
    assert os.readlink(s.current) == second.name
    assert not pending_link(s).is_symlink()
    assert len(done) == 1
    assert "finished switching" in done[0]
    pair = s.load_current()
    assert pair is not None
    assert pair.chain == store.parse_pair(second, second.read_bytes()).chain


def test_recover_drops_a_switch_to_a_truncated_file(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s, first, _second = interrupted_switch(tmp_path, ca, node_key, truncate=True)
    done = s.recover()
    assert os.readlink(s.current) == first.name
    assert not pending_link(s).is_symlink()
    assert any("dropped an unfinished switch" in d for d in done)


def test_recover_drops_a_switch_to_a_missing_file(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s, first, second = interrupted_switch(tmp_path, ca, node_key)
    second.unlink()
    s.recover()
    assert os.readlink(s.current) == first.name
    assert not pending_link(s).is_symlink()


def test_recover_drops_a_switch_to_a_pair_that_does_not_match(
    tmp_path: Path, ca: CA, node_key: Any
) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    first = s.install(leaf(ca, node_key), key_pem(node_key), NOW)
    bad = tmp_path / "kubelet-client-2024-06-01-12-00-01.pem"
    store.atomic_write(bad, store.pair_pem(leaf(ca, node_key), key_pem(ec_key())))
    os.symlink(bad.name, pending_link(s))
    s.recover()
    assert os.readlink(s.current) == first.name


def test_recover_removes_stray_temp_files(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    first = s.install(leaf(ca, node_key), key_pem(node_key), NOW)
    stray = tmp_path / f"{files.TMP_PREFIX}kubelet-client-2024-06-01-12-00-01.pem.4242"
    stray.write_bytes(b"-----BEGIN CERT")
    done = s.recover()
    assert not stray.exists()
    assert done == [f"removed the partial file {stray.name}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.name, "kubelet-client-current.pem"]
    )


def test_recover_on_a_clean_store_does_nothing(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    s.install(leaf(ca, node_key), key_pem(node_key), NOW)
    before = sorted(os.listdir(tmp_path))
    assert s.recover() == []
    assert sorted(os.listdir(tmp_path)) == before


def test_recover_leaves_another_prefix_pending_switch_alone(
    tmp_path: Path, ca: CA, node_key: Any
) -> None:
    server, _first, second = interrupted_switch(tmp_path, ca, node_key, prefix="kubelet-server")
    client = store.PairStore(tmp_path, "kubelet-client")
    client.install(leaf(ca, node_key), key_pem(node_key), NOW)
    client.recover()
    server.recover()
    assert os.readlink(server.current) == second.name


# -- parse_pair ------------------------------------------------------------------------


def test_parse_pair_splits_chain_and_key(tmp_path: Path, ca: CA, node_key: Any) -> None:
    chain = [*leaf(ca, node_key), ca.cert]
    pair = store.parse_pair(tmp_path / "p.pem", store.pair_pem(chain, key_pem(node_key)))
    assert pair.chain == tuple(chain)
    assert pair.certificate == chain[0]
    assert pair.key_pem == key_pem(node_key)


def test_parse_pair_rejects_a_key_that_does_not_match(
    tmp_path: Path, ca: CA, node_key: Any
) -> None:
    path = tmp_path / "p.pem"
    data = store.pair_pem(leaf(ca, node_key), key_pem(ec_key()))
    with pytest.raises(StoreError, match=r"holds a key that does not match its certificate"):
        store.parse_pair(path, data)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.0])
def test_parse_pair_rejects_a_truncated_file(
    tmp_path: Path, ca: CA, node_key: Any, fraction: float
) -> None:
    data = store.pair_pem(leaf(ca, node_key), key_pem(node_key))
    with pytest.raises(StoreError, match=str(tmp_path / "p.pem")):
        store.parse_pair(tmp_path / "p.pem", data[: int(len(data) * fraction)])


def test_parse_pair_rejects_a_key_without_certificate(tmp_path: Path, node_key: Any) -> None:
    with pytest.raises(StoreError, match="holds no certificate"):
        store.parse_pair(tmp_path / "p.pem", key_pem(node_key))


def test_parse_pair_with_the_key_before_the_certificate(
    tmp_path: Path, ca: CA, node_key: Any
) -> None:
    data = key_pem(node_key) + cert_pem(leaf(ca, node_key)[0])
    try:
        pair = store.parse_pair(tmp_path / "p.pem", data)
    except StoreError:
        return
    assert pair.key_pem == key_pem(node_key)


def test_load_current_reports_a_mismatched_pair(tmp_path: Path, ca: CA, node_key: Any) -> None:
    s = store.PairStore(tmp_path, "kubelet-client")
    s.install(leaf(ca, node_key), key_pem(ec_key()), NOW)
    with pytest.raises(StoreError, match="does not match"):
        s.load_current()


# -- state_lock ------------------------------------------------------------------------


def test_state_lock_creates_a_private_directory_and_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with store.state_lock(state, wait=0):
        assert mode_of(state) == 0o700
        assert mode_of(state / "lock") == 0o600


def test_a_second_holder_in_this_process_is_refused(tmp_path: Path) -> None:
    """flock belongs to the open file description: a second open() is a second holder."""
    with store.state_lock(tmp_path, wait=0):
        with pytest.raises(LockedError) as info, store.state_lock(tmp_path, wait=0.3):
            pass
        assert str(tmp_path / "lock") in str(info.value)
        assert "still after 0.3s" in str(info.value)
    with store.state_lock(tmp_path, wait=0):  # released on exit
        pass


CHILD = """
import sys
from pathlib import Path
from join_agent.storage import store
from join_agent.errors import LockedError
try:
    with store.state_lock(Path(sys.argv[1]), wait=0):
        pass
except LockedError:
    sys.exit(3)
"""


def test_a_second_holder_in_another_process_is_refused(tmp_path: Path) -> None:
    def child() -> int:
        return subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], check=False).returncode

    with store.state_lock(tmp_path, wait=0):
        assert child() == 3
    assert child() == 0


def test_a_waiter_that_gives_up_says_who_holds_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from join_agent.storage import files\n"
            "with files.state_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(30)\n",
            str(tmp_path),
            "join",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as info, store.state_lock(tmp_path, wait=0.3):
            pass
        assert f"(pid {holder.pid})" in str(info.value)
        assert str(info.value).startswith(f"join-agent {tmp_path} join (pid {holder.pid}) holds")
    finally:
        holder.kill()
        holder.wait()


def test_sweep_removes_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = tmp_path / f"{files.TMP_PREFIX}kubelet.conf.{dead.stdout.strip()}"
    mine = tmp_path / f"{files.TMP_PREFIX}status.json.{os.getpid()}"
    other = tmp_path / "kubelet.conf"
    for p in (gone, mine, other):
        p.write_text("x")
    assert files.sweep(tmp_path) == [gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])
