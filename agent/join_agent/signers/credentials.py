"""Secrets on disk: systemd credentials first, then the configured file; never logged."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from join_agent.errors import ConfigError
from join_agent.signers.kubernetes.bootstrap_token import BootstrapToken, parse_token
from join_agent.storage import guard

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
CFSSL_AUTH_KEY = "cfssl-auth-key"
BOOTSTRAP_TOKEN = "bootstrap-token"  # noqa: S105 - a credential name, not a secret
_MAX_SECRET = 4096
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


@dataclass(frozen=True)
class Secret:
    """A secret value; its repr never shows the value, so it cannot leak through a log."""

    value: str
    origin: Path

    def __repr__(self) -> str:
        return f"Secret(origin={str(self.origin)!r})"

    __str__ = __repr__


def secret_path(credential: str, configured: Path, environ: Mapping[str, str]) -> Path:
    """Where a secret comes from: ``$CREDENTIALS_DIRECTORY/<credential>`` wins when present."""
    directory = environ.get(CREDENTIALS_ENV)
    if directory:
        candidate = Path(directory) / credential
        if candidate.exists():
            return candidate
    return configured


def read_secret(credential: str, configured: Path, key: str, environ: Mapping[str, str]) -> Secret:
    """Read a one-line secret, refusing a file that group or others can read."""
    path = secret_path(credential, configured, environ)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"{key} {path} does not exist: write the secret there (mode 0600) or provide "
            f"the systemd credential {credential!r}"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot open {key} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{key} {path} is not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise ConfigError(
                f"{key} {path} is owned by uid {st.st_uid}, neither root nor this process: "
                f"run `chown root {path}`"
            )
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{key} {path} is {guard.access(st.st_mode)} "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): run `chmod 600 {path}`"
            )
        data = os.read(fd, _MAX_SECRET + 1)
    finally:
        os.close(fd)
    # The directories on the way must be root's too: another user who can write one can
    # swap the file for their own between two reads.
    problem = guard.problem(path, key)
    if problem is not None:
        raise ConfigError(problem)
    if len(data) > _MAX_SECRET:
        raise ConfigError(f"{key} {path} is too large to be a secret")
    try:
        value = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key} {path} does not hold ASCII text") from None
    if not value:
        raise ConfigError(f"{key} {path} is empty")
    return Secret(value=value, origin=path)


def cfssl_auth_key(configured: Path, environ: Mapping[str, str]) -> bytes:
    """The CFSSL auth key as bytes, from its hex form as in CFSSL's ``auth_keys``."""
    secret = read_secret(CFSSL_AUTH_KEY, configured, "signer.cfssl.auth_key_file", environ)
    key = bytes.fromhex(secret.value) if _HEX.match(secret.value) else b""
    if not key:
        raise ConfigError(
            f"signer.cfssl.auth_key_file {secret.origin} does not hold a hex key "
            "(the \"key\" of the profile's auth_key in the CA's config)"
        )
    return key


def bootstrap_token(configured: Path, environ: Mapping[str, str]) -> BootstrapToken:
    """The bootstrap token, from the systemd credential or ``bootstrap_token_file``."""
    secret = read_secret(
        BOOTSTRAP_TOKEN, configured, "signer.kubernetes.bootstrap_token_file", environ
    )
    return parse_token(secret.value, f"signer.kubernetes.bootstrap_token_file {secret.origin}")


def bootstrap_token_from(path: str, stdin: IO[str]) -> BootstrapToken:
    """``--token-file PATH`` or ``--token-file -`` (stdin): never from argv, where ps shows it."""
    if path == "-":
        data = stdin.read(_MAX_SECRET + 1)
        if len(data) > _MAX_SECRET:
            raise ConfigError("the bootstrap token on standard input is too long")
        return parse_token(data, "standard input (--token-file -)")
    secret = read_secret(BOOTSTRAP_TOKEN, Path(path), "--token-file", {})
    return parse_token(secret.value, f"--token-file {path}")
