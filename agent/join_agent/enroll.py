"""One enrollment: identity → key + CSR → signer → verify → store → kubeconfig."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import compat, kubeconfig, pki, store, trust
from .config import Config
from .errors import ConfigError
from .identity import Identity
from .log import get_logger
from .signers.base import Signer

log = get_logger("join_agent.enroll")

CLIENT_PREFIX = "kubelet-client"


@dataclass(frozen=True)
class Enrolled:
    """What an enrollment wrote."""

    identity: Identity
    certificate: x509.Certificate
    version: Path
    ca_pin: str
    source: str


def client_store(cfg: Config) -> store.PairStore:
    return store.PairStore(cfg.paths.pki_dir, CLIENT_PREFIX)


def enroll(
    cfg: Config,
    signer: Signer,
    identity: Identity,
    *,
    now: Callable[[], dt.datetime],
    record_tofu_pin: bool,
) -> Enrolled:
    """Obtain, verify and install one client certificate; nothing is written on failure."""
    key = pki.generate_key(cfg.node.key)
    csr = pki.build_csr(key, identity)
    issued = signer.sign(csr, identity)
    pki.check_issued(
        issued.certificate,
        key=key,
        identity=identity,
        ca=issued.verify_with,
        now=now(),
        clock_skew=cfg.renewal.clock_skew,
    )
    ca_pin = pki.spki_pin(issued.ca)
    cluster_ca = _cluster_ca(cfg, issued.ca_bundle)
    if record_tofu_pin:
        trust.record_pin(cfg.paths.state_dir, ca_pin)
        log.warning("ca_pin_recorded", pin=ca_pin, path=str(cfg.paths.state_dir / trust.TOFU_FILE))

    pairs = client_store(cfg)
    chain = [issued.certificate]
    if issued.ca.issuer != issued.ca.subject:
        chain.append(issued.ca)  # an intermediate: the API server may need it to build a path
    ca_pem = _pem(issued.ca_bundle)
    if _read(cfg.paths.ca_file) != ca_pem:
        store.atomic_write(cfg.paths.ca_file, ca_pem, 0o644)
    kubeconfig.write(
        cfg.paths.kubeconfig,
        kubeconfig.render(
            cluster=cfg.cluster.name,
            server=cfg.cluster.server,
            ca_pem=cluster_ca,
            node_name=identity.name,
            credentials=pairs.current,
        ),
    )
    version = pairs.install(chain, pki.key_pem(key), now())
    cert = issued.certificate
    log.info(
        "certificate_installed",
        node=identity.name,
        path=str(version),
        serial=f"{cert.serial_number:x}",
        not_after=compat.not_valid_after(cert).isoformat(),
        sans=pki.hosts_for(identity),
        ca=issued.source,
    )
    return Enrolled(
        identity=identity, certificate=cert, version=version, ca_pin=ca_pin, source=issued.source
    )


def _cluster_ca(cfg: Config, bundle: tuple[x509.Certificate, ...]) -> bytes:
    """CA data for the kubeconfig: ``cluster.ca_bundle`` if set, else the signer's CA."""
    if cfg.cluster.ca_bundle is None:
        return _pem(bundle)
    try:
        data = cfg.cluster.ca_bundle.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"cannot read cluster.ca_bundle {cfg.cluster.ca_bundle}: {e.strerror}"
        ) from None
    try:
        certs = compat.load_pem_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"cluster.ca_bundle {cfg.cluster.ca_bundle} holds no PEM certificate")
    return _pem(tuple(certs))


def _pem(certs: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
