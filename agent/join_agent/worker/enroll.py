"""One enrollment: identity → key + CSR → signer → verify → store → kubeconfig."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from join_agent.config.model import Config
from join_agent.errors import ConfigError, JoinAgentError, StoreError, TrustError
from join_agent.host import machine
from join_agent.host.identity import Identity
from join_agent.log import get_logger
from join_agent.pki import checks, compat, facts, keys, pinning
from join_agent.signers.base import Issued, Signer
from join_agent.storage import files, guard, names, store, trust
from join_agent.worker import kubeconfig

log = get_logger("join_agent.worker.enroll")

CLIENT_PREFIX = names.CLIENT_PREFIX


@dataclass(frozen=True)
class Enrolled:
    """What an enrollment wrote."""

    identity: Identity
    certificate: x509.Certificate
    version: Path
    ca_pin: str
    source: str
    ca_changed: bool  # the issuing CA differs from the one in ca_file before


def client_store(cfg: Config) -> store.PairStore:
    return store.PairStore(cfg.paths.pki_dir, CLIENT_PREFIX)


def enroll(
    cfg: Config,
    signer: Signer,
    identity: Identity,
    *,
    now: Callable[[], dt.datetime],
    record_tofu_pin: bool,
    pins: tuple[str, ...] | None = None,
) -> Enrolled:
    """Obtain, verify and install one client certificate.

    Every write is staged first (the new version, ca_file, the kubeconfig, a pin recorded
    on first use); only when all of them are on disk are they renamed into place, the
    symlink switch last. A failure before that leaves the earlier files as they were.
    """
    if not signer.client_sans:
        identity = dataclasses.replace(identity, dns_names=(), addresses=())
    key = keys.generate_key(cfg.node.key)
    issued = signer.sign(keys.build_csr(key, identity), identity)
    checked_at = now()
    # Nothing the CA says is taken on trust: the certificate must be what was asked for.
    checks.check_issued(issued.certificate, key=key, identity=identity, ca=issued.verify_with,
                        now=checked_at, clock_skew=cfg.renewal.clock_skew)  # fmt: skip
    ca_pin = pinning.spki_pin(issued.ca)
    previous = _read_bundle(cfg.paths.ca_file)
    ca_changed = bool(previous) and pinning.spki_pin(previous[0]) != ca_pin
    trusted = (ca_pin,) if record_tofu_pin else pins
    bundle = merge_bundles(issued.ca_bundle, previous, trusted, checked_at, cfg.renewal.clock_skew)
    pairs = client_store(cfg)
    chain = [issued.certificate]
    if issued.ca.issuer != issued.ca.subject:
        chain.append(issued.ca)  # an intermediate: the API server may need it to build a path
    tofu = ca_pin if record_tofu_pin else ""
    updates = _updates(cfg, issued, identity, bundle, credentials=pairs.current, tofu_pin=tofu)
    if ca_changed:
        log.warning(
            "ca_changed",
            old=pinning.spki_pin(previous[0]),
            new=ca_pin,
            msg="the CA matches a pin: trusting old and new together",
        )
    version = _install(pairs, chain, keys.key_pem(key), updates, checked_at)
    pairs.prune()
    _record_machine(cfg, issued.certificate, checked_at)
    if record_tofu_pin:
        log.warning("ca_pin_recorded", pin=ca_pin, path=str(cfg.paths.state_dir / trust.TOFU_FILE))
    done = Enrolled(identity, issued.certificate, version, ca_pin, issued.source, ca_changed)
    log.info(
        "certificate_installed", node=identity.name, path=str(version),
        serial=facts.serial(done.certificate), sans=keys.hosts_for(identity),
        not_after=compat.not_valid_after(done.certificate).isoformat(), ca=issued.source,
    )  # fmt: skip
    return done


def _record_machine(cfg: Config, cert: x509.Certificate, now: dt.datetime) -> None:
    """Record this machine with the certificate, after the switch: a crash before it leaves
    the record of an older serial, which is no evidence either way (host/machine.py)."""
    try:
        machine.write_record(
            cfg.paths.state_dir, cfg.node.fingerprint_files, facts.serial(cert), now
        )
    except (OSError, JoinAgentError) as e:
        log.warning("machine_not_recorded", error=str(e), path=str(cfg.paths.state_dir))


def _updates(
    cfg: Config,
    issued: Issued,
    identity: Identity,
    bundle: tuple[x509.Certificate, ...],
    *,
    credentials: Path,
    tofu_pin: str,
) -> list[tuple[Path, bytes, int]]:
    """The files written with the new version: ca_file, the kubeconfig, a pin recorded on
    first use (``tofu_pin``, "" for none)."""
    kubeconfig_text = kubeconfig.render(
        cluster=cfg.cluster.name,
        server=cfg.cluster.server or issued.server or "",
        ca_pem=_cluster_ca(cfg, bundle),
        node_name=identity.name,
        credentials=credentials,
    ).encode()
    updates: list[tuple[Path, bytes, int]] = [
        (cfg.paths.ca_file, compat.pem(bundle), 0o644),
        (cfg.paths.kubeconfig, kubeconfig_text, 0o600),
    ]
    if tofu_pin:
        updates.append((cfg.paths.state_dir / trust.TOFU_FILE, (tofu_pin + "\n").encode(), 0o644))
    return updates


def _install(
    pairs: store.PairStore,
    chain: list[x509.Certificate],
    key_pem: bytes,
    updates: list[tuple[Path, bytes, int]],
    when: dt.datetime,
) -> Path:
    """Stage the new version and every changed file, then rename them into place with the
    symlink switch last; on failure remove whatever was staged and not yet in place."""
    staged: list[tuple[Path, Path]] = []
    version = None
    try:
        version = pairs.write_version(chain, key_pem, when)
        for path, data, mode in updates:
            if not files.unchanged(path, data, mode):
                staged.append((files.stage(path, data, mode), path))
        for i, (tmp, path) in enumerate(staged):
            files.commit(tmp, path)
            staged[i] = (path, path)  # in place: nothing left to discard
        pairs.switch(version)
    except JoinAgentError:
        for tmp, path in staged:
            if tmp != path:
                files.discard(tmp)
        if version is not None:
            files.discard(version)
        raise
    return version


def merge_bundles(
    current: tuple[x509.Certificate, ...],
    previous: tuple[x509.Certificate, ...],
    pins: tuple[str, ...] | None,
    now: dt.datetime,
    clock_skew: dt.timedelta,
) -> tuple[x509.Certificate, ...]:
    """The signer's trusted path first, then earlier CAs that a pin still vouches for.

    The API server's certificate may still come from the old CA after ours comes from the
    new one, so both stay trusted until the old one expires or loses its pin.
    """
    if pins is None:
        return current
    pool = (*current, *previous)

    def vouched(c: x509.Certificate) -> bool:
        try:
            pinning.trusted_path(c, pool, pins, now=now, clock_skew=clock_skew)
        except TrustError:
            return False
        return True

    return (*current, *(c for c in previous if c not in current and vouched(c)))


def _cluster_ca(cfg: Config, bundle: tuple[x509.Certificate, ...]) -> bytes:
    """CA data for the kubeconfig: ``cluster.ca_bundle`` if set, else the signer's CA."""
    if cfg.cluster.ca_bundle is None:
        return compat.pem(bundle)
    try:
        data = guard.read(cfg.cluster.ca_bundle, "cluster.ca_bundle", cap=guard.PEM_CAP)
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
    return compat.pem(certs)


def _read_bundle(path: Path) -> tuple[x509.Certificate, ...]:
    data = _read(path)
    try:
        return tuple(compat.load_pem_certificates(data)) if data else ()
    except ValueError:
        return ()  # a damaged ca_file is rewritten from the signer's pinned CA


def _read(path: Path) -> bytes | None:
    try:
        return guard.read(path, "the CA file", cap=guard.PEM_CAP)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read the CA file {path}: {e.strerror or e}") from None
