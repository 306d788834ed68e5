"""Discovery's pure parts: cluster-info's ConfigMap, the discovery kubeconfig, the pin."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from join_agent.errors import CAResponseError, ConfigError, JoinAgentError, TrustError
from join_agent.pki import compat, pinning
from join_agent.signers.kubernetes import discovery
from tests.lab.certs import CA, NOW, authority, cert_pem, ec_key

SKEW = dt.timedelta(minutes=2)


def _kubeconfig(ca_pem: bytes, server: str = "https://10.0.0.5:6443", **cluster: str) -> str:
    entry = {"server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}
    entry.update(cluster)
    return yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "", "cluster": entry}]}
    )


def test_cluster_info_kubeconfig_with_an_unnamed_cluster() -> None:
    ca = CA.create()
    server, pem = discovery.kubeconfig_cluster(_kubeconfig(cert_pem(ca.cert)), "x")
    assert server == "https://10.0.0.5:6443"
    assert compat.load_pem_certificates(pem) == [ca.cert]


def test_current_context_chooses_the_cluster() -> None:
    a, b = CA.create(), CA.create()
    doc = {
        "clusters": [
            {"name": "a", "cluster": {"server": "https://a", "certificate-authority-data":
                                      base64.b64encode(cert_pem(a.cert)).decode()}},
            {"name": "b", "cluster": {"server": "https://b", "certificate-authority-data":
                                      base64.b64encode(cert_pem(b.cert)).decode()}},
        ],
        "contexts": [{"name": "ctx", "context": {"cluster": "b"}}],
        "current-context": "ctx",
    }  # fmt: skip
    assert discovery.kubeconfig_cluster(yaml.safe_dump(doc), "x")[0] == "https://b"


def test_a_ca_file_next_to_the_discovery_file(tmp_path: Path) -> None:
    ca = CA.create()
    (tmp_path / "ca.crt").write_bytes(cert_pem(ca.cert))
    text = yaml.safe_dump(
        {"clusters": [{"name": "k", "cluster": {"server": "https://k",
                                                "certificate-authority": "ca.crt"}}]}
    )  # fmt: skip
    _, pem = discovery.kubeconfig_cluster(text, "x", base=tmp_path, read=lambda p: p.read_bytes())
    assert pem == cert_pem(ca.cert)
    with pytest.raises(ConfigError, match="cannot read the CA"):
        discovery.kubeconfig_cluster(
            text.replace("ca.crt", "gone.crt"), "x", base=tmp_path, read=lambda p: p.read_bytes()
        )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a list", "no top-level mapping"),
        ("clusters: []", "without a cluster"),
        (_kubeconfig(b"x", server="http://10.0.0.5:6443"), "not an https URL"),
        (yaml.safe_dump({"clusters": [{"name": "", "cluster": {"server": "https://a"}}]}),
         "without CA data"),
        (_kubeconfig(b"", **{"certificate-authority-data": "!!"}), "not base64"),
    ],
)  # fmt: skip
def test_unusable_kubeconfigs(text: str, problem: str) -> None:
    with pytest.raises(CAResponseError, match=problem):
        discovery.kubeconfig_cluster(text, "cluster-info")


def test_accept_cas_requires_a_pin_and_says_which_pin_it_saw() -> None:
    ca = CA.create()
    pin = pinning.spki_pin(ca.cert)
    assert discovery.accept_cas(cert_pem(ca.cert), (pin,), now=NOW, clock_skew=SKEW, what="x") == (
        ca.cert,
    )
    with pytest.raises(TrustError, match=f"pin {pin}.*matches none of signer.kubernetes.ca_pins"):
        discovery.accept_cas(
            cert_pem(ca.cert), ("sha256:" + "0" * 64,), now=NOW, clock_skew=SKEW, what="x"
        )


def test_accept_cas_keeps_only_what_the_pin_vouches_for() -> None:
    root = CA.create(common_name="root")
    inter = authority("intermediate", issuer=root)
    stranger = CA.create(common_name="stranger")
    bundle = cert_pem(inter.cert) + cert_pem(root.cert) + cert_pem(stranger.cert)
    got = discovery.accept_cas(
        bundle, (pinning.spki_pin(root.cert),), now=NOW, clock_skew=SKEW, what="x"
    )
    assert set(got) == {inter.cert, root.cert}


def test_accept_cas_refuses_a_leaf_even_when_pinned() -> None:
    ca = CA.create()
    leaf = ca.issue(ec_key().public_key())
    with pytest.raises(TrustError, match="not a CA"):
        discovery.accept_cas(
            cert_pem(leaf), (pinning.spki_pin(leaf),), now=NOW, clock_skew=SKEW, what="x"
        )


def test_without_pins_every_ca_in_a_trusted_file_is_kept() -> None:
    a, b = CA.create(), CA.create()
    got = discovery.accept_cas(
        cert_pem(a.cert) + cert_pem(b.cert), None, now=NOW, clock_skew=SKEW, what="x"
    )
    assert got == (a.cert, b.cert)
    with pytest.raises(CAResponseError, match="no PEM CA certificate"):
        discovery.accept_cas(b"junk", None, now=NOW, clock_skew=SKEW, what="x")


def test_cluster_info_data_shapes() -> None:
    body = json.dumps({"kind": "ConfigMap", "data": {"kubeconfig": "k", "jws-kubeconfig-a": "j"}})
    assert discovery.cluster_info_data(body.encode(), "x")["kubeconfig"] == "k"
    for bad in (b"[]", b"{}", b'{"data": {"a": 1}}', b"\xff"):
        with pytest.raises(CAResponseError):
            discovery.cluster_info_data(bad, "x")


@given(st.text(max_size=400))
def test_garbage_kubeconfigs_raise_only_our_errors(text: str) -> None:
    try:
        discovery.kubeconfig_cluster(text, "x")
    except JoinAgentError as e:
        assert str(e)
