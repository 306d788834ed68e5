"""Shared fixtures: the real CFSSL CA, a node's sandbox, the real kubectl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab import toml
from tests.lab.cfssl_ca import CfsslCA

IN_CI = os.environ.get("CI") == "true"
KUBECTL_DEFAULT = Path("/var/cache/join-agent-ci/kubernetes-client/usr/bin/kubectl")


def need(what: str, reason: str) -> None:
    """Skip for a missing prerequisite outside CI; in CI the install step owes it: fail."""
    if IN_CI:
        pytest.fail(f"{what} missing in CI: {reason}")
    pytest.skip(f"{what} missing: {reason}")


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = os.environ.get("JOIN_AGENT_KUBECTL") or str(KUBECTL_DEFAULT)
    if not Path(path).is_file():
        need("kubectl 1.20.2", "run `bash .ci/install-tools` (Debian's kubernetes-client)")
    return path


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb, built once per session by the one command an operator runs (or the one
    $JOIN_AGENT_TEST_DEB names: the system tests against another build)."""
    from tests.lab import deb as packages

    given = os.environ.get("JOIN_AGENT_TEST_DEB")
    if given:
        return Path(given)

    if os.geteuid() != 0:
        need("root", "the build installs its build dependencies with apt, the tests install it")
    for name, package in (("apt-get", "apt (a Debian system)"), ("dpkg-deb", "dpkg")):
        if shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            need(name, f"apt-get install {package} (or run `bash .ci/install-tools`)")
    from join_agent import __version__

    path = packages.build(tmp_path_factory.mktemp("dist"))
    assert path.name == f"join-agent_{__version__}_all.deb"
    return path


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CfsslCA]:
    if not shutil.which("cfssl"):
        need("cfssl", "apt-get install golang-cfssl")
    authority = CfsslCA(tmp_path_factory.mktemp("ca"))
    authority.start()
    try:
        yield authority
    finally:
        authority.stop()


@dataclass
class Sandbox:
    """One node's sandbox: its config and every path join-agent writes."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def current(self) -> Path:
        return self.pki / "kubelet-client-current.pem"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "etc" / "kubelet.conf"

    @property
    def ca_file(self) -> Path:
        return self.root / "etc" / "ca.crt"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def auth_key(self) -> Path:
        return self.root / "cfssl-auth-key"

    @property
    def token_file(self) -> Path:
        return self.root / "bootstrap-token"

    def base_config(self) -> dict[str, dict[str, Any]]:
        return {
            "node": {"name": "worker-1", "addresses": ["192.0.2.10", "fd00::10"]},
            "paths": {
                "pki_dir": str(self.pki),
                "kubeconfig": str(self.kubeconfig),
                "ca_file": str(self.ca_file),
                "state_dir": str(self.state),
            },
        }

    def write_config(self, **sections: dict[str, Any]) -> Path:
        """Write config.toml: ``base_config()``, with ``sections`` merged over it."""
        doc = self.base_config()
        for name, values in sections.items():
            doc.setdefault(name.replace("__", "."), {}).update(values)
        self.config.write_text(toml.document(doc))
        return self.config

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI as its own process, as an operator or cloud-init would."""
        full_env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "join_agent", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=120,
            check=False,
        )

    def start(self, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`join-agent run` as its own process (stderr piped, for the caller to read)."""
        full = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "JOIN_AGENT_TEST_FAULT")
        }
        full.update(env or {})
        return subprocess.Popen(
            [sys.executable, "-m", "join_agent", "--config", str(self.config), "run"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full,
        )  # fmt: skip

    def wait_status(
        self, ok: Callable[[dict[str, Any]], bool], timeout: float = 40.0
    ) -> dict[str, Any]:
        """Poll `status --json` until ``ok`` holds; the last document otherwise fails the test."""
        end = time.monotonic() + timeout
        doc: dict[str, Any] = {}
        while time.monotonic() < end:
            r = self.run("status", "--json")
            if r.stdout:
                doc = json.loads(r.stdout)
                if ok(doc):
                    return doc
            time.sleep(0.3)
        raise AssertionError(f"status never got there: {json.dumps(doc)[:3000]}")

    @property
    def kubelet_record(self) -> Path:
        """Where a stand-in kubelet started with ``--standin-record`` writes its starts."""
        return self.root / "kubelet.jsonl"

    def kubelet_starts(self) -> list[dict[str, Any]]:
        """The stand-in kubelet's starts, one record each (tests/standins/kubelet.py)."""
        if not self.kubelet_record.exists():
            return []
        text = self.kubelet_record.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def tree(self) -> dict[str, bytes | str]:
        """Every file and link under the node's root but its inputs: proves "nothing changed"."""
        out: dict[str, bytes | str] = {}
        for p in sorted(self.root.rglob("*")):
            rel = str(p.relative_to(self.root))
            if p in (self.config, self.auth_key, self.token_file) or rel.startswith("state/lock"):
                continue
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
        return out


@dataclass
class Node(Sandbox):
    """A node that joins the CFSSL CA ``ca``."""

    ca: CfsslCA

    def base_config(self) -> dict[str, dict[str, Any]]:
        return {
            "cluster": {"server": "https://127.0.0.1:6443", "name": "lab"},
            **super().base_config(),
            "signer": {"kind": "cfssl"},
            "signer.cfssl": {
                "urls": [self.ca.url],
                "profile": "kubelet",
                "auth_key_file": str(self.auth_key),
                "ca_pins": [self.ca.pin],
            },
        }


@dataclass
class KubeNode(Sandbox):
    """A node that joins an API server (real or stand-in) with a bootstrap token."""

    server: str
    pin: str

    def base_config(self) -> dict[str, dict[str, Any]]:
        return {
            "cluster": {"server": self.server, "name": "lab"},
            **super().base_config(),
            "signer": {"kind": "kubernetes"},
            "signer.kubernetes": {
                "bootstrap_token_file": str(self.token_file),
                "ca_pins": [self.pin],
                "csr_timeout": "20s",
            },
            "renewal": {"retry_min": "1s", "retry_max": "2s"},
        }

    def write_token(self, token: str) -> None:
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)


def alive(pid: int) -> bool:
    """``pid`` runs and is not a zombie (a child nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def stop(p: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit in 20 s."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def kubectl_view(kubectl: str, kubeconfig: Path, *, flatten: bool = False) -> dict[str, Any]:
    """`kubectl config view --raw` (with --flatten, kubectl reads the referenced files)."""
    argv = [kubectl, "--kubeconfig", str(kubeconfig), "config", "view", "--raw", "-o", "json"]
    if flatten:
        argv.append("--flatten")
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


@pytest.fixture
def node(tmp_path: Path, ca: CfsslCA) -> Node:
    n = Node(root=tmp_path / "node", ca=ca)
    n.root.mkdir()
    ca.write_auth_key(n.auth_key)
    n.write_config()
    return n
