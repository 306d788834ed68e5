"""The control-plane fixture does what a real join needs, checked with the real tools:
anonymous discovery of a signed cluster-info, a bootstrap token's CSR approved and signed,
and revocation. If one of these fails, the kube tests built on the fixture mean nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from join_agent.pki import compat
from tests.lab.kube_cp import TOKEN_TEMPLATE, ControlPlane, render_token


def anonymous_cluster_info(server: str) -> dict[str, str]:
    """GET cluster-info as a node does before it trusts anything: no credentials, no CA check.

    With curl on purpose: the API server pretty-prints for curl's User-Agent, the code path
    that killed a kube-apiserver built with the vendored reflect2 1.0.1 (see .ci/build-kube).
    """
    url = f"{server}/api/v1/namespaces/kube-public/configmaps/cluster-info"
    r = subprocess.run(
        ["curl", "-ksS", "--fail", "--max-time", "10", url],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, str] = json.loads(r.stdout)["data"]
    return data


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl_pin(ca_pem: bytes) -> str:
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"], input=ca_pem, capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True
    ).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def validity(cert: x509.Certificate) -> tuple[datetime, datetime]:
    return compat.not_valid_before(cert), compat.not_valid_after(cert)


def token_kubeconfig(cp: ControlPlane, path: Path, token: str) -> Path:
    """A kubeconfig for the bootstrap token, made with kubectl as an operator would.

    `config set users.<name>.token` rather than `config set-credentials --token`: the latter
    panics in Debian's kubectl 1.20.2 (reflect2 1.0.1 built with Go 1.19).
    """
    cp.kubectl(
        "config",
        "set-cluster",
        "lab",
        f"--server={cp.server}",
        f"--certificate-authority={cp.ca_pem}",
        "--embed-certs=true",
        kubeconfig=path,
    )
    cp.kubectl("config", "set", "users.bootstrap.token", token, kubeconfig=path)
    cp.kubectl("config", "set-context", "lab", "--cluster=lab", "--user=bootstrap", kubeconfig=path)
    cp.kubectl("config", "use-context", "lab", kubeconfig=path)
    return path


def test_admin_sees_a_ready_api_server(control_plane: ControlPlane) -> None:
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(control_plane.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == "v1.20.2"


def test_anonymous_discovery_gets_a_cluster_info_signed_with_the_token(
    control_plane: ControlPlane,
) -> None:
    token = control_plane.create_token(expires=datetime.now(timezone.utc) + timedelta(hours=1))
    token_id, token_secret = token.split(".")
    try:
        data = anonymous_cluster_info(control_plane.server)

        kubeconfig = yaml.safe_load(data["kubeconfig"])
        cluster = kubeconfig["clusters"][0]["cluster"]
        assert cluster["server"] == control_plane.server
        ca_pem = base64.b64decode(cluster["certificate-authority-data"])
        assert ca_pem == control_plane.ca_pem.read_bytes()
        assert openssl_pin(ca_pem) == control_plane.ca_pin
        assert not kubeconfig.get("users"), "cluster-info must carry no credentials"

        # The detached JWS kubeadm checks: HS256 keyed with the token secret over the
        # kubeconfig exactly as served.
        header_b64, empty, sig_b64 = data[f"jws-kubeconfig-{token_id}"].split(".")
        assert empty == ""
        header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
        assert header == {"alg": "HS256", "kid": token_id}
        signing_input = f"{header_b64}.{b64url(data['kubeconfig'].encode())}".encode()
        expected = hmac.new(token_secret.encode(), signing_input, hashlib.sha256).digest()
        assert hmac.compare_digest(b64url(expected), sig_b64)
    finally:
        control_plane.delete_token(token)


def test_a_bootstrap_token_gets_a_node_client_certificate(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    token = control_plane.create_token()
    try:
        kubeconfig = token_kubeconfig(control_plane, tmp_path / "bootstrap.kubeconfig", token)
        key, csr_pem = tmp_path / "node.key", tmp_path / "node.csr"
        subprocess.run(
            ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(key), "-out", str(csr_pem),
             "-subj", "/O=system:nodes/CN=system:node:smoke"],
            capture_output=True, check=True,
        )  # fmt: skip
        name = f"smoke-{token.split('.')[0]}"
        csr = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(csr_pem.read_bytes()).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "key encipherment", "client auth"],
            },
        }
        control_plane.kubectl("create", "-f", "-", input=json.dumps(csr), kubeconfig=kubeconfig)

        deadline = time.monotonic() + 10
        status: dict[str, Any] = {}
        while time.monotonic() < deadline and not status.get("certificate"):
            time.sleep(0.2)
            got = control_plane.kubectl("get", "csr", name, "-o", "json", kubeconfig=kubeconfig)
            status = json.loads(got.stdout).get("status", {})
        assert status.get("certificate"), f"CSR not signed within 10 s: {status}"
        assert [c["type"] for c in status["conditions"]] == ["Approved"]
        assert status["conditions"][0]["reason"] == "AutoApproved"

        cert_pem = base64.b64decode(status["certificate"])
        (tmp_path / "node.crt").write_bytes(cert_pem)
        subprocess.run(
            ["openssl", "verify", "-CAfile", str(control_plane.ca_pem), str(tmp_path / "node.crt")],
            capture_output=True, check=True,
        )  # fmt: skip
        cert = x509.load_pem_x509_certificate(cert_pem)
        assert cert.subject.rfc4514_string() == "CN=system:node:smoke,O=system:nodes"
        # The fixture's signing_duration (1h) reached the signer.
        not_before, not_after = validity(cert)
        lifetime = not_after - not_before
        assert lifetime <= timedelta(hours=1, minutes=1)
    finally:
        control_plane.delete_token(token)


def test_a_deleted_token_is_gone_from_discovery_and_authentication(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    token = control_plane.create_token()
    token_id = token.split(".")[0]
    kubeconfig = token_kubeconfig(control_plane, tmp_path / "bootstrap.kubeconfig", token)

    control_plane.delete_token(token)

    assert f"jws-kubeconfig-{token_id}" not in anonymous_cluster_info(control_plane.server)
    # The token is not used before the delete on purpose: the API server caches a successful
    # token authentication for 10 s (1.20's built-in token cache), so a used token would keep
    # working that long after revocation. The loop covers a slow informer, not that cache.
    deadline = time.monotonic() + 15
    while True:
        r = control_plane.kubectl("get", "csr", kubeconfig=kubeconfig, check=False)
        if r.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.returncode != 0, "a deleted token still authenticates after 15 s"
    assert "Unauthorized" in r.stderr


def test_a_token_without_signing_usage_leaves_cluster_info_unsigned(
    control_plane: ControlPlane,
) -> None:
    unsigned = control_plane.create_token(usage_signing=False)
    # The signer re-signs from its whole view of the tokens: once it has signed a token made
    # after `unsigned`, it has seen `unsigned` too, so its absence is a decision, not a delay.
    signed = control_plane.create_token()
    try:
        data = anonymous_cluster_info(control_plane.server)
        assert f"jws-kubeconfig-{signed.split('.')[0]}" in data
        assert f"jws-kubeconfig-{unsigned.split('.')[0]}" not in data
    finally:
        control_plane.delete_token(signed)
        control_plane.delete_token(unsigned)


def test_cluster_info_is_not_writable_anonymously(control_plane: ControlPlane) -> None:
    ctx = ssl.create_default_context(cafile=str(control_plane.ca_pem))
    req = urllib.request.Request(
        f"{control_plane.server}/api/v1/namespaces/kube-public/configmaps/cluster-info",
        data=json.dumps({"data": {"kubeconfig": "tampered"}}).encode(),
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx, timeout=10)
    assert e.value.code == 403


def test_the_documented_sed_line_renders_what_the_fixture_creates(tmp_path: Path) -> None:
    """Operators fill the template with the `sed` line in its own comments; the fixture does it
    in Python. Both must give the same Secret, or the docs are untested."""
    template = TOKEN_TEMPLATE.read_text()
    lines = template.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   sed "))
    command = []
    for line in lines[start:]:
        command.append(line.removeprefix("#   ").rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    # The docs pipe into `kubectl create -f -`; capture what would be piped instead.
    sed = " ".join(command).replace("| kubectl create -f -", "")
    assert sed.startswith("sed ") and "kubectl" not in sed
    expires = datetime(2030, 1, 31, 12, 0, tzinfo=timezone.utc)
    env = {
        "PATH": "/usr/bin:/bin",
        "TOKEN_ID": "abcdef",
        "TOKEN_SECRET": "0123456789abcdef",
        "EXPIRATION": "2030-01-31T12:00:00Z",
    }
    shell = subprocess.run(
        ["bash", "-c", sed], cwd=TOKEN_TEMPLATE.parent, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rendered = render_token("abcdef", "0123456789abcdef", expires=expires)
    assert yaml.safe_load(shell.stdout) == yaml.safe_load(rendered)
    secret = yaml.safe_load(rendered)
    assert secret["metadata"]["name"] == "bootstrap-token-abcdef"
    assert secret["stringData"]["expiration"] == "2030-01-31T12:00:00Z"
