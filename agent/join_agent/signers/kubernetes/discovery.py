"""Where the cluster is and which CA vouches for it: token discovery or a discovery file.

The two are alternatives chosen by config, never a fallback chain: a JWS or pin failure
is what an attack looks like, so it ends the attempt. Parsing and checking are pure;
fetching takes the HTTP client as a parameter.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from join_agent.errors import CAResponseError, ConfigError, TrustError
from join_agent.net import transport
from join_agent.pki import compat, pinning
from join_agent.signers.kubernetes.bootstrap_token import BootstrapToken, signature_valid
from join_agent.storage import guard
from join_agent.worker import kubeconfig

CLUSTER_INFO_PATH = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
JWS_PREFIX = "jws-kubeconfig-"


class NoSignature(TrustError):
    """cluster-info carries no JWS for the token: it is unknown, expired or not for signing."""


@dataclass(frozen=True)
class Cluster:
    """An API server and the CA certificates trusted to verify it (after the pin check)."""

    server: str
    cas: tuple[x509.Certificate, ...]
    source: str


def cluster_info_data(body: bytes, what: str) -> dict[str, str]:
    """The ``data`` of a v1 ConfigMap answer, as strings; CAResponseError otherwise."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CAResponseError(f"{what} did not answer with JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CAResponseError(f"{what} did not answer with a ConfigMap holding string data")
    return data


def kubeconfig_cluster(
    text: str, what: str, *, base: Path | None = None, read: Callable[[Path], bytes] | None = None
) -> tuple[str, bytes]:
    """Server URL and CA PEM from a discovery kubeconfig (current context, else the first
    cluster: kubeadm's cluster-info names its one cluster "")."""
    try:
        doc = kubeconfig.parse(text)
    except ValueError as e:
        raise CAResponseError(f"{what} holds no usable kubeconfig: {e}") from None
    cluster = _cluster_entry(doc)
    if cluster is None:
        raise CAResponseError(f"{what} holds a kubeconfig without a cluster")
    server = cluster.get("server")
    if not isinstance(server, str) or urlsplit(server).scheme.lower() != "https":
        raise CAResponseError(f"{what} holds a kubeconfig whose server is not an https URL")
    data = cluster.get("certificate-authority-data")
    if isinstance(data, str):
        try:
            return server, base64.b64decode(data, validate=True)
        except binascii.Error:
            raise CAResponseError(
                f"{what} holds certificate-authority-data that is not base64"
            ) from None
    path = cluster.get("certificate-authority")
    if isinstance(path, str) and path and base is not None and read is not None:
        target = (base / path) if not Path(path).is_absolute() else Path(path)
        try:
            return server, read(target)
        except OSError as e:
            raise ConfigError(
                f"cannot read the CA {target} named by {what}: {e.strerror}"
            ) from None
    raise CAResponseError(f"{what} holds a kubeconfig without CA data for its cluster")


def _cluster_entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    current = kubeconfig.current_cluster(doc)
    if current:
        return current
    # kubeadm's cluster-info has no context: its one cluster (named "") is the one.
    clusters = doc.get("clusters")
    for c in clusters if isinstance(clusters, list) else []:
        if isinstance(c, dict) and isinstance(c.get("cluster"), dict):
            return dict(c["cluster"])
    return None


def accept_cas(
    ca_pem: bytes,
    pins: tuple[str, ...] | None,
    *,
    now: dt.datetime,
    clock_skew: dt.timedelta,
    what: str,
) -> tuple[x509.Certificate, ...]:
    """The CA certificates to trust: each one's path up to a pin (``pins=None``: the file
    came from a trusted place, so every CA certificate in it, each checked to be a CA)."""
    try:
        certs = compat.load_pem_certificates(ca_pem)
    except ValueError:
        certs = []
    if not certs:
        raise CAResponseError(f"{what} holds no PEM CA certificate")
    trusted: list[x509.Certificate] = []
    refused: TrustError | None = None
    for cert in certs:
        try:
            path = pinning.trusted_path(
                cert,
                certs,
                pins,
                now=now,
                clock_skew=clock_skew,
                origin="signer.kubernetes.ca_pins",
            )
        except TrustError as e:
            refused = refused or e
            continue
        trusted += [c for c in path if c not in trusted]
    if not trusted:
        if pins is not None and not any(pinning.matches_pin(c, pins) for c in certs):
            found = ", ".join(pinning.spki_pin(c) for c in certs)
            raise TrustError(
                f"the cluster CA from {what} (pin {found}) matches none of "
                "signer.kubernetes.ca_pins: refusing it (this is what a man in the middle "
                "looks like; if the cluster CA really changed, check its pin out of band "
                "with `join-agent pin /etc/kubernetes/pki/ca.crt` on a control-plane host)"
            )
        raise refused or TrustError(f"{what} holds no CA certificate fit to trust")
    return tuple(trusted)


def token_discovery(
    server: str,
    token: BootstrapToken,
    pins: tuple[str, ...],
    limits: transport.Limits,
    *,
    now: dt.datetime,
    clock_skew: dt.timedelta,
    token_origin: str,
) -> Cluster:
    """kubeadm's token discovery: an unverified fetch checked by JWS and pin, then the same
    fetch again over TLS verified with the accepted CA, which must give the same answer."""
    url = server.rstrip("/") + CLUSTER_INFO_PATH
    what = f"the API server at {server}"
    with transport.make_client(verify=False, limits=limits) as insecure:
        first = _cluster_info(insecure, url, limits, what)
    signed = first.get("kubeconfig")
    if signed is None:
        raise CAResponseError(f"{what} serves a cluster-info ConfigMap without a kubeconfig")
    jws = first.get(JWS_PREFIX + token.id)
    if jws is None:
        raise NoSignature(
            f"cluster-info at {server} carries no signature for bootstrap token "
            f"{token.id!r}: the token does not exist, has expired, or lacks "
            f"usage-bootstrap-signing; create one with `kubeadm token create` and put it in "
            f"{token_origin}"
        )
    if not signature_valid(jws, signed, token):
        raise TrustError(
            f"cluster-info at {server} is signed for token id {token.id!r} with another "
            "secret than this node's token: refusing it (a man in the middle, or the wrong "
            "token for this cluster)"
        )
    found_server, ca_pem = kubeconfig_cluster(signed, f"cluster-info at {server}")
    cas = accept_cas(ca_pem, pins, now=now, clock_skew=clock_skew, what=f"cluster-info at {server}")
    with transport.make_client(verify=trust_context(cas), limits=limits) as verified:
        second = _cluster_info(verified, url, limits, what)
    if second.get("kubeconfig") != signed:
        raise TrustError(
            f"cluster-info at {server} changed between the unverified and the verified "
            "fetch: refusing it"
        )
    return Cluster(server=found_server, cas=cas, source=f"token discovery at {server}")


def file_discovery(
    source: str,
    pins: tuple[str, ...] | None,
    limits: transport.Limits,
    *,
    now: dt.datetime,
    clock_skew: dt.timedelta,
) -> Cluster:
    """A kubeconfig from a local path or an https URL (verified with the system's roots)."""
    what = f"signer.kubernetes.discovery_file {source}"
    if urlsplit(source).scheme.lower() == "https":
        with transport.make_client(verify=transport.system_trust(), limits=limits) as client:
            r = transport.get(client, source, limits, what=what)
        if r.status != 200:
            raise CAResponseError(f"{what} answered HTTP {r.status}")
        text = _text(r.body, what)
        server, ca_pem = kubeconfig_cluster(text, what)
    else:
        path = Path(source)
        try:
            text = _text(_read(path, what), what)
        except OSError as e:
            raise ConfigError(f"cannot read {what}: {e.strerror}") from None
        server, ca_pem = kubeconfig_cluster(
            text, what, base=path.parent, read=lambda p: _read(p, f"the CA file of {what}")
        )
    cas = accept_cas(ca_pem, pins, now=now, clock_skew=clock_skew, what=what)
    return Cluster(server=server, cas=cas, source=f"discovery file {source}")


def trust_context(cas: tuple[x509.Certificate, ...]) -> ssl.SSLContext:
    """An SSLContext that trusts exactly ``cas`` (with cadata, no system roots are loaded)
    and checks the server's name."""
    return ssl.create_default_context(cadata=compat.pem(cas).decode("ascii"))


def _cluster_info(
    client: httpx.Client, url: str, limits: transport.Limits, what: str
) -> dict[str, str]:
    r = transport.get(client, url, limits, what=what, headers={"Accept": "application/json"})
    if r.status != 200:
        raise CAResponseError(
            f"{what} answered HTTP {r.status} for cluster-info: is anonymous access to the "
            "kube-public ConfigMap granted (docs/kubernetes.md)?"
        )
    return cluster_info_data(r.body, f"cluster-info at {what}")


def _read(path: Path, what: str) -> bytes:
    # The file names the API server and the CA the node will trust: root's alone.
    return guard.read(path, what, cap=guard.PEM_CAP)


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CAResponseError(f"{what} is not UTF-8 text") from None
