"""No secret in any output: every verb, with debug logging, on success and on failure.

Known secrets — the CFSSL auth key (both hex cases), the bootstrap token's secret, and the
private keys the node wrote — are looked for in everything the processes print: every log
line of `join`, `run` (the daemon and its worker children), `renew`, `status`, `check`,
and every error message.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import KubeNode, Node
from tests.standins.kube_apiserver import StandinApiServer

TOKEN = "qwerty.s3cr3ts3cr3ts3cr"


def _key_fragments(pki: Path) -> set[str]:
    """40-character slices of every private key's base64 body, and its DER in hex."""
    out: set[str] = set()
    for pem in [*pki.glob("*.pem"), *pki.glob("*.key")]:
        if pem.is_symlink():
            continue
        m = re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----(.+?)-----END", pem.read_bytes(), re.S)
        assert m, pem
        body = b"".join(m.group(1).split())
        out |= {body[i : i + 40].decode() for i in range(0, len(body) - 40, 40)}
        out.add(base64.b64decode(body).hex()[:64])
    return out


def _daemon_output(config: Path, seconds: float) -> str:
    """Run the daemon with --debug for a while, renew through it, and return its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    p = subprocess.Popen(
        [sys.executable, "-m", "join_agent", "--config", str(config), "--debug", "run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        time.sleep(seconds / 2)
        subprocess.run(
            [sys.executable, "-m", "join_agent", "--config", str(config), "--debug", "renew"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        time.sleep(seconds / 2)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    return out + err


def _assert_clean(text: str, secrets: set[str]) -> None:
    assert '"level": "info"' in text, "verbose (--debug) logging was not on"
    leaked = sorted(s for s in secrets if s and s in text)
    assert not leaked, f"secrets in the output: {[s[:6] + '…' for s in leaked]}"


def test_cfssl_path_prints_no_secret(node: Node) -> None:
    node.write_config(kubelet={"manage": False})
    outputs = []
    for args in (("join",), ("join",), ("status",), ("status", "--json"), ("check",)):
        r = node.run("--debug", *args)
        outputs.append(r.stdout + r.stderr)
    outputs.append(_daemon_output(node.config, 4.0))
    # Failures print the request context too: a wrong pin, a wrong key.
    node.write_config(signer__cfssl={"ca_pins": ["sha256:" + "0" * 64]})
    outputs.append(node.run("--debug", "join").stderr)
    node.write_config()
    node.auth_key.write_text("00" * 16 + "\n")
    outputs.append(node.run("--debug", "join").stderr)
    key = node.ca.auth_key_hex
    _assert_clean("\n".join(outputs), {key, key.upper(), *_key_fragments(node.pki)})


def test_kubernetes_path_prints_no_secret(tmp_path: Path) -> None:
    with StandinApiServer(tmp_path / "api") as api:
        api.add_token(TOKEN)
        n = KubeNode(root=tmp_path / "n", server=api.url, pin=api.ca_pin)
        n.root.mkdir()
        n.write_token(TOKEN)
        n.write_config(kubelet={"manage": False}, signer__kubernetes={"serving": True})
        outputs = []
        for args in (("join",), ("status",), ("check",), ("join",)):
            r = n.run("--debug", *args)
            outputs.append(r.stdout + r.stderr)
        outputs.append(_daemon_output(n.config, 4.0))
        api.expire_token(TOKEN)  # the 401 path names the token id, never its secret
        n.current.unlink()
        outputs.append(n.run("--debug", "join").stderr)
        text = "\n".join(outputs)
        assert "qwerty" in text  # the token id is public and helps the operator
        _assert_clean(text, {TOKEN, TOKEN.split(".")[1], *_key_fragments(n.pki)})
