"""The real control plane, once per session, for every test in tests/kube/ (marker `kube`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.lab.kube_cp import ControlPlane, running_control_plane

KUBE_BIN_DEFAULT = Path("/var/cache/join-agent-ci/kube-v1.20.2/bin")
KUBE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this folder's: mark ours alone.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.kube)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory, kubectl: str) -> Iterator[ControlPlane]:
    bin_dir = Path(os.environ.get("JOIN_AGENT_KUBE_BIN") or KUBE_BIN_DEFAULT)
    missing = [b for b in KUBE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        need(
            f"{', '.join(missing)} v1.20.2",
            f"not in {bin_dir}: run `bash .ci/build-kube` (builds them from Debian's sources, "
            "≈ 5 min) and point JOIN_AGENT_KUBE_BIN at the folder it prints",
        )
    with running_control_plane(tmp_path_factory.mktemp("kube"), bin_dir, kubectl) as cp:
        yield cp
