"""kubeconfig: the rendered document (the kubelet's, as kubeadm writes it) and its write."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from join_agent.worker import kubeconfig

CREDENTIALS = Path("/var/lib/kubelet/pki/kubelet-client-current.pem")
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def rendered(**changes: object) -> str:
    args: dict[str, object] = {
        "cluster": "kubernetes",
        "server": "https://10.0.0.5:6443",
        "ca_pem": CA_PEM,
        "node_name": "node-1",
        "credentials": CREDENTIALS,
    }
    args.update(changes)
    return kubeconfig.render(**args)  # type: ignore[arg-type]


def test_render_has_the_structure_of_the_design() -> None:
    doc = yaml.safe_load(rendered(cluster="prod"))
    assert doc["apiVersion"] == "v1"
    assert doc["kind"] == "Config"

    [cluster] = doc["clusters"]
    assert cluster["name"] == "prod"
    assert cluster["cluster"]["server"] == "https://10.0.0.5:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == CA_PEM
    assert "certificate-authority" not in cluster["cluster"]
    assert "insecure-skip-tls-verify" not in cluster["cluster"]

    [user] = doc["users"]
    assert user["name"] == "system:node:node-1"
    assert user["user"] == {
        "client-certificate": str(CREDENTIALS),
        "client-key": str(CREDENTIALS),
    }

    [context] = doc["contexts"]
    assert context["context"] == {"cluster": "prod", "user": "system:node:node-1"}
    assert doc["current-context"] == context["name"]


def test_render_is_deterministic_and_parse_reads_it_back() -> None:
    text = rendered()
    assert rendered() == text
    assert kubeconfig.parse(text) == yaml.safe_load(text)


def test_render_quotes_what_yaml_would_misread() -> None:
    doc = yaml.safe_load(rendered(cluster="yes", node_name="true"))
    assert doc["clusters"][0]["name"] == "yes"
    assert doc["users"][0]["name"] == "system:node:true"


@pytest.mark.parametrize("text", ["clusters: [\n", "- a\n- b\n", "just text\n", ""])
def test_parse_refuses_what_is_not_a_kubeconfig(text: str) -> None:
    with pytest.raises(ValueError, match="not"):
        kubeconfig.parse(text)


def test_write_creates_mode_0600(tmp_path: Path, set_umask: Callable[[int], None]) -> None:
    set_umask(0)
    path = tmp_path / "etc" / "kubernetes" / "kubelet.conf"
    assert kubeconfig.write(path, rendered()) is True
    assert path.read_text() == rendered()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_leaves_identical_content_alone(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.conf"
    assert kubeconfig.write(path, rendered()) is True
    old = (1_000_000_000, 1_000_000_000)
    os.utime(path, ns=old)  # a known mtime, so "unchanged" cannot pass by timer granularity
    before = path.stat()
    assert kubeconfig.write(path, rendered()) is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, old[1])


def test_write_replaces_changed_content(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.conf"
    kubeconfig.write(path, rendered())
    before = path.stat()
    new = rendered(server="https://10.0.0.6:6443")
    assert kubeconfig.write(path, new) is True
    assert path.read_text() == new
    assert path.stat().st_ino != before.st_ino  # replaced by rename, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_brings_an_identical_but_wider_file_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.conf"
    path.write_text(rendered())
    path.chmod(0o644)
    kubeconfig.write(path, rendered())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
