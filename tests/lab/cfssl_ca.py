"""A real CFSSL CA (Debian's golang-cfssl) on 127.0.0.1, for tests, benchmarks and the demo.

``cfssl gencert -initca`` makes the CA; ``cfssl serve`` serves it with a seed-style config:
profiles ``kubelet`` and ``client`` guarded by an auth key, and a default profile (also
keyed) that issues server-only certificates, which is what an unknown profile name gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# /api/v1/cfssl/info from wherever it runs (``answers_from``: inside a namespace).
_PROBE = (
    "import sys, urllib.request\n"
    "req = urllib.request.Request(sys.argv[1] + '/api/v1/cfssl/info', data=b'{}')\n"
    "urllib.request.urlopen(req, timeout=1)\n"
)


def cfssl_binary() -> str:
    found = shutil.which("cfssl")
    if not found:
        raise RuntimeError("cfssl is not installed: apt-get install golang-cfssl")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed_config(
    auth_key_hex: str, expiry: str = "8760h", backdate: str | None = None
) -> dict[str, Any]:
    def profile(usages: list[str]) -> dict[str, Any]:
        p: dict[str, Any] = {"auth_key": "node-key", "expiry": expiry, "usages": usages}
        if backdate:
            p["backdate"] = backdate
        return p

    return {
        "signing": {
            "default": profile(["signing", "key encipherment", "server auth"]),
            "profiles": {
                "kubelet": profile(["signing", "key encipherment", "client auth", "server auth"]),
                "client": profile(["signing", "key encipherment", "client auth"]),
            },
        },
        "auth_keys": {"node-key": {"type": "standard", "key": auth_key_hex}},
    }


class CfsslCA:
    """One CA directory and, while started, one ``cfssl serve`` process."""

    def __init__(
        self,
        workdir: Path,
        *,
        cn: str = "join-agent test CA",
        expiry: str = "8760h",
        backdate: str | None = None,
        key_algo: str = "ecdsa",
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.auth_key_hex = secrets.token_hex(16)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca_pem = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca-key.pem"
        self.config_file = self.dir / "ca-config.json"
        self.log_file = self.dir / "cfssl-serve.log"
        csr = {"CN": cn, "key": {"algo": key_algo, "size": 256 if key_algo == "ecdsa" else 2048}}
        out = subprocess.run(
            [cfssl_binary(), "gencert", "-initca", "-"],
            input=json.dumps(csr).encode(),
            capture_output=True,
            check=True,
        )
        doc = json.loads(out.stdout)
        self.ca_pem.write_text(doc["cert"])
        self.ca_key.write_text(doc["key"])
        self.ca_key.chmod(0o600)
        self.write_config(seed_config(self.auth_key_hex, expiry, backdate))

    def write_config(self, doc: dict[str, Any]) -> None:
        self.config_file.write_text(json.dumps(doc, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pin(self) -> str:
        """The CA's pin, computed the openssl way (DER SPKI, SHA-256) without our code."""
        der = subprocess.run(
            ["openssl", "x509", "-pubkey", "-noout", "-in", str(self.ca_pem)],
            capture_output=True,
            check=True,
        ).stdout
        spki = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "der"],
            input=der,
            capture_output=True,
            check=True,
        ).stdout
        return "sha256:" + hashlib.sha256(spki).hexdigest()

    def write_auth_key(self, path: Path, key_hex: str | None = None) -> Path:
        path.write_text((key_hex or self.auth_key_hex) + "\n")
        path.chmod(0o600)
        return path

    def serve_argv(self, address: str = "127.0.0.1") -> list[str]:
        """``cfssl serve`` of this CA on ``address``:``self.port``."""
        return [
            cfssl_binary(), "serve", f"-address={address}", f"-port={self.port}",
            f"-ca={self.ca_pem}", f"-ca-key={self.ca_key}", f"-config={self.config_file}",
        ]  # fmt: skip

    def start(self, port: int = 0) -> None:
        self.port = port or free_port()
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            self.serve_argv(),
            stdout=log,
            stderr=log,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cfssl serve exited: {self.log_file.read_text()[-2000:]}")
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("cfssl serve did not answer within 15 s")

    def answers(self) -> bool:
        url = self.url + "/api/v1/cfssl/info"
        req = urllib.request.Request(url, data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def answers_from(self, netns: str, url: str) -> bool:
        """Whether the CA at ``url`` answers a client in network namespace ``netns``."""
        r = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _PROBE, url],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        return r.returncode == 0

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def running_ca(workdir: Path, **kwargs: Any) -> Iterator[CfsslCA]:
    ca = CfsslCA(workdir, **kwargs)
    ca.start()
    try:
        yield ca
    finally:
        ca.stop()
