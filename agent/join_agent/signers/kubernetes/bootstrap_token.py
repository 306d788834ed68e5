"""Kubernetes bootstrap tokens and the detached JWS that signs cluster-info with them.

Pure functions: the token secret is the HMAC key, so everything here treats it as a
secret (it never appears in a repr, an error or a log line).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from join_agent.errors import ConfigError

# cluster-bootstrap's BootstrapTokenPattern: "<6 of [a-z0-9]>.<16 of [a-z0-9]>".
_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")


@dataclass(frozen=True)
class BootstrapToken:
    id: str
    secret: str

    def __repr__(self) -> str:
        return f"BootstrapToken(id={self.id!r})"

    __str__ = __repr__

    @property
    def bearer(self) -> str:
        return f"{self.id}.{self.secret}"

    @property
    def user(self) -> str:
        return f"system:bootstrap:{self.id}"


def parse_token(value: str, origin: str) -> BootstrapToken:
    """Parse ``<id>.<secret>``; the error names where it came from, never the value."""
    m = _TOKEN.match(value.strip())
    if m is None:
        raise ConfigError(
            f"{origin} does not hold a bootstrap token of the form abcdef.0123456789abcdef "
            "(6 and 16 lowercase letters or digits): `kubeadm token create` prints one"
        )
    return BootstrapToken(id=m.group(1), secret=m.group(2))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def detached_signature(payload: str, token: BootstrapToken) -> str:
    """The JWS the bootstrapsigner controller stores as ``jws-kubeconfig-<token-id>``.

    Compact serialization with the payload left out (``<header>..<signature>``), HS256
    keyed with the token secret; the header is go-jose's, whose JSON keys come sorted.
    """
    header = _b64url(json.dumps({"alg": "HS256", "kid": token.id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{_b64url(payload.encode())}".encode("ascii")
    mac = hmac.new(token.secret.encode("ascii"), signing_input, hashlib.sha256).digest()
    return f"{header}..{_b64url(mac)}"


def signature_valid(detached: str, payload: str, token: BootstrapToken) -> bool:
    """True when ``detached`` is the token's signature over ``payload`` (constant time).

    As kubeadm does, the whole expected string is recomputed and compared, so a header
    with another algorithm or key id can never pass.
    """
    expected = detached_signature(payload, token)
    return hmac.compare_digest(expected.encode("ascii"), detached.encode("utf-8", "replace"))
