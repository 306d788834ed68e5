"""Versioned PEMs behind a symlink, switched crash-safely (writes go through ``files``).

Layout as the kubelet's own certificate store: ``<prefix>-<timestamp>.pem`` holds the
certificate chain and the key together, and ``<prefix>-current.pem`` is a symlink that is
switched by renaming a temporary symlink over it, so a reader sees the old pair or the
new one, never a key that does not match its certificate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from join_agent.errors import KeyMismatch, StoreError
from join_agent.pki import compat
from join_agent.storage import faults, guard
from join_agent.storage.files import TMP_PREFIX as _TMP_PREFIX
from join_agent.storage.files import atomic_write, ensure_dir, fsync_dir, state_lock, strerror

__all__ = ["Pair", "PairStore", "atomic_write", "ensure_dir", "parse_pair", "state_lock"]

KEEP_PREVIOUS = 3
_KEY_BLOCK = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)


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
    return compat.pem(chain) + key_pem


def parse_pair(path: Path, data: bytes) -> Pair:
    """Split a combined PEM; raise StoreError unless the key matches the first cert."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        chain = compat.load_pem_certificates(data)
        key = serialization.load_pem_private_key(data, password=None)
        if not chain:
            raise StoreError(f"{path} holds no certificate")
        ours = key.public_key().public_bytes(serialization.Encoding.DER, spki)
        theirs = chain[0].public_key().public_bytes(serialization.Encoding.DER, spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise StoreError(f"{path} does not hold a readable certificate and key") from None
    key_pem = _KEY_BLOCK.search(data)
    if key_pem is None:
        raise StoreError(f"{path} holds no private key")
    if ours != theirs:
        raise KeyMismatch(f"{path} holds a key that does not match its certificate")
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
            data = guard.read(self.current, "the credentials", cap=guard.PEM_CAP)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {self.current}: {strerror(e)}") from None
        return parse_pair(self.current, data)

    def install(self, chain: list[x509.Certificate], key_pem: bytes, now: dt.datetime) -> Path:
        """Write a new version and switch ``current`` to it; returns the version's path."""
        version = self.write_version(chain, key_pem, now)
        self.switch(version)
        self.prune()
        return version

    def write_version(
        self, chain: list[x509.Certificate], key_pem: bytes, now: dt.datetime
    ) -> Path:
        """Write a new versioned file without switching to it (callers stage, then switch)."""
        ensure_dir(self.directory)
        version = self._new_version_path(now)
        atomic_write(version, pair_pem(chain, key_pem), 0o600)
        return version

    def switch(self, version: Path) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                self._pending.unlink()
            os.symlink(version.name, self._pending)
            faults.point(f"before-switch:{self.current.name}")
            os.replace(self._pending, self.current)
            faults.point(f"after-switch:{self.current.name}")
            fsync_dir(self.directory)
        except OSError as e:
            with contextlib.suppress(OSError):
                self._pending.unlink()
            raise StoreError(f"cannot switch {self.current}: {strerror(e)}") from None

    def recover(self) -> list[str]:
        """Repair what an interrupted write left; returns what it did, for the log.

        A pending link whose target is a complete, matching pair finishes its switch
        (the target was fsynced before the link was made); anything else is removed.
        """
        done: list[str] = []
        if self._pending.is_symlink():
            target = self.directory / os.readlink(self._pending)
            try:
                parse_pair(target, guard.read(target, "the credentials", cap=guard.PEM_CAP))
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
            # Pruning is housekeeping: the new credentials are in place already, so a file
            # that cannot be removed now is left for the next rotation.
            with contextlib.suppress(OSError):
                p.unlink()

    def _new_version_path(self, now: dt.datetime) -> Path:
        stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")
        path = self.directory / f"{self.prefix}-{stamp}.pem"
        n = 1
        while path.exists() or path.is_symlink():
            path = self.directory / f"{self.prefix}-{stamp}-{n}.pem"
            n += 1
        return path
