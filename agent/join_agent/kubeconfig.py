"""The kubelet's kubeconfig: rendered as a pure function, written by the store."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from . import store


def render(
    *,
    cluster: str,
    server: str,
    ca_pem: bytes,
    node_name: str,
    credentials: Path,
) -> str:
    """A kubeconfig whose user's cert and key both point at the ``*-current.pem`` link.

    client-go re-reads referenced files at each handshake, so a rotation needs no kubelet
    restart; the CA is embedded because the kubelet does not reload it anyway.
    """
    user = f"system:node:{node_name}"
    context = f"{user}@{cluster}"
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(credentials),
                    "client-key": str(credentials),
                },
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def write(path: Path, text: str) -> bool:
    """Write the kubeconfig (mode 0600) unless it already says exactly this; True if written."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            if path.stat().st_mode & 0o777 != 0o600:
                path.chmod(0o600)  # someone widened it; the content is still ours
            return False
    except OSError:
        pass
    store.atomic_write(path, data, 0o600)
    return True


def parse(text: str) -> dict[str, Any]:
    """Load a kubeconfig; raise ValueError when it is not YAML or not a mapping."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a kubeconfig (no top-level mapping)")
    return doc
