"""Fixtures for the hostile-CA suite: the stand-in CFSSL and a node whose config pins it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import Node

from .standin import StandInCFSSL


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInCFSSL]:
    server = StandInCFSSL().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def node(tmp_path: Path, standin: StandInCFSSL) -> Node:
    """A node configured for the stand-in (one URL, its pin, its auth key); honest script."""
    standin.script()
    # Node wants a CfsslCA for .url and .pin only; the stand-in has both.
    n = Node(root=tmp_path / "node", ca=cast(Any, standin))
    n.root.mkdir()
    n.auth_key.write_text(standin.auth_key_hex + "\n")
    n.auth_key.chmod(0o600)
    n.write_config()
    return n
