"""Node images (docs/install.md, "Building a node image"): a joined machine cloned, and an
image prepared with `reset --for-image` and booted as two machines. Real `cfssl serve`, the
real CLI and `join-agent run` with the stand-in kubelet; the machine's ids are files the
config names (`[node] fingerprint_files`), rewritten between "machines" as a hypervisor's
clone would change them."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import Node, stop
from tests.lab.cfssl_ca import CfsslCA, free_port
from tests.standins import kubelet_command


class Machine:
    """The ids one machine offers: a machine-id and a DMI product_uuid stand-in."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.machine_id, self.product_uuid = root / "machine-id", root / "product_uuid"

    def be(self, machine_id: str, product_uuid: str) -> None:
        self.machine_id.write_text(machine_id + "\n")
        self.product_uuid.write_text(product_uuid + "\n")

    @property
    def files(self) -> list[str]:
        return [str(self.machine_id), str(self.product_uuid)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def private_key(pem: bytes) -> bytes:
    found = re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                      pem, re.S)  # fmt: skip
    assert found is not None
    return found.group(0)


@pytest.fixture
def setup(tmp_path: Path, ca: CfsslCA) -> tuple[Node, Machine]:
    n = Node(root=tmp_path / "node", ca=ca)
    n.root.mkdir()
    ca.write_auth_key(n.auth_key)
    m = Machine(tmp_path / "machine")
    port = free_port()
    n.write_config(
        node={"fingerprint_files": m.files},
        renewal={"retry_min": "1s", "retry_max": "3s"},
        kubelet={
            "command": kubelet_command(
                f"--standin-record={n.kubelet_record}",
                f"--standin-healthz-port={port}",
                f"--standin-credentials={n.current}",
            ),
            "healthz_url": f"http://127.0.0.1:{port}/healthz",
            "stop_grace": "5s",
        },
    )
    return n, m


def test_a_clone_enrolls_afresh_and_never_presents_the_template_key(
    setup: tuple[Node, Machine],
) -> None:
    n, m = setup
    m.be("a" * 32, "4c4c4544-0000-1000-8000-template0001")
    joined = n.run("join")
    assert joined.returncode == 0, joined.stderr
    template = n.current.read_bytes()
    mine = [line for line in n.run("check").stdout.splitlines() if " machine: " in line]
    assert mine == [
        f"PASS  machine: identified by {m.machine_id}, {m.product_uuid}; the credentials were "
        "made on this machine"
    ]
    # The clone: the same disk on another VM. The hypervisor gave it a new firmware UUID;
    # the machine-id came with the disk, as it does from a template nobody prepared.
    m.be("a" * 32, "4c4c4544-0000-1000-8000-clone0000002")
    told = n.run("status", "--json")
    doc = json.loads(told.stdout)
    assert (told.returncode, doc["state"]) == (2, "mismatched"), told.stdout
    assert any("made on another machine" in p and "product_uuid" in p for p in doc["problems"])
    checked = n.run("check").stdout.splitlines()
    assert [line for line in checked if line.startswith("FAIL  machine: ")] == [
        "FAIL  machine: "
        + next(p for p in doc["problems"] if "another machine" in p)[
            : -len(" (or run `join-agent join`)")
        ]
    ]

    agent = n.start()
    try:
        doc = n.wait_status(
            lambda d: d["state"] == "valid" and (d.get("kubelet") or {}).get("state") == "running",
            timeout=60,
        )
    finally:
        stop(agent)
    fresh = n.current.read_bytes()
    assert private_key(fresh) != private_key(template)
    record = json.loads((n.state / "machine.json").read_text())
    assert record["serial"] == doc["certificate"]["serial"]
    starts = n.kubelet_starts()
    assert starts, "the kubelet never started"
    assert [s["credentials_sha256"] for s in starts] == [sha256(fresh)] * len(starts)
    # And the template itself, booted again on its own ids, is the clone's stranger now:
    # its files (the clone's) are another machine's credentials.
    m.be("a" * 32, "4c4c4544-0000-1000-8000-template0001")
    assert json.loads(n.run("status", "--json").stdout)["state"] == "mismatched"


def test_an_image_prepared_for_cloning_joins_as_each_machine(
    setup: tuple[Node, Machine], tmp_path: Path
) -> None:
    n, m = setup
    m.be("b" * 32, "4c4c4544-0000-1000-8000-builder00001")
    assert n.run("join").returncode == 0
    prepared = n.run("reset", "--for-image")
    assert prepared.returncode == 0, prepared.stderr
    left = sorted(str(p.relative_to(n.root)) for p in n.root.rglob("*") if not p.is_dir())
    assert left == ["cfssl-auth-key", "config.toml"], left  # the package's inputs alone
    image = tmp_path / "image"
    shutil.copytree(n.root, image, symlinks=True)

    keys = []
    for i, uuid in enumerate(
        ("4c4c4544-0000-1000-8000-machine00001", "4c4c4544-0000-1000-8000-machine00002")
    ):
        shutil.rmtree(n.root)
        shutil.copytree(image, n.root, symlinks=True)  # the image, booted
        m.be(f"{i + 1}" * 32, uuid)
        agent = n.start()
        try:
            doc = n.wait_status(
                lambda d: d["state"] == "valid" and d["health"] == "healthy", timeout=60
            )
        finally:
            stop(agent)
        keys.append(private_key(n.current.read_bytes()))
        record = json.loads((n.state / "machine.json").read_text())
        assert record["serial"] == doc["certificate"]["serial"]
    assert keys[0] != keys[1]
