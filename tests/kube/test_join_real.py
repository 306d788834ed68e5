"""join-agent against a REAL control plane (etcd + kube-apiserver + kube-controller-manager
v1.20.2 built from Debian's sources), set up with docs/kubernetes/'s files exactly as
docs/kubernetes.md tells operators: token discovery, TLS bootstrap through the CSR API,
renewal as the node, and what the node may and may not do with what it got.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from join_agent.pki import compat
from tests.conftest import KubeNode, kubectl_view
from tests.lab.kube_cp import ControlPlane


@pytest.fixture
def node(tmp_path: Path, control_plane: ControlPlane) -> KubeNode:
    n = KubeNode(root=tmp_path / "node", server=control_plane.server, pin=control_plane.ca_pin)
    n.root.mkdir()
    n.write_token(control_plane.create_token())
    n.write_config(node={"name": _name(n)})
    return n


def _name(n: KubeNode) -> str:
    """The node's name, one per test: Node objects and CSRs outlive a test in the shared
    control plane."""
    return "w-" + re.sub(r"[^a-z0-9]+", "-", n.root.parent.name.lower()).strip("-")


def _node_object(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def _leaf(n: KubeNode) -> x509.Certificate:
    return compat.load_pem_certificates(n.current.read_bytes())[0]


def test_token_join_gives_working_node_credentials(
    node: KubeNode, control_plane: ControlPlane, kubectl: str
) -> None:
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    me = _name(node)
    cert = _leaf(node)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        f"system:node:{me}"
    )
    assert compat.signed_by(
        cert, compat.load_pem_certificates(control_plane.ca_pem.read_bytes())[0]
    )
    # The kubeconfig we wrote works with the real kubectl against the real API server.
    api = control_plane.kubectl("get", "--raw", "/api", kubeconfig=node.kubeconfig)
    assert json.loads(api.stdout)["kind"] == "APIVersions"
    assert kubectl_view(kubectl, node.kubeconfig)["users"][0]["name"] == f"system:node:{me}"
    # NodeRestriction: the node may register itself (201) but not another node (403).
    own = control_plane.kubectl(
        "create", "-f", "-", "-o", "name", kubeconfig=node.kubeconfig, input=_node_object(me)
    )
    assert own.stdout.strip() == f"node/{me}"
    other = control_plane.kubectl(
        "create", "-f", "-", kubeconfig=node.kubeconfig, input=_node_object("someone-else"),
        check=False,
    )  # fmt: skip
    assert other.returncode != 0
    assert "forbidden" in other.stderr.lower()
    assert "someone-else" in other.stderr
    st = json.loads(node.run("status", "--json").stdout)
    assert st["state"] == "valid"


def test_renewal_as_the_node_needs_no_token(node: KubeNode, control_plane: ControlPlane) -> None:
    assert node.run("join").returncode == 0
    first = _leaf(node)
    node.token_file.unlink()
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert _leaf(node).serial_number != first.serial_number
    me = _name(node)
    csrs = json.loads(control_plane.kubectl("get", "csr", "-o", "json").stdout)["items"]
    mine = [c for c in csrs if c["spec"]["username"] in (f"system:node:{me}",)]
    assert len(mine) == 1  # the renewal, asked by the node itself and auto-approved
    assert any(c["type"] == "Approved" for c in mine[0]["status"]["conditions"])


def test_wrong_pin_is_refused_and_nothing_is_written(node: KubeNode) -> None:
    node.write_config(signer__kubernetes={"ca_pins": ["sha256:" + "1" * 64]})
    before = node.tree()
    r = node.run("join")
    assert r.returncode != 0
    assert "matches none of signer.kubernetes.ca_pins" in r.stderr
    assert node.tree() == before


def test_a_deleted_token_says_what_to_do(node: KubeNode, control_plane: ControlPlane) -> None:
    token = node.token_file.read_text().strip()
    control_plane.delete_token(token)
    r = node.run("join")
    assert r.returncode != 0
    line = r.stderr.strip()
    assert f"bootstrap token {token.split('.')[0]!r} expired or was deleted" in line
    assert "kubeadm token create" in line
    assert token.split(".")[1] not in line
    assert not node.current.exists()


def test_join_by_hand_with_kubeadm_style_flags(tmp_path: Path, control_plane: ControlPlane) -> None:
    n = KubeNode(root=tmp_path / "n", server="https://192.0.2.1:6443", pin="sha256:" + "0" * 64)
    n.root.mkdir()
    n.write_config(node={"name": "by-hand"})
    token = control_plane.create_token()
    r = subprocess.run(
        [sys.executable, "-m", "join_agent", "--config", str(n.config), "join",
         "--server", control_plane.server, "--token-file", "-",
         "--ca-pin", control_plane.ca_pin],
        input=token, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "joined as system:node:by-hand" in r.stdout
    api = control_plane.kubectl("get", "--raw", "/api", kubeconfig=n.kubeconfig)
    assert json.loads(api.stdout)["kind"] == "APIVersions"
