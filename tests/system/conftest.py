"""Fixtures for the system tests: the cached bookworm tree, machines booted from it, and a
node inside one with the .deb installed, a real CFSSL CA and a stand-in kubelet.

The CA runs inside the machine (a transient unit, `cfssl serve` on its loopback), so the
machine's private network is all anything talks over. The kubelet is the stand-in of
tests/standins/kubelet.py (a real kubelet must never start here), copied in as a root-owned
script so that the agent's trust rules hold for it as for /usr/bin/kubelet.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.lab import toml
from tests.lab.cfssl_ca import CfsslCA
from tests.standins import KUBELET
from tests.system.machine import Machine, MachineError

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
CA_PORT = 8888
STANDIN = "/usr/local/libexec/kubelet-standin.py"
KUBELET_RECORD = "/run/kubelet-standin.jsonl"
DEB_IN_MACHINE = "/var/cache/join-agent"  # where examples/cloud-init.yaml expects it


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The cached tree (.ci/build-rootfs builds it once per package list)."""
    if os.geteuid() != 0:
        need("root", "systemd-nspawn and overlay mounts need root")
    r = subprocess.run(
        ["bash", str(REPO / ".ci" / "build-rootfs")],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        need("a bookworm rootfs", f".ci/build-rootfs failed: {r.stderr[-3000:]}")
    if shutil.which("systemd-nspawn") is None:
        need("systemd-nspawn", "apt-get install systemd-container")
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def machine(rootfs: Path, tmp_path: Path) -> Iterator[Machine]:
    """A fresh machine, not yet booted; destroyed (powered off, unmounted) afterwards."""
    m = Machine(rootfs, tmp_path / "machine", f"ja-{secrets.token_hex(3)}")
    try:
        yield m
    finally:
        m.destroy()


@dataclass
class SystemNode:
    """A booted machine with the .deb installed, its CA's files and a stand-in kubelet."""

    machine: Machine
    ca: CfsslCA

    @property
    def name(self) -> str:
        return self.machine.name

    # ------------------------------------------------------------ setting up

    def install(self, deb: Path) -> subprocess.CompletedProcess[str]:
        """`apt-get install` of the .deb, as examples/cloud-init.yaml does (bounded: apt must
        never wait for the service)."""
        target = self.machine.root / DEB_IN_MACHINE.lstrip("/") / deb.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, target)
        return self.machine.run(
            "apt-get", "install", "-y", "-q", "--no-install-recommends",
            f"{DEB_IN_MACHINE}/{deb.name}",
            env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=180,
        )  # fmt: skip

    def config(self, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
        doc: dict[str, dict[str, Any]] = {
            "cluster": {"server": "https://127.0.0.1:6443", "name": "lab"},
            # A private network has only loopback: the CSR's address is given.
            "node": {"addresses": ["192.0.2.10"]},
            "signer": {"kind": "cfssl"},
            "signer.cfssl": {
                "urls": [f"http://127.0.0.1:{CA_PORT}"],
                "profile": "kubelet",
                "ca_pins": [self.ca.pin],
            },
            "renewal": {"retry_min": "1s", "retry_max": "3s"},
            "kubelet": {
                "command": [
                    "/usr/bin/python3", STANDIN,
                    f"--standin-record={KUBELET_RECORD}", "--standin-healthz-port=10248",
                ],
                "stop_grace": "3s",
                "stable_after": "1s",
            },
        }  # fmt: skip
        for name, values in sections.items():
            doc.setdefault(name.replace("__", "."), {}).update(values)
        return doc

    def write_config(self, **sections: dict[str, Any]) -> None:
        doc = self.config(**sections)
        text = toml.document(doc)
        self.machine.write("/etc/join-agent/config.toml", text, 0o600)

    def write_credential(self) -> None:
        """The auth key as the systemd credential the unit loads (LoadCredential=)."""
        self.machine.write("/etc/credstore/cfssl-auth-key", self.ca.auth_key_hex + "\n", 0o600)

    def start_ca(self) -> None:
        inside = "/srv/ca"
        self.machine.run(
            "systemd-run", "--unit=cfssl-ca", "--quiet", "--",
            "cfssl", "serve", "-address=127.0.0.1", f"-port={CA_PORT}",
            f"-ca={inside}/ca.pem", f"-ca-key={inside}/ca-key.pem",
            f"-config={inside}/ca-config.json",
        )  # fmt: skip
        self.machine.wait("the CA answering", self._ca_answers, 30)

    def _ca_answers(self) -> bool:
        r = self.machine.run(
            "curl", "-sf", "-o", "/dev/null", "-d", "{}",
            f"http://127.0.0.1:{CA_PORT}/api/v1/cfssl/info", check=False,
        )  # fmt: skip
        return r.returncode == 0

    def stop_ca(self) -> None:
        self.machine.run("systemctl", "stop", "cfssl-ca", check=False)

    # ------------------------------------------------------------ looking

    def unit(self, name: str = "join-agent") -> dict[str, str]:
        return self.machine.show(
            name, "ActiveState", "SubState", "StatusText", "MainPID", "Result",
            "ExecMainStatus", "NRestarts", "ConditionResult", "UnitFileState",
        )  # fmt: skip

    def wait_active(self, name: str, timeout: float = 60) -> None:
        self.machine.wait(
            f"{name} active", lambda: self.unit(name)["ActiveState"] == "active", timeout
        )

    def status(self) -> tuple[int, dict[str, Any]]:
        r = self.machine.run("join-agent", "status", "--json", check=False)
        try:
            doc: dict[str, Any] = json.loads(r.stdout)
        except ValueError:
            raise MachineError(f"join-agent status printed no JSON: {r.stdout}{r.stderr}") from None
        return r.returncode, doc

    def wait_status_text(
        self, what: str, starts: str, timeout: float = 60, *, contains: str = ""
    ) -> str:
        """Wait for the unit's STATUS= line to start with ``starts`` and hold ``contains``."""

        def probe() -> str | None:
            text = self.unit()["StatusText"]
            return text if text.startswith(starts) and contains in text else None

        try:
            return self.machine.wait(what, probe, timeout)
        except MachineError as e:
            raise MachineError(f"{e}\n{self.agent_log()}") from None

    def kubelet_starts(self) -> list[dict[str, Any]]:
        # /run is the machine's own tmpfs: read it from inside.
        text = self.machine.run("cat", KUBELET_RECORD, check=False).stdout
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_kubelet_starts(self, timeout: float = 30) -> list[dict[str, Any]]:
        """The stand-in writes its record just after it starts, so a unit that is active
        may not have written it yet: wait for it."""
        return self.machine.wait("the kubelet's record", self.kubelet_starts, timeout)

    def agent_log(self, lines: int = 60) -> str:
        return self.machine.run(
            "journalctl", "--no-pager", "-u", "join-agent", "-n", str(lines), check=False
        ).stdout


@pytest.fixture
def system_node(machine: Machine, deb: Path) -> SystemNode:
    """Booted, the .deb installed, the CA's files in /srv/ca (not serving yet), the stand-in
    kubelet in place; no config, so the service is enabled and not running."""
    state = machine.boot()
    assert state == "running", f"{state}: {machine.console_tail()}"
    # The CA's files are made on the host with Debian's cfssl, inside the machine's tree.
    ca = CfsslCA(machine.root / "srv" / "ca")
    for path in (machine.root / "srv", *(machine.root / "srv").rglob("*")):
        os.chown(path, 0, 0)
    standin = machine.write(STANDIN, KUBELET.read_text(), 0o755)
    assert standin.is_file()
    node = SystemNode(machine=machine, ca=ca)
    node.install(deb)
    return node
