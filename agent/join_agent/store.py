"""Crash-safe files: the one atomic writer, versioned PEMs behind a symlink, the lock.

Layout as the kubelet's own certificate store: ``<prefix>-<timestamp>.pem`` holds the
certificate chain and the key together, and ``<prefix>-current.pem`` is a symlink that is
switched by renaming a temporary symlink over it, so a reader sees the old pair or the
new one, never a key that does not match its certificate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import compat
from .errors import LockedError, StoreError

KEEP_PREVIOUS = 3
_KEY_BLOCK = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)
_TMP_PREFIX = ".join-agent-tmp-"


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory created with the
    final mode, fsync, rename, fsync the directory. On failure the old file stays and
    no temp file is left behind.
    """
    directory = path.parent
    ensure_dir(directory)
    tmp = directory / f"{_TMP_PREFIX}{path.name}.{os.getpid()}"
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode
        )
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(directory)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"cannot write {path}: {_strerror(e)}") from None


def ensure_dir(directory: Path, mode: int = 0o755) -> None:
    try:
        directory.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create directory {directory}: {_strerror(e)}") from None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Pair:
    """A certificate chain and its key as read from one versioned PEM file."""

    path: Path
    chain: tuple[x509.Certificate, ...]
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def pair_pem(chain: list[x509.Certificate], key_pem: bytes) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain) + key_pem


def parse_pair(path: Path, data: bytes) -> Pair:
    """Split a combined PEM; raise StoreError unless the key matches the first cert."""
    try:
        chain = compat.load_pem_certificates(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise StoreError(f"{path} does not hold a readable certificate and key") from None
    if not chain:
        raise StoreError(f"{path} holds no certificate")
    key_pem = _KEY_BLOCK.search(data)
    if key_pem is None:
        raise StoreError(f"{path} holds no private key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    ours = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    theirs = chain[0].public_key().public_bytes(serialization.Encoding.DER, spki)
    if ours != theirs:
        raise StoreError(f"{path} holds a key that does not match its certificate")
    return Pair(path=path, chain=tuple(chain), key_pem=key_pem.group(0) + b"\n")


class PairStore:
    """Versioned ``<prefix>-<timestamp>.pem`` files and the ``<prefix>-current.pem`` link."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.current = directory / f"{prefix}-current.pem"
        self._pending = directory / f"{_TMP_PREFIX}{prefix}-current.pem"
        self._versioned = re.compile(
            re.escape(prefix) + r"-(\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)(?:-(\d+))?\.pem$"
        )

    def load_current(self) -> Pair | None:
        """The pair ``current`` points at, None when there is none yet."""
        try:
            data = self.current.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {self.current}: {_strerror(e)}") from None
        return parse_pair(self.current, data)

    def install(self, chain: list[x509.Certificate], key_pem: bytes, now: dt.datetime) -> Path:
        """Write a new version and switch ``current`` to it; returns the version's path."""
        ensure_dir(self.directory)
        version = self._new_version_path(now)
        atomic_write(version, pair_pem(chain, key_pem), 0o600)
        self.switch(version)
        self.prune()
        return version

    def switch(self, version: Path) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                self._pending.unlink()
            os.symlink(version.name, self._pending)
            os.replace(self._pending, self.current)
            fsync_dir(self.directory)
        except OSError as e:
            with contextlib.suppress(OSError):
                self._pending.unlink()
            raise StoreError(f"cannot switch {self.current}: {_strerror(e)}") from None

    def recover(self) -> list[str]:
        """Repair what an interrupted write left; returns what it did, for the log.

        A pending link whose target is a complete, matching pair finishes its switch
        (the target was fsynced before the link was made); anything else is removed.
        """
        done: list[str] = []
        if self._pending.is_symlink():
            target = self.directory / os.readlink(self._pending)
            try:
                parse_pair(target, target.read_bytes())
                os.replace(self._pending, self.current)
                done.append(f"finished switching {self.current} to {target.name}")
            except (OSError, StoreError):
                self._pending.unlink()
                done.append(f"dropped an unfinished switch to {target.name}")
            fsync_dir(self.directory)
        # Only this store's temp files: another store (kubelet-server) may share the folder.
        for stray in self.directory.glob(f"{_TMP_PREFIX}{self.prefix}-*"):
            if stray != self._pending:
                stray.unlink()
                done.append(f"removed the partial file {stray.name}")
        return done

    def versions(self) -> list[Path]:
        """Versioned files, oldest first."""
        try:
            found = [(self._versioned.match(p.name), p) for p in self.directory.iterdir()]
        except FileNotFoundError:
            return []
        # Same-second versions carry a counter: "-2" is older than "-10", and none is 0.
        ordered = sorted((m.group(1), int(m.group(2) or 0), p) for m, p in found if m)
        return [p for _, _, p in ordered]

    def prune(self, keep: int = KEEP_PREVIOUS) -> None:
        """Keep the current version and ``keep`` earlier ones, for rollback."""
        current = self.current.resolve() if self.current.exists() else None
        older = [p for p in self.versions() if p.resolve() != current]
        for p in older[: max(0, len(older) - keep)]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def _new_version_path(self, now: dt.datetime) -> Path:
        stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")
        path = self.directory / f"{self.prefix}-{stamp}.pem"
        n = 1
        while path.exists() or path.is_symlink():
            path = self.directory / f"{self.prefix}-{stamp}-{n}.pem"
            n += 1
        return path


@contextlib.contextmanager
def state_lock(state_dir: Path, wait: float = 60.0) -> Iterator[None]:
    """Hold ``<state_dir>/lock`` (flock) so ``join`` cannot race the service."""
    ensure_dir(state_dir, 0o700)
    path = state_dir / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StoreError(f"cannot open the lock {path}: {_strerror(e)}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"another join-agent holds {path} (still after {wait:g}s): wait for "
                        "it to finish, or stop the join-agent service first"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _strerror(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e)
