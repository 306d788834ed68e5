"""`join-agent join` against a real `cfssl serve` (Debian's golang-cfssl), as a real process."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import Node, kubectl_view
from tests.lab.cfssl_ca import CfsslCA, free_port, running_ca

pytestmark = pytest.mark.integration


def leaf_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def credential_files(node: Node) -> list[str]:
    return sorted(p.name for p in node.pki.glob("*")) if node.pki.exists() else []


def assert_nothing_written(node: Node) -> None:
    assert credential_files(node) == []
    assert not node.kubeconfig.exists()
    assert not node.ca_file.exists()


@pytest.mark.parametrize(
    ("key", "key_class"),
    [("ecdsa-p256", ec.EllipticCurvePrivateKey), ("rsa-2048", rsa.RSAPrivateKey)],
)
def test_join_writes_credentials_that_kubectl_and_openssl_accept(
    node: Node, ca: CfsslCA, kubectl: str, key: str, key_class: type
) -> None:
    node.write_config(node={"key": key})
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert "joined as system:node:worker-1" in r.stdout

    # The versioned pair, 0600, behind a relative symlink (the kubelet's own layout).
    target = os.readlink(node.current)
    assert target.startswith("kubelet-client-2") and "/" not in target
    pair = node.pki / target
    assert stat.S_IMODE(pair.stat().st_mode) == 0o600
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(pair.read_bytes(), password=None)
    assert isinstance(private, key_class)

    cert = leaf_of(pair)
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:worker-1"
    )
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:nodes"
    ]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["worker-1"]
    assert sorted(str(a) for a in san.get_values_for_type(x509.IPAddress)) == [
        "192.0.2.10",
        "fd00::10",
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku

    # openssl, not our code, agrees the leaf chains to the CA and is fit for client auth.
    v = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(ca.ca_pem), str(pair)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert v.returncode == 0, v.stdout + v.stderr

    assert node.ca_file.read_bytes().strip() == ca.ca_pem.read_bytes().strip()
    assert stat.S_IMODE(node.kubeconfig.stat().st_mode) == 0o600

    # The real kubectl reads the kubeconfig: raw view shows our server, CA and paths...
    doc = kubectl_view(kubectl, node.kubeconfig)
    assert doc["current-context"] == "system:node:worker-1@lab"
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert (
        base64.b64decode(cluster["certificate-authority-data"]).strip()
        == ca.ca_pem.read_bytes().strip()
    )
    user = doc["users"][0]
    assert user["name"] == "system:node:worker-1"
    assert user["user"]["client-certificate"] == str(node.current)
    assert user["user"]["client-key"] == str(node.current)
    # ...and flattening makes kubectl read the certificate and key through the symlink.
    flat = kubectl_view(kubectl, node.kubeconfig, flatten=True)
    flat_user = flat["users"][0]["user"]
    assert base64.b64decode(flat_user["client-certificate-data"]) == pair.read_bytes()


def test_status_reports_the_joined_node(node: Node) -> None:
    before = node.run("status", "--json")
    assert before.returncode == 2
    assert json.loads(before.stdout)["state"] == "not-joined"
    assert node.run("join").returncode == 0
    r = node.run("status", "--json")
    # Valid credentials, but no daemon renews them: degraded, and it says why.
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["state"] == "valid"
    assert doc["health"] == "degraded"
    assert doc["agent"]["running"] is False
    assert any("join-agent run is not running" in p for p in doc["problems"])
    assert doc["source"] == "files"
    assert doc["renewal"]["renew_at"] is not None
    assert doc["node"] == "worker-1"
    assert doc["certificate"]["sans"] == {"dns": ["worker-1"], "ip": ["192.0.2.10", "fd00::10"]}
    assert doc["certificate"]["issuer"] == "CN=join-agent test CA"
    assert doc["certificate"]["seconds_left"] > 364 * 86400
    assert doc["kubeconfig"]["server"] == "https://127.0.0.1:6443"
    text = node.run("status")
    assert text.returncode == 1
    assert (
        "(VALID: 364 days, renews in" in text.stdout or "(VALID: 365 days, renews in" in text.stdout
    )
    assert "Node:         worker-1" in text.stdout


def test_a_join_from_an_http_ca_does_without_httpx(node: Node) -> None:
    """A CFSSL CA on http:// is asked through the standard library (net/plain.py): a join
    imports no httpx (≈75 ms on bookworm's versions: docs/benchmarks.md), and does the
    same job."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "join_agent", "--config", str(node.config),
         "join"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", r.stderr, re.M))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "join_agent.net.plain" in imported and "cryptography" in imported
    assert sorted(m for m in imported if m.split(".")[0] in ("httpx", "httpcore", "h11")) == []
    assert r.stdout.startswith("joined as system:node:worker-1 ")
    assert node.run("status").returncode == 1  # valid; degraded while nothing renews


def test_wrong_pin_is_refused_and_nothing_is_written(node: Node) -> None:
    node.write_config(signer__cfssl={"ca_pins": ["sha256:" + "ab" * 32]})
    r = node.run("join")
    assert r.returncode != 0
    assert "not in signer.cfssl.ca_pins" in r.stderr
    assert "Traceback" not in r.stderr
    assert_nothing_written(node)


def test_wrong_auth_key_gets_one_sentence(node: Node, ca: CfsslCA) -> None:
    ca.write_auth_key(node.auth_key, "00" * 16)
    r = node.run("join")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        f"join-agent: the CA at {ca.url} rejected our auth key (invalid token): check "
        "signer.cfssl.auth_key_file against the profile's auth_key on the CA"
    )
    assert_nothing_written(node)


def test_first_url_dead_second_alive(node: Node, ca: CfsslCA) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    node.write_config(signer__cfssl={"urls": [dead, ca.url]})
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert dead in r.stderr  # the failover is logged
    assert node.current.exists()


def test_ca_down_names_every_url_tried(node: Node) -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://[::1]:{free_port()}"]
    node.write_config(signer__cfssl={"urls": dead})
    r = node.run("join")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("join-agent: no CFSSL server answered: ")
    for url in dead:
        assert url in last
    assert_nothing_written(node)


def test_unknown_profile_is_refused_because_the_cert_lacks_client_auth(node: Node) -> None:
    # CFSSL silently signs with its default profile (server auth only here).
    node.write_config(signer__cfssl={"profile": "no-such-profile"})
    r = node.run("join")
    assert r.returncode != 0
    assert "lacks the client-auth extended key usage" in r.stderr
    assert_nothing_written(node)


def test_second_join_rotates_and_a_failed_join_changes_nothing(node: Node, ca: CfsslCA) -> None:
    assert node.run("join").returncode == 0
    first = os.readlink(node.current)
    kubeconfig = node.kubeconfig.read_bytes()
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    second = os.readlink(node.current)
    assert second != first
    assert (node.pki / first).exists(), "the previous version is kept for rollback"
    assert leaf_of(node.pki / first).serial_number != leaf_of(node.pki / second).serial_number
    assert node.kubeconfig.read_bytes() == kubeconfig  # it points at the symlink

    before = node.tree()
    ca.write_auth_key(node.auth_key, "11" * 16)
    assert node.run("join").returncode != 0
    assert node.tree() == before


def test_expired_certificate_is_refused(tmp_path: Path) -> None:
    # A profile shorter than CFSSL's default 5-minute backdate issues an expired certificate.
    with running_ca(tmp_path / "ca", expiry="2m") as short:
        n = Node(root=tmp_path / "node", ca=short)
        n.root.mkdir()
        short.write_auth_key(n.auth_key)
        n.write_config()
        r = n.run("join")
    assert r.returncode != 0
    assert "expired at" in r.stderr and "check the CA profile's expiry" in r.stderr
    assert_nothing_written(n)


def test_secrets_stay_out_of_every_output(node: Node, ca: CfsslCA) -> None:
    runs = [node.run("--debug", "join"), node.run("--debug", "status", "--json")]
    ca.write_auth_key(node.auth_key, "22" * 16)
    runs.append(node.run("--debug", "join"))
    for r in runs:
        for secret in (ca.auth_key_hex, "22" * 16):
            assert secret not in r.stdout
            assert secret not in r.stderr
    assert "PRIVATE KEY" not in "".join(r.stdout + r.stderr for r in runs)


def test_auth_key_readable_by_others_is_refused(node: Node) -> None:
    node.auth_key.chmod(0o644)
    r = node.run("join")
    assert r.returncode != 0
    assert "readable by group and others (mode 0644)" in r.stderr
    assert_nothing_written(node)


def test_systemd_credential_wins_over_the_configured_file(
    node: Node, ca: CfsslCA, tmp_path: Path
) -> None:
    ca.write_auth_key(node.auth_key, "33" * 16)  # wrong: must not be used
    creds = tmp_path / "credentials"
    creds.mkdir()
    ca.write_auth_key(creds / "cfssl-auth-key")
    r = node.run("join", env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert r.returncode == 0, r.stderr


def test_pin_verb_matches_openssl_from_file_and_from_the_ca(node: Node, ca: CfsslCA) -> None:
    from_file = node.run("pin", str(ca.ca_pem))
    assert from_file.returncode == 0
    assert from_file.stdout.strip() == ca.pin
    from_url = node.run("pin", ca.url)
    assert from_url.returncode == 0
    assert from_url.stdout.strip() == ca.pin
    assert "compare it" in from_url.stderr


def test_trust_on_first_use_records_the_pin_and_refuses_another_ca(
    node: Node, ca: CfsslCA, tmp_path: Path
) -> None:
    node.write_config(signer__cfssl={"ca_pins": [], "insecure_skip_ca_pin": True})
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert "ca_not_pinned" in r.stderr  # the loud warning
    assert (node.state / "ca-pin").read_text().strip() == ca.pin
    with running_ca(tmp_path / "other-ca", cn="impostor CA") as other:
        other.write_auth_key(node.auth_key)
        node.write_config(
            signer__cfssl={"urls": [other.url], "ca_pins": [], "insecure_skip_ca_pin": True}
        )
        before = node.tree()
        r = node.run("join")
    assert r.returncode != 0
    assert f"which is not in the pin recorded on first use ({node.state / 'ca-pin'})" in r.stderr
    assert node.tree() == before


def test_check_reports_each_item_on_its_own_line(node: Node, ca: CfsslCA) -> None:
    r = node.run("check")
    lines = r.stdout.splitlines()
    assert lines[0] == f"PASS  config: {node.config} is valid"
    assert lines[1].startswith("PASS  trust: the node's directories and what runs as root")
    assert lines[2].startswith(f"PASS  auth key: {node.auth_key}")
    assert lines[3] == f"PASS  CA {ca.url}: answers; CN=join-agent test CA matches a pin"
    assert lines[4].startswith(f"PASS  clock vs {ca.url}: within ")
    # cfssl serve answers /newcert to anyone: a warning, not a failure.
    assert lines[5].startswith(f"WARN  /newcert at {ca.url}: reachable from this node")
    # No join yet: no CA file to verify the API server with.
    assert lines[6].startswith("SKIP  API server https://127.0.0.1:6443: no CA to verify it with")
    assert "Traceback" not in r.stderr


def test_check_fails_on_a_wrong_pin_and_a_bad_secret(node: Node) -> None:
    node.write_config(signer__cfssl={"ca_pins": ["sha256:" + "cd" * 32]})
    node.auth_key.chmod(0o640)
    r = node.run("check")
    assert r.returncode == 1
    fails = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
    assert any("auth key" in f and "readable by group (mode 0640)" in f for f in fails)
    assert any("which is not in signer.cfssl.ca_pins" in f for f in fails)


def test_check_verifies_the_api_servers_tls_with_the_cluster_ca(
    node: Node, ca: CfsslCA, tmp_path: Path
) -> None:
    """A stand-in API server: a TLS listener whose certificate the test CA signed."""
    import datetime as dt
    import ipaddress
    import socket
    import ssl
    import threading

    from tests.lab import certs

    key = certs.ec_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = certs.CA.from_files(ca.ca_pem, ca.ca_key).issue(
        key.public_key(),
        subject=certs.name("kube-apiserver"),
        dns=(),
        ips=(ipaddress.ip_address("127.0.0.1"),),
        eku=None,
        key_usage=None,
        is_ca=None,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(hours=1),
    )
    pem = tmp_path / "apiserver.pem"
    pem.write_bytes(certs.cert_pem(cert) + certs.key_pem(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        node.write_config(cluster={"server": f"https://127.0.0.1:{port}"})
        assert node.run("join").returncode == 0
        lines = node.run("check").stdout.splitlines()
        assert (
            f"PASS  API server https://127.0.0.1:{port}: TLS verified with {node.ca_file}" in lines
        )
    finally:
        listener.close()
