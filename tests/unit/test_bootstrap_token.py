"""Bootstrap tokens and the cluster-info JWS, checked against an independent computation
(the openssl CLI's HMAC over the same base64url signing input)."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from join_agent.errors import ConfigError
from join_agent.signers.kubernetes.bootstrap_token import (
    BootstrapToken,
    detached_signature,
    parse_token,
    signature_valid,
)
from tests.standins.kube_apiserver import JWS_VECTOR, KUBERNETES_JWS_TEST_VECTOR

TOKEN = BootstrapToken(id="abcdef", secret="0123456789abcdef")
KUBECONFIG = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://10.0.0.5:6443
  name: ""
contexts: null
current-context: ""
kind: Config
preferences: {}
users: null
"""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _openssl_jws(payload: str, token_id: str, secret: str) -> str:
    header = _b64url(b'{"alg":"HS256","kid":"' + token_id.encode() + b'"}')
    signing_input = f"{header}.{_b64url(payload.encode())}"
    mac = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", secret, "-binary"],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return f"{header}..{_b64url(mac)}"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_signature_matches_openssl() -> None:
    ours = detached_signature(KUBECONFIG, TOKEN)
    assert ours == _openssl_jws(KUBECONFIG, TOKEN.id, TOKEN.secret)
    assert ours.startswith("eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9..")
    assert signature_valid(ours, KUBECONFIG, TOKEN)


def test_a_signature_with_another_secret_or_payload_is_refused() -> None:
    good = detached_signature(KUBECONFIG, TOKEN)
    other = BootstrapToken(id="abcdef", secret="ffffffffffffffff")
    assert not signature_valid(detached_signature(KUBECONFIG, other), KUBECONFIG, TOKEN)
    assert not signature_valid(good, KUBECONFIG + " ", TOKEN)
    assert not signature_valid(good.replace("..", ".x."), KUBECONFIG, TOKEN)
    # A header naming no algorithm ("none") with an empty signature must not pass.
    none_header = _b64url(b'{"alg":"none","kid":"abcdef"}')
    assert not signature_valid(f"{none_header}..", KUBECONFIG, TOKEN)


@pytest.mark.parametrize(
    "bad",
    ["", "zzzzzz", "zzzzzz.yyyyyyyyyyyyyyy", "ZZZZZZ.yyyyyyyyyyyyyyyy", "zzzzzz:yyyyyyyyyyyyyyyy"],
)
def test_malformed_tokens_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ConfigError, match="bootstrap token of the form") as e:
        parse_token(bad, "the file")
    if bad:
        assert bad not in str(e.value)


def test_token_repr_hides_the_secret() -> None:
    t = parse_token("  abcdef.0123456789abcdef\n", "x")
    assert t == TOKEN
    assert "0123456789abcdef" not in repr(t) + str(t) + f"{t}"
    assert t.user == "system:bootstrap:abcdef"


@given(st.text(max_size=200))
def test_signature_valid_never_raises(garbage: str) -> None:
    assert signature_valid(garbage, KUBECONFIG, TOKEN) is (
        garbage == detached_signature(KUBECONFIG, TOKEN)
    )


def test_signature_matches_upstream_and_the_standin_vectors() -> None:
    """Kubernetes' own jws_test.go vector (any key id and secret) and the stand-in's fixed
    vector: three independent computations agree with ours."""
    content, token_id, secret, expected = KUBERNETES_JWS_TEST_VECTOR
    assert detached_signature(content, BootstrapToken(id=token_id, secret=secret)) == expected
    t = parse_token(JWS_VECTOR.token, "vector")
    assert detached_signature(JWS_VECTOR.kubeconfig, t) == JWS_VECTOR.jws
    assert signature_valid(JWS_VECTOR.jws, JWS_VECTOR.kubeconfig, t)
