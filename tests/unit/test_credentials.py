"""Secret files: systemd credentials first, strict modes, and values that never leak."""

from __future__ import annotations

from pathlib import Path

import pytest

from join_agent.errors import ConfigError
from join_agent.signers import credentials
from join_agent.signers.credentials import Secret, cfssl_auth_key, read_secret

KEY = "signer.cfssl.auth_key_file"
SECRET = "0123456789abcdef0123456789abcdef"


def write_secret(path: Path, text: str | bytes = SECRET, mode: int = 0o600) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(data)
    path.chmod(mode)
    return path


def refusal(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        read_secret(credentials.CFSSL_AUTH_KEY, path, KEY, environ or {})
    message = str(info.value)
    assert SECRET not in message
    assert "\n" not in message
    return message


def test_reads_a_private_file_and_strips_the_newline(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "auth-key", SECRET + "\n")
    secret = read_secret(credentials.CFSSL_AUTH_KEY, path, KEY, {})
    assert secret.value == SECRET
    assert secret.origin == path


def test_owner_read_only_is_fine(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "auth-key", mode=0o400)
    assert read_secret(credentials.CFSSL_AUTH_KEY, path, KEY, {}).value == SECRET


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        (0o640, "readable by group"),
        (0o604, "readable by others"),
        (0o644, "readable by group and others"),
        (0o620, "writable by group"),
        (0o602, "writable by others"),
        (0o622, "writable by group and others"),
        (0o610, "executable by group"),
        (0o664, "readable and writable by group, readable by others"),
    ],
)
def test_refuses_a_file_group_or_others_can_use(tmp_path: Path, mode: int, said: str) -> None:
    path = write_secret(tmp_path / "auth-key", mode=mode)
    message = refusal(path)
    assert f"{KEY} {path} is {said} (mode" in message
    assert f"{mode:04o}" in message
    assert f"chmod 600 {path}" in message


def test_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "auth-key"
    directory.mkdir(mode=0o700)
    assert "is not a regular file" in refusal(directory)


def test_refuses_a_symlink_even_to_a_private_file(tmp_path: Path) -> None:
    target = write_secret(tmp_path / "real-key")
    link = tmp_path / "auth-key"
    link.symlink_to(target)
    message = refusal(link)
    assert message.startswith(f"cannot open {KEY} {link}")


@pytest.mark.parametrize("content", ["", "\n", "  \n\t\n"])
def test_refuses_an_empty_file(tmp_path: Path, content: str) -> None:
    path = write_secret(tmp_path / "auth-key", content)
    assert refusal(path) == f"{KEY} {path} is empty"


def test_refuses_an_oversized_file(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "auth-key", SECRET * 200)
    assert "is too large" in refusal(path)


def test_accepts_a_secret_of_exactly_the_limit(tmp_path: Path) -> None:
    text = "a" * 4096
    path = write_secret(tmp_path / "auth-key", text)
    assert read_secret(credentials.CFSSL_AUTH_KEY, path, KEY, {}).value == text


def test_refuses_non_ascii(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "auth-key", SECRET.encode() + b"\xff")
    assert "does not hold ASCII text" in refusal(path)


def test_missing_file_names_the_key_and_the_credential(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    message = refusal(path)
    assert message.startswith(f"{KEY} {path} does not exist")
    assert "'cfssl-auth-key'" in message


def test_credentials_directory_wins_when_present(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "cfssl-auth-key", "from-systemd-credential")
    configured = write_secret(tmp_path / "configured", "from-configured-file")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    secret = read_secret(credentials.CFSSL_AUTH_KEY, configured, KEY, env)
    assert secret.value == "from-systemd-credential"
    assert secret.origin == creds / "cfssl-auth-key"


def test_credentials_directory_is_per_credential_name(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "bootstrap-token", "abcdef.0123456789abcdef")
    configured = write_secret(tmp_path / "configured", "from-configured-file")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    secret = read_secret(credentials.CFSSL_AUTH_KEY, configured, KEY, env)
    assert secret.value == "from-configured-file"
    token = read_secret(credentials.BOOTSTRAP_TOKEN, configured, "token", env)
    assert token.value == "abcdef.0123456789abcdef"


@pytest.mark.parametrize("directory", ["missing", ""])
def test_falls_back_to_the_configured_file(tmp_path: Path, directory: str) -> None:
    configured = write_secret(tmp_path / "configured", "from-configured-file")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / directory) if directory else ""}
    secret = read_secret(credentials.CFSSL_AUTH_KEY, configured, KEY, env)
    assert secret.value == "from-configured-file"
    assert secret.origin == configured


def test_a_credential_is_held_to_the_same_mode_rule(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "cfssl-auth-key", mode=0o640)
    configured = write_secret(tmp_path / "configured", "from-configured-file")
    message = refusal(configured, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert str(creds / "cfssl-auth-key") in message


# -- cfssl_auth_key --------------------------------------------------------------------


def test_cfssl_auth_key_decodes_hex(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "auth-key", SECRET.upper() + "\n")
    assert cfssl_auth_key(path, {}) == bytes.fromhex(SECRET)


@pytest.mark.parametrize(
    "text",
    [
        "0123456789abcdef0123456789abcdeg",  # not hex
        "0123456789abcdef0123456789abcde",  # odd length
        "my-password-is-secret",
    ],
)
def test_cfssl_auth_key_refuses_what_is_not_hex(tmp_path: Path, text: str) -> None:
    path = write_secret(tmp_path / "auth-key", text)
    with pytest.raises(ConfigError) as info:
        cfssl_auth_key(path, {})
    message = str(info.value)
    assert message.startswith(f"{KEY} {path} does not hold a hex key")
    assert text not in message


# -- Secret ----------------------------------------------------------------------------


def test_secret_never_shows_its_value() -> None:
    secret = Secret(value=SECRET, origin=Path("/etc/join-agent/cfssl-auth-key"))
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert SECRET not in shown
        assert "/etc/join-agent/cfssl-auth-key" in shown
