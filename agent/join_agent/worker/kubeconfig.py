"""The kubelet's kubeconfig: rendered as a pure function, written by the store."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from join_agent.storage import files

if TYPE_CHECKING:
    from join_agent.core.records import KubeconfigFacts


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
    if files.unchanged(path, data, 0o600):
        return False
    files.atomic_write(path, data, 0o600)
    return True


def parse(text: str) -> dict[str, Any]:
    """Load a kubeconfig (Kubernetes' format, whoever wrote it: left untyped); raise
    ValueError when it is not YAML or not a mapping."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a kubeconfig (no top-level mapping)")
    return doc


def facts(doc: dict[str, Any]) -> KubeconfigFacts:
    """What the current context says: server, user, and the cert and key it points at."""
    out: KubeconfigFacts = {"current_context": doc.get("current-context")}
    ctx = _named(doc.get("contexts"), out["current_context"], "context")
    cluster = current_cluster(doc)
    user = _named(doc.get("users"), ctx.get("user"), "user")
    out["server"] = cluster.get("server")
    out["user"] = ctx.get("user")
    out["client_certificate"] = user.get("client-certificate")
    out["client_key"] = user.get("client-key")
    return out


def current_cluster(doc: dict[str, Any]) -> dict[str, Any]:
    """The cluster entry the current context names; {} when there is none."""
    ctx = _named(doc.get("contexts"), doc.get("current-context"), "context")
    return _named(doc.get("clusters"), ctx.get("cluster"), "cluster")


def ca_certificates(doc: dict[str, Any]) -> list[Any] | None:
    """The certificates in the current cluster's certificate-authority-data, if any."""
    import base64
    import binascii

    from join_agent.pki import compat

    data = current_cluster(doc).get("certificate-authority-data")
    if not isinstance(data, str):
        return None
    try:
        return list(compat.load_pem_certificates(base64.b64decode(data, validate=True)))
    except (binascii.Error, ValueError):
        return None


def _named(items: object, name: object, inner: str) -> dict[str, Any]:
    if isinstance(items, list):
        for item in items:
            if (
                isinstance(item, dict)
                and item.get("name") == name
                and isinstance(item.get(inner), dict)
            ):
                return dict(item[inner])
    return {}
