"""examples/cloud-init.yaml: valid cloud-config that writes a config join-agent accepts,
installs the package, starts the service without blocking boot, and inlines no secret."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from join_agent.config import loading
from join_agent.errors import ConfigError
from join_agent.host import platform
from join_agent.signers import credentials

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cloud-init.yaml"
PLACEHOLDER = re.compile(r"^REPLACE_WITH_[A-Z0-9_]+$")


def load(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def files(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in doc["write_files"]}


def commands(doc: dict[str, Any]) -> list[list[str]]:
    """runcmd as argv lists: cloud-init runs a list as is and a string through sh."""
    return [c if isinstance(c, list) else shlex.split(c) for c in doc["runcmd"]]


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


# A pin is public (it is a hash of the CA's public key): it may be inlined.
_PIN = re.compile(r"sha256:[0-9a-f]{64}")
_SECRETS = {
    "a hex key (CFSSL auth_key)": re.compile(r"\b[0-9a-fA-F]{16,}\b"),
    "a bootstrap token": re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a long base64 value": re.compile(r"[A-Za-z0-9+/]{40,}={0,2}"),
}


def secrets_in(doc: dict[str, Any]) -> list[str]:
    """Secret-looking values anywhere in the document (YAML comments are not values)."""
    found = []
    for s in strings(doc):
        text = _PIN.sub("", s)
        found += [f"{what}: {s[:40]!r}" for what, rx in _SECRETS.items() if rx.search(text)]
    return found


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    text = EXAMPLE.read_text()
    # cloud-init takes user data as cloud-config only with this exact first line.
    assert text.startswith("#cloud-config\n")
    return load(text)


def test_config_and_key_are_written_root_only(doc: dict[str, Any]) -> None:
    written = files(doc)
    assert set(written) == {"/etc/join-agent/config.toml", "/etc/join-agent/cfssl-auth-key"}
    for f in written.values():
        # Quoted: an unquoted 0600 is YAML 1.1's octal integer, a trap for the next editor.
        assert f["permissions"] == "0600", f["path"]
        assert f["owner"] == "root:root", f["path"]
        assert "encoding" not in f  # plain text: what the test reads is what lands


def test_embedded_config_is_one_join_agent_accepts(doc: dict[str, Any]) -> None:
    written = files(doc)
    cfg = loading.parse(tomllib.loads(written["/etc/join-agent/config.toml"]["content"]))
    assert cfg.signer_kind == "cfssl"
    assert cfg.cfssl.ca_pins
    assert not cfg.cfssl.insecure_skip_ca_pin
    # The key goes where the config looks for it.
    assert str(cfg.cfssl.auth_key_file) in written
    # The unit's ConditionPathExists= and ExecStart= use the default config path.
    assert str(platform.LINUX.config_file) == "/etc/join-agent/config.toml"


def test_the_only_secret_is_a_named_placeholder(doc: dict[str, Any], tmp_path: Path) -> None:
    assert secrets_in(doc) == []
    value = files(doc)["/etc/join-agent/cfssl-auth-key"]["content"].strip()
    assert PLACEHOLDER.match(value), value
    # Left unreplaced, the placeholder fails loudly instead of authenticating as anything.
    key = tmp_path / "cfssl-auth-key"
    key.write_text(value + "\n")
    key.chmod(0o600)
    with pytest.raises(ConfigError, match="does not hold a hex key"):
        credentials.cfssl_auth_key(key, {})


@pytest.mark.parametrize(
    "secret",
    [
        "0123456789abcdef0123456789abcdef",
        "abcdef.0123456789abcdef",
        "-----BEGIN EC PRIVATE KEY-----",
        "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IHNlY3JldA==",
    ],
)
def test_secret_check_catches_an_inlined_secret(secret: str) -> None:
    text = EXAMPLE.read_text().replace("REPLACE_WITH_CFSSL_AUTH_KEY_HEX", secret, 1)
    assert secrets_in(load(text))


def test_installs_the_package_then_starts_the_service_without_blocking(
    doc: dict[str, Any],
) -> None:
    assert doc["package_update"] is True  # the python3-* dependencies come from the mirror
    cmds = commands(doc)
    install = [i for i, c in enumerate(cmds) if c[:2] == ["apt-get", "install"]]
    start = [i for i, c in enumerate(cmds) if c[:2] == ["systemctl", "enable"]]
    assert len(install) == 1
    assert len(start) == 1
    assert install[0] < start[0]
    apt = cmds[install[0]]
    assert "-y" in apt
    assert apt[-1].endswith("_all.deb")
    assert apt[-1].startswith("/")  # apt-get takes a path (not a name) only as ./ or /
    assert sorted(cmds[start[0]][2:]) == ["--no-block", "--now", "join-agent"]
