"""The one writer for files that matter, and the state lock. Standard library only.

Every write: a temp file in the same directory created with the final mode, fsync,
rename, fsync the directory. On failure the old file stays and no temp file is left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from join_agent.errors import LockedError, StoreError
from join_agent.host import proc
from join_agent.storage import faults, guard, names

TMP_PREFIX, LOCK_FILE = names.TMP_PREFIX, names.LOCK_FILE


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (stage, then commit)."""
    commit(stage(path, data, mode), path)


def stage(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """Write ``data`` to a fresh temp file beside ``path`` (final mode, fsynced) and return
    it; ``commit`` renames it into place. Nothing visible changes until then."""
    directory = path.parent
    ensure_dir(directory)
    tmp = directory / f"{TMP_PREFIX}{path.name}.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover of a killed process with our pid
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(tmp, flags, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
            view = memoryview(data)
            half = len(view) // 2
            while len(view) > half:
                view = view[os.write(fd, view[: len(view) - half]) :]
            faults.point(f"stage-half:{path.name}")
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        discard(tmp)
        raise StoreError(f"cannot write {path}: {strerror(e)}") from None
    return tmp


def commit(tmp: Path, path: Path) -> None:
    """Rename a staged file over ``path`` and make the rename durable."""
    try:
        faults.point(f"before-rename:{path.name}")
        os.replace(tmp, path)
        faults.point(f"after-rename:{path.name}")
        fsync_dir(path.parent)
    except OSError as e:
        discard(tmp)
        raise StoreError(f"cannot write {path}: {strerror(e)}") from None


def unchanged(path: Path, data: bytes, mode: int) -> bool:
    """True when ``path`` is a regular file holding exactly ``data``; a widened mode is put
    back on the way. Never through a symlink: a link there is replaced, not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return False
        if os.read(fd, len(data) + 1) != data:
            return False
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def sweep(directory: Path) -> list[Path]:
    """Remove temp files that a killed writer left in ``directory``; returns them.

    A temp file's name ends in its writer's pid: one whose writer still runs is left alone
    (the daemon writes status.json without the lock).
    """
    removed = []
    try:
        leftovers = [p for p in directory.iterdir() if p.name.startswith(TMP_PREFIX)]
    except OSError:
        return []
    for p in leftovers:
        pid = p.name.rsplit(".", 1)[-1]
        if pid.isdigit() and proc.running(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if not p.is_symlink():  # pending symlink switches are PairStore.recover()'s
                p.unlink()
                removed.append(p)
    return removed


def discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def ensure_dir(directory: Path, mode: int = 0o755) -> None:
    """The directory, created with exactly ``mode`` if missing; an existing one must pass
    guard's rule (owned by root, writable by nobody else, on the whole path)."""
    try:
        guard.ensure_dir(directory, mode)
    except OSError as e:
        raise StoreError(f"cannot create directory {directory}: {strerror(e)}") from None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def state_lock(state_dir: Path, wait: float = 60.0) -> Iterator[None]:
    """Hold ``<state_dir>/lock`` (flock) so ``join`` cannot race the service.

    The holder writes its pid and command line into the file, so a process that waits in
    vain can say who holds it.
    """
    ensure_dir(state_dir, 0o700)
    path = state_dir / LOCK_FILE
    try:
        # Never through a link: the holder's line is written into whatever this opens.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise guard.UnsafePath(
                f"the lock {path} is a symlink: remove it (`rm {path}`)"
            ) from None
        raise StoreError(f"cannot open the lock {path}: {strerror(e)}") from None
    try:
        wrong = guard.judge(os.fstat(fd), uids=guard.trusted_uids(), on_the_way=False)
        if not stat.S_ISREG(os.fstat(fd).st_mode) or wrong is not None:
            what = wrong[0] if wrong else "is not a regular file"
            raise guard.UnsafePath(f"the lock {path} {what}: remove it (`rm {path}`)")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"{_holder(path)} holds {path} (still after {wait:g}s): wait for it "
                        "to finish, or stop the join-agent service first"
                    ) from None
                time.sleep(0.2)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {' '.join(sys.argv[1:])[:200]}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        text = guard.read_text(path, "the lock", cap=4096)
    except (OSError, StoreError):
        text = ""
    pid, _, args = text.strip().partition(" ")
    if not pid.isdigit():
        return "another join-agent"
    return f"join-agent {args} (pid {pid})" if args else f"another join-agent (pid {pid})"


def strerror(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e)
