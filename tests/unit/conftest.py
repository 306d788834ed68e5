"""Shared fixtures: keys and CAs are made once per session (RSA generation is slow)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.lab.certs import CA, ec_key, rsa_key


@pytest.fixture(scope="session")
def ca() -> CA:
    """The pinned CA (EC P-256)."""
    return CA.create()


@pytest.fixture(scope="session")
def rsa_ca() -> CA:
    return CA.create(rsa_key(), common_name="Test RSA CA")


@pytest.fixture(scope="session")
def node_key() -> ec.EllipticCurvePrivateKey:
    """The key this node generated and put into its CSR."""
    return ec_key()


@pytest.fixture(scope="session")
def node_rsa_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="session")
def stranger_key() -> ec.EllipticCurvePrivateKey:
    """Somebody else's key."""
    return ec_key()


@pytest.fixture
def set_umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    try:
        yield set_
    finally:
        os.umask(old)
