"""The shipped example config is valid and says what the man page's CONFIGURATION says."""

from __future__ import annotations

from pathlib import Path

import pytest

from join_agent.config import loading, model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.toml"


def test_example_config_loads_with_the_documented_values() -> None:
    cfg = loading.load(EXAMPLE)
    assert cfg.signer_kind == "cfssl"
    assert cfg.cluster.server == "https://10.0.0.5:6443"
    assert cfg.cfssl.urls == ("http://10.0.0.5:8888",)
    assert cfg.cfssl.profile == "kubelet"
    assert cfg.cfssl.auth_key_file == Path("/etc/join-agent/cfssl-auth-key")
    assert len(cfg.cfssl.ca_pins) == 1
    assert not cfg.cfssl.insecure_skip_ca_pin
    assert cfg.node.key == "ecdsa-p256"
    assert cfg.node.exclude_interfaces == model.DEFAULT_EXCLUDE_INTERFACES
    assert cfg.paths.kubeconfig == Path("/etc/kubernetes/kubelet.conf")
    assert cfg.paths.pki_dir == Path("/var/lib/kubelet/pki")


def test_commented_exclude_list_matches_the_default() -> None:
    # The example shows the default list in a comment; it must not drift from the code.
    text = EXAMPLE.read_text()
    start = text.index("# exclude_interfaces = [")
    block = text[start : text.index("]", start) + 1]
    names = [w.strip(' "#\n') for w in block.split("[", 1)[1].rstrip("]").split(",")]
    assert tuple(n for n in names if n) == model.DEFAULT_EXCLUDE_INTERFACES


def test_kubernetes_example_loads() -> None:
    cfg = loading.load(EXAMPLE.with_name("config-kubernetes.toml"))
    assert cfg.signer_kind == "kubernetes"
    assert cfg.kubernetes.bootstrap_token_file == Path("/etc/join-agent/bootstrap-token")
    assert len(cfg.kubernetes.ca_pins) == 1
    assert not cfg.kubernetes.serving


def test_control_plane_example_loads() -> None:
    cfg = loading.load(EXAMPLE.with_name("control-plane.toml"))
    assert [c.name for c in cfg.certificates] == [
        "front-proxy-client", "apiserver-kubelet-client", "etcd-peer",
    ]  # fmt: skip
    assert cfg.certificates[0].action.kind == "smf_restart"
    assert cfg.certificates[2].node_addresses
    assert not cfg.kubelet.manage


def test_on_illumos_the_example_finds_its_secrets_in_the_omnios_layout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The example copied onto an OmniOS host, its [paths] and [kubelet] deleted as
    docs/install.md says: every default is the OmniOS one, the secrets' too."""
    from join_agent.host import platform

    def copied(example: Path) -> Path:
        path = tmp_path / example.name
        path.write_text(_without(example.read_text(), "[paths]", "[kubelet]"))
        return path

    monkeypatch.setattr(platform, "current", lambda: platform.ILLUMOS)
    cfg = loading.load(copied(EXAMPLE))
    assert cfg.cfssl.auth_key_file == Path("/etc/opt/ooce/join-agent/cfssl-auth-key")
    assert cfg.paths.state_dir == Path("/var/opt/ooce/join-agent")
    assert not cfg.kubelet.manage
    token = loading.load(copied(EXAMPLE.parent / "config-kubernetes.toml"))
    assert token.kubernetes.bootstrap_token_file == Path("/etc/opt/ooce/join-agent/bootstrap-token")


def _without(text: str, *tables: str) -> str:
    """``text`` without these top-level tables (each up to the next table header)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = line.strip() in tables
        if not skipping:
            out.append(line)
    return "\n".join(out)
