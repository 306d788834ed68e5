"""The Kubernetes signer end to end against the STAND-IN API server (tests/standins/
kube_apiserver.py): the real CLI in its own process, real TLS, the real wire format.

The stand-in is for what a real control plane will not do on cue (deny, never approve,
lie about cluster-info, expire a token now); tests/kube/ runs the same path against a
real kube-apiserver and kube-controller-manager.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from join_agent.pki import compat
from tests.conftest import KubeNode, kubectl_view, stop
from tests.lab import status_keys
from tests.standins.kube_apiserver import CSR_PATH, StandinApiServer

TOKEN = "abcdef.0123456789abcdef"
SECRET = TOKEN.split(".")[1]
# Certificates that expire while a test waits.
SHORT: dict[str, Any] = {"cert_lifetime": dt.timedelta(seconds=3), "backdate": dt.timedelta(0)}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[StandinApiServer]:
    with StandinApiServer(tmp_path / "apiserver") as server:
        server.add_token(TOKEN)
        yield server


@pytest.fixture
def node(tmp_path: Path, api: StandinApiServer) -> KubeNode:
    n = KubeNode(root=tmp_path / "node", server=api.url, pin=api.ca_pin)
    n.root.mkdir()
    n.write_token(TOKEN)
    n.write_config()
    return n


@contextlib.contextmanager
def standin_node(
    tmp_path: Path, *, config: dict[str, dict[str, object]] | None = None, **standin: Any
) -> Iterator[tuple[StandinApiServer, KubeNode]]:
    """A stand-in API server made as asked (``approver="never"``…) and a node for it."""
    with StandinApiServer(tmp_path / "api", **standin) as api:
        api.add_token(TOKEN)
        n = KubeNode(root=tmp_path / "n", server=api.url, pin=api.ca_pin)
        n.root.mkdir()
        n.write_token(TOKEN)
        n.write_config(**(config or {}))
        yield api, n


def _leaf(node: KubeNode, prefix: str = "kubelet-client") -> x509.Certificate:
    return compat.load_pem_certificates((node.pki / f"{prefix}-current.pem").read_bytes())[0]


def _csr_users(api: StandinApiServer) -> list[str]:
    return [user for method, path, user in api.requests if method == "POST" and CSR_PATH in path]


def _refused(r: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert r.returncode != 0, r.stdout
    line = r.stderr.strip()
    assert line.count("\n") == 0, line  # one sentence, no traceback
    for f in fragments:
        assert f in line, line
    return line


def test_token_discovery_and_tls_bootstrap(
    node: KubeNode, api: StandinApiServer, kubectl: str
) -> None:
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    cert = _leaf(node)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:node:worker-1"
    )
    with pytest.raises(x509.ExtensionNotFound):  # the kubelet client signer takes no SANs
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert compat.signed_by(cert, api.ca_cert)
    assert compat.load_pem_certificates(node.ca_file.read_bytes()) == [api.ca_cert]
    view = kubectl_view(kubectl, node.kubeconfig, flatten=True)
    assert view["clusters"][0]["cluster"]["server"] == api.url
    assert view["users"][0]["name"] == "system:node:worker-1"
    # Two cluster-info reads (unverified, then verified) and one CSR, as the bootstrap user.
    gets = [p for m, p, _ in api.requests if m == "GET" and "cluster-info" in p]
    assert len(gets) == 2
    assert _csr_users(api) == ["system:bootstrap:abcdef"]
    (csr,) = api.csrs.values()
    assert csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    assert csr["spec"]["usages"] == ["digital signature", "key encipherment", "client auth"]
    st = node.run("status", "--json")
    doc = json.loads(st.stdout)
    assert doc["certificate"]["present"] is True
    assert doc["state"] == "valid"


def test_renewal_uses_the_node_certificate_not_the_token(
    node: KubeNode, api: StandinApiServer
) -> None:
    assert node.run("join").returncode == 0
    first = _leaf(node)
    node.token_file.unlink()  # renewal must not need it
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert _leaf(node).serial_number != first.serial_number
    assert _csr_users(api) == ["system:bootstrap:abcdef", "system:node:worker-1"]


def test_watch_refused_falls_back_to_polling(tmp_path: Path) -> None:
    with standin_node(tmp_path, watch=False) as (api, n):
        r = n.run("join")
        assert r.returncode == 0, r.stderr
        watches = [p for m, p, _ in api.requests if m == "GET" and "watch=" in p]
        polls = [p for m, p, _ in api.requests if m == "GET" and p.startswith(CSR_PATH + "/")]
        assert watches and polls


def test_wrong_pin_is_refused_and_nothing_is_written(node: KubeNode) -> None:
    node.write_config(signer__kubernetes={"ca_pins": ["sha256:" + "0" * 64]})
    before = node.tree()
    line = _refused(node.run("join"), "matches none of signer.kubernetes.ca_pins")
    assert SECRET not in line
    assert node.tree() == before


def test_a_jws_made_with_another_secret_is_refused(node: KubeNode, api: StandinApiServer) -> None:
    api.jws_secret_override["abcdef"] = "ffffffffffffffff"
    before = node.tree()
    _refused(node.run("join"), "signed for token id 'abcdef' with another secret")
    assert node.tree() == before
    assert _csr_users(api) == []  # the token was never sent to an unverified server


def test_cluster_info_that_changes_on_the_verified_fetch_is_refused(
    node: KubeNode, api: StandinApiServer
) -> None:
    api.cluster_info_tamper_after = 1
    _refused(node.run("join"), "changed between the unverified and the verified fetch")
    assert not node.current.exists()


def test_a_denied_request_is_a_clear_error(tmp_path: Path) -> None:
    with standin_node(tmp_path, approver="deny") as (_, n):
        _refused(n.run("join"), "was denied", "KubectlDeny")
        assert not n.current.exists()


def test_an_approver_that_never_approves_times_out(tmp_path: Path) -> None:
    with standin_node(
        tmp_path, config=dict(signer__kubernetes={"csr_timeout": "2s"}), approver="never"
    ) as (api, n):
        line = _refused(n.run("join"), "was not approved and signed within 2s")
        (name,) = api.csrs
        assert f"kubectl certificate approve {name}" in line


def test_a_certificate_for_another_node_is_refused(node: KubeNode, api: StandinApiServer) -> None:
    def another_node(
        csr: x509.CertificateSigningRequest, obj: dict[str, object]
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        return api.issue_client_cert(
            "worker-2", csr.public_key(),  # type: ignore[arg-type,unused-ignore]
            not_before=now - dt.timedelta(minutes=1),
            not_after=now + dt.timedelta(hours=1),
        )  # fmt: skip

    api.issue_hook = another_node
    before = node.tree()
    _refused(node.run("join"), "system:node:worker-2", "refusing it")
    assert node.tree() == before


def test_a_per_signer_ca_is_accepted_and_logged(tmp_path: Path) -> None:
    with standin_node(tmp_path, signer_ca_separate=True) as (api, n):
        r = n.run("--debug", "join")
        assert r.returncode == 0, r.stderr
        assert "per_signer_ca" in r.stderr
        assert compat.signed_by(_leaf(n), api.signer_ca_cert)
        assert json.loads(n.run("status", "--json").stdout)["state"] == "valid"


def test_expired_certificate_rebootstraps_with_the_token(tmp_path: Path) -> None:
    with standin_node(tmp_path, config={"renewal": {"clock_skew": "0s"}}, **SHORT) as (api, n):
        assert n.run("join").returncode == 0
        time.sleep(max(0.0, (compat.not_valid_after(_leaf(n)) - _utcnow()).total_seconds() + 0.5))
        r = n.run("join")
        assert r.returncode == 0, r.stderr
        assert _csr_users(api) == ["system:bootstrap:abcdef", "system:bootstrap:abcdef"]


def test_expired_certificate_and_expired_token_say_what_to_do(tmp_path: Path) -> None:
    config: dict[str, dict[str, object]] = {
        "renewal": {"clock_skew": "0s"},
        "kubelet": {"manage": False},
    }
    with standin_node(tmp_path, config=config, **SHORT) as (api, n):
        assert n.run("join").returncode == 0
        api.expire_token(TOKEN)
        time.sleep(max(0.0, (compat.not_valid_after(_leaf(n)) - _utcnow()).total_seconds() + 0.5))
        line = _refused(n.run("join"), "bootstrap token 'abcdef' expired or was deleted",
                        "kubeadm token create", str(n.token_file))  # fmt: skip
        assert SECRET not in line
        # The daemon keeps trying, and status says the same thing.
        daemon = n.start()
        try:
            doc = n.wait_status(lambda d: bool(d.get("last_error")))
        finally:
            stop(daemon)
        assert doc["state"] == "expired"
        assert any("kubeadm token create" in p for p in doc["problems"]), doc["problems"]


def test_flags_mirror_kubeadm_join_with_the_token_on_stdin(
    node: KubeNode, api: StandinApiServer
) -> None:
    node.token_file.unlink()
    node.write_config(signer={"kind": "cfssl"}, signer__kubernetes={"ca_pins": []},
                      cluster={"server": "https://192.0.2.1:6443"})  # fmt: skip
    node.config.write_text(node.config.read_text().replace('[signer]\nkind = "cfssl"\n', ""))
    argv = [sys.executable, "-m", "join_agent", "--config", str(node.config), "--debug", "join",
            "--server", api.url, "--token-file", "-", "--ca-pin", api.ca_pin]  # fmt: skip
    r = subprocess.run(argv, input=TOKEN + "\n", capture_output=True, text=True, check=False,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert _csr_users(api) == ["system:bootstrap:abcdef"]


def test_serving_certificate_never_blocks_and_installs_once_approved(
    node: KubeNode, api: StandinApiServer
) -> None:
    node.write_config(signer__kubernetes={"serving": True})
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    (name,) = [k for k, v in api.csrs.items() if v["spec"]["signerName"].endswith("serving")]
    assert f"kubectl certificate approve {name}" in r.stdout
    st = node.run("status")
    assert (
        f"Serving:      serving certificate pending approval: `kubectl certificate approve {name}`"
        in st.stdout
    )
    # Pending approval is normal, not a problem: the kubelet serves its own meanwhile.
    assert "serving" not in "".join(json.loads(node.run("status", "--json").stdout)["problems"])
    spec = api.csrs[name]["spec"]
    assert spec["usages"] == ["digital signature", "key encipherment", "server auth"]
    assert spec["username"] == "system:node:worker-1"
    # A second pass does not pile up another request while this one waits.
    assert node.run("join").returncode == 0
    assert sum(v["spec"]["signerName"].endswith("serving") for v in api.csrs.values()) == 1
    api.approve(name)
    time.sleep(0.3)
    assert node.run("join").returncode == 0
    served = _leaf(node, "kubelet-server")
    eku = served.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(str(a) for a in sans.get_values_for_type(x509.IPAddress)) == [
        "192.0.2.10", "fd00::10",
    ]  # fmt: skip
    key = (node.pki / "kubelet-server-current.pem").read_bytes()
    assert b"PRIVATE KEY" in key
    assert not (node.pki / "kubelet-server-pending.key").exists()
    assert oct((node.pki / "kubelet-server-current.pem").stat().st_mode & 0o777) == "0o600"
    assert "Serving:      current" in node.run("status").stdout


def test_secrets_never_reach_output_with_debug(node: KubeNode, api: StandinApiServer) -> None:
    outputs = []
    for args in (("join",), ("join",), ("status",), ("check",), ("renew",)):
        r = node.run("--debug", *args)
        outputs.append(r.stdout + r.stderr)
    api.jws_secret_override["abcdef"] = "ffffffffffffffff"
    node.current.unlink()
    r = node.run("--debug", "join")
    outputs.append(r.stdout + r.stderr)
    text = "\n".join(outputs)
    assert "join_agent" in text  # debug logging was on
    assert SECRET not in text
    assert "PRIVATE KEY" not in text


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def test_check_runs_discovery_without_asking_for_a_certificate(
    node: KubeNode, api: StandinApiServer
) -> None:
    r = node.run("check")
    assert "PASS  bootstrap token:" in r.stdout
    assert "PASS  discovery token: token discovery at" in r.stdout
    assert "clock vs https://127.0.0.1" in r.stdout
    assert api.csrs == {}
    api.jws_secret_override["abcdef"] = "ffffffffffffffff"
    r = node.run("check")
    assert "FAIL  discovery token: cluster-info at" in r.stdout
    assert r.returncode == 1


def test_run_keeps_retrying_while_nobody_approves(tmp_path: Path) -> None:
    with standin_node(
        tmp_path,
        config=dict(signer__kubernetes={"csr_timeout": "1s"}, kubelet={"manage": False}),
        approver="never",
    ) as (api, n):
        daemon = n.start()
        try:
            doc = n.wait_status(lambda d: ((d.get("renewal") or {}).get("failures") or 0) >= 2)
            assert "was not approved and signed within 1s" in str(doc["last_error"])
            api.approver = "auto"  # an administrator fixes the auto-approval
            doc = n.wait_status(lambda d: d.get("state") == "valid")
        finally:
            stop(daemon)
        assert len(api.csrs) >= 3
        assert doc["certificate"]["node"] == "worker-1"


def test_a_new_cluster_ca_is_learned_again_through_the_token(tmp_path: Path) -> None:
    """The API server moves to a new CA (the operator added its pin): the node's certificate
    and ca_file no longer work, so it rediscovers with the token; both CAs stay trusted."""
    with StandinApiServer(tmp_path / "old") as old, StandinApiServer(tmp_path / "new") as new:
        for api in (old, new):
            api.add_token(TOKEN)
        n = KubeNode(root=tmp_path / "n", server=old.url, pin=old.ca_pin)
        n.root.mkdir()
        n.write_token(TOKEN)
        n.write_config()
        assert n.run("join").returncode == 0
        n.write_config(
            cluster={"server": new.url},
            signer__kubernetes={"ca_pins": [old.ca_pin, new.ca_pin]},
        )
        r = n.run("--debug", "join")
        assert r.returncode == 0, r.stderr
        assert "node_credentials_refused" in r.stderr
        assert _csr_users(new) == ["system:bootstrap:abcdef"]
        assert compat.signed_by(_leaf(n), new.ca_cert)
        assert compat.load_pem_certificates(n.ca_file.read_bytes()) == [new.ca_cert, old.ca_cert]


def test_run_installs_the_serving_certificate_once_someone_approves_it(tmp_path: Path) -> None:
    config: dict[str, dict[str, object]] = {
        "signer__kubernetes": {"serving": True},
        "kubelet": {"manage": False},
    }
    with standin_node(tmp_path, config=config) as (api, n):
        daemon = n.start()
        try:
            doc = n.wait_status(lambda d: (d.get("serving") or {}).get("state") == "pending")
            assert doc["state"] == "valid"  # the client certificate did not wait for it
            name = doc["serving"]["name"]
            api.approve(name)
            doc = n.wait_status(lambda d: (d.get("serving") or {}).get("state") == "current")
            assert status_keys.undocumented(doc) == set()  # docs/status.md lists every key
        finally:
            stop(daemon)
        assert doc["serving"]["present"] is True
        assert (n.pki / "kubelet-server-current.pem").exists()
        serving = [v for v in api.csrs.values() if v["spec"]["signerName"].endswith("serving")]
        assert len(serving) == 1


def test_reset_removes_the_serving_certificate_and_its_request(
    node: KubeNode, api: StandinApiServer
) -> None:
    node.write_config(signer__kubernetes={"serving": True})
    assert node.run("join").returncode == 0
    assert (node.pki / "kubelet-server-pending.key").exists()
    assert (node.state / "serving-request.json").exists()
    r = node.run("reset", "--force")
    assert r.returncode == 0, r.stderr
    assert "kubelet-server-pending.key" in r.stdout
    left = sorted(p.name for p in node.pki.iterdir())
    assert left == []
    assert not (node.state / "serving-request.json").exists()


def test_a_renamed_node_joins_again_with_the_token(node: KubeNode, api: StandinApiServer) -> None:
    """The approver renews a node's certificate only under its own name: after a rename the
    old certificate cannot ask for the new one, so the token does."""
    assert node.run("join").returncode == 0
    node.write_config(node={"name": "worker-9", "addresses": ["192.0.2.10"]})
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert _csr_users(api) == ["system:bootstrap:abcdef", "system:bootstrap:abcdef"]
    assert _leaf(node).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:node:worker-9"
    )


def test_a_clone_asks_with_the_token_not_the_templates_certificate(
    node: KubeNode, api: StandinApiServer, tmp_path: Path
) -> None:
    """Credentials made on another machine are never presented, not even to renew: the
    clone's request goes as the bootstrap token (docs/install.md, "Building a node image")."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("a" * 32 + "\n")
    node.write_config(node={"fingerprint_files": [str(machine_id)]})
    assert node.run("join").returncode == 0
    machine_id.write_text("c" * 32 + "\n")  # the same disk on another machine
    r = node.run("join")
    assert r.returncode == 0, r.stderr
    assert _csr_users(api) == ["system:bootstrap:abcdef", "system:bootstrap:abcdef"]
    assert json.loads(node.run("status", "--json").stdout)["state"] == "valid"  # its own now


def test_check_tells_whether_the_node_object_is_this_machines(
    node: KubeNode, api: StandinApiServer, tmp_path: Path
) -> None:
    """A clone that kept its hostname registers the template's name: its kubelet and the
    template's would fight over one Node. The kubelet reports which machine it runs on
    (nodeInfo machineID, systemUUID); check compares that with this machine's ids."""
    machine_id = tmp_path / "etc" / "machine-id"
    machine_id.parent.mkdir()
    machine_id.write_text("a" * 32 + "\n")
    node.write_config(node={"fingerprint_files": [str(machine_id)]})
    assert node.run("join").returncode == 0

    def said() -> list[str]:
        return [line for line in node.run("check").stdout.splitlines() if " node: " in line]

    assert said() == ["PASS  node: no Node worker-1 is registered yet"]
    info = {"machineID": "a" * 32, "systemUUID": "4c4c4544-0000-1000-8000-000000000001"}
    api.nodes["worker-1"] = {"kind": "Node", "status": {"nodeInfo": info}}
    assert said() == ["PASS  node: Node worker-1 is this machine's"]
    info["machineID"] = "b" * 32  # the template's kubelet registered it
    assert said() == [
        f"FAIL  node: Node worker-1 is another machine's (its machine-id is {'b' * 32}): two "
        "machines share the name; give this one its own [node] name"
    ]
    assert ("GET", "/api/v1/nodes/worker-1", "system:node:worker-1") in api.requests


def test_run_does_not_pile_up_requests_after_a_denial(tmp_path: Path) -> None:
    config: dict[str, dict[str, object]] = {"kubelet": {"manage": False}}
    with standin_node(tmp_path, config=config, approver="deny") as (api, n):
        daemon = n.start()
        try:
            n.wait_status(lambda d: "was denied" in str(d.get("last_error")))
            time.sleep(4)  # retry_max is 2 s: without the hold there would be more requests
            assert len(api.csrs) == 1
            api.approver = "auto"
            r = n.run("renew")  # the operator asks again: no hold for that
            assert r.returncode == 0, r.stderr + r.stdout
            n.wait_status(lambda d: d.get("state") == "valid")
        finally:
            stop(daemon)
        assert len(api.csrs) == 2
