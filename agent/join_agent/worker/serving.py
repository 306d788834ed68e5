"""The kubelet's serving certificate (signer kubernetes.io/kubelet-serving), never blocking.

Kubernetes does not auto-approve serving certificates, so the node asks once, remembers
the request (its name in state_dir, its key beside the other keys, mode 0600), and looks
again on later passes; meanwhile the kubelet serves its self-signed certificate. Asking
again on every pass would pile up pending requests (kubernetes#73356).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from join_agent.config.model import Config
from join_agent.core import wire
from join_agent.errors import CertificateRejected, JoinAgentError, StoreError
from join_agent.host.identity import Identity
from join_agent.log import get_logger
from join_agent.pki import checks, compat, facts, keys
from join_agent.signers.kubernetes import csr_api
from join_agent.signers.kubernetes.signer import KubernetesSigner
from join_agent.storage import files, guard, names, store

if TYPE_CHECKING:
    from join_agent.core.records import ServingReport

log = get_logger("join_agent.worker.serving")

SERVER_PREFIX = names.SERVER_PREFIX
REQUEST_FILE = names.SERVING_REQUEST
PENDING_KEY = names.SERVING_PENDING_KEY
RENEW_AT = 0.8  # of the lifetime: approval may take a human, so ask early
AFTER_DENIAL = dt.timedelta(hours=1)  # a denied request is not asked again sooner


@dataclass(frozen=True)
class Pending:
    name: str
    requested_at: dt.datetime
    denied: str = ""  # the denial's message; "" while waiting


def server_store(cfg: Config) -> store.PairStore:
    return store.PairStore(cfg.paths.pki_dir, SERVER_PREFIX)


def renew_at(cert: x509.Certificate) -> dt.datetime:
    nb, na = compat.not_valid_before(cert), compat.not_valid_after(cert)
    return nb + (na - nb) * RENEW_AT


def why_due(cert: x509.Certificate | None, identity: Identity, now: dt.datetime) -> str | None:
    """Why a new serving certificate is needed now, or None (pure)."""
    if cert is None:
        return "no serving certificate yet"
    if now >= renew_at(cert):
        return "the serving certificate is due for renewal"
    try:
        checks.check_sans(cert, identity, "the serving certificate")
    except CertificateRejected:
        return "the node's names or addresses changed"
    return None


def step(
    cfg: Config, signer: KubernetesSigner, identity: Identity, now: Callable[[], dt.datetime]
) -> ServingReport:
    """One look at the serving certificate: install an issued one, or ask for one.

    Returns what status shows: ``state`` is current / pending / denied / error.
    """
    pairs = server_store(cfg)
    try:
        current = pairs.load_current()
    except StoreError:
        current = None
    pending = read_pending(cfg)
    report = _facts(current.certificate if current else None)
    try:
        if pending is not None and not pending.denied:
            done = _look(cfg, signer, identity, pending, now)
            if done is not None:
                return {**report, **done}
        elif pending is not None and now() < pending.requested_at + AFTER_DENIAL:
            return {**report, "state": "denied", "name": pending.name, "message": pending.denied}
        current = pairs.load_current()
        why = why_due(current.certificate if current else None, identity, now())
        if why is None:
            return {**_facts(current.certificate if current else None), "state": "current"}
        return {**report, **_ask(cfg, signer, identity, why, now)}
    except JoinAgentError as e:
        log.warning("serving_certificate_failed", error=str(e))
        return {**report, "state": "error", "message": str(e)}


def _look(
    cfg: Config,
    signer: KubernetesSigner,
    identity: Identity,
    pending: Pending,
    now: Callable[[], dt.datetime],
) -> ServingReport | None:
    """Install the pending request's certificate when issued; None to ask anew."""
    auth = signer.node_auth()
    with auth.client(signer.limits) as client:
        found = signer.read(client, auth, pending.name)
    if found is None:
        log.warning("serving_request_gone", name=pending.name)
        clear_pending(cfg)
        return None
    if found.state in ("pending", "approved"):
        return {
            "state": "pending",
            "name": pending.name,
            "message": f"pending approval: `kubectl certificate approve {pending.name}`",
        }
    if found.state in ("denied", "failed"):
        detail = ": ".join(x for x in (found.reason, found.message) if x) or "no reason given"
        message = f"serving certificate request {pending.name} was {found.state} ({detail})"
        _record(cfg, Pending(pending.name, now(), denied=message))
        files.discard(cfg.paths.pki_dir / PENDING_KEY)
        log.warning("serving_request_refused", name=pending.name, reason=detail)
        return {"state": "denied", "name": pending.name, "message": message}
    try:
        key_pem = guard.read(cfg.paths.pki_dir / PENDING_KEY, "the pending key", cap=guard.PEM_CAP)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError, StoreError):
        # The key is gone (pki_dir wiped) or damaged: this answer can never be used.
        log.warning("serving_key_lost", name=pending.name, msg="asking again")
        clear_pending(cfg)
        return None
    cert = found.certificates[0]
    try:
        checks.check_issued(
            cert,
            key=key,  # type: ignore[arg-type]
            identity=identity,
            ca=None,  # the API server we verified vouches for it (per-signer CAs exist)
            now=now(),
            clock_skew=cfg.renewal.clock_skew,
            usage="server",
        )
    except CertificateRejected:
        clear_pending(cfg)  # not usable (the node's names changed meanwhile?): ask anew
        raise
    version = server_store(cfg).install(list(found.certificates), key_pem, now())
    server_store(cfg).prune()
    clear_pending(cfg)
    log.info("serving_certificate_installed", path=str(version), name=pending.name)
    return {**_facts(cert), "state": "current", "name": pending.name, "rotated": True}


def _ask(
    cfg: Config,
    signer: KubernetesSigner,
    identity: Identity,
    why: str,
    now: Callable[[], dt.datetime],
) -> ServingReport:
    auth = signer.node_auth()
    key = keys.generate_key(cfg.node.key)
    key_pem = keys.key_pem(key)
    # The key is on disk before the request exists, so an answer can always be used.
    files.atomic_write(cfg.paths.pki_dir / PENDING_KEY, key_pem, 0o600)
    with auth.client(signer.limits) as client:
        name = signer.create(
            client,
            auth,
            keys.build_csr(key, identity),
            csr_api.SERVING_SIGNER,
            csr_api.SERVING_USAGES,
        )
    _record(cfg, Pending(name, now()))
    log.info("serving_certificate_requested", name=name, reason=why)
    return {
        "state": "pending",
        "name": name,
        "message": f"pending approval: `kubectl certificate approve {name}`",
    }


def read_pending(cfg: Config) -> Pending | None:
    try:
        path = cfg.paths.state_dir / REQUEST_FILE
        doc = json.loads(guard.read(path, "the serving request record", cap=guard.SMALL_CAP))
        return Pending(
            name=str(doc["name"]),
            requested_at=wire.parse_iso(str(doc["requested_at"])),
            denied=str(doc.get("denied", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, StoreError):
        return None


def _record(cfg: Config, p: Pending) -> None:
    doc = {"name": p.name, "requested_at": wire.iso(p.requested_at), "denied": p.denied}
    files.atomic_write(cfg.paths.state_dir / REQUEST_FILE, (json.dumps(doc) + "\n").encode(), 0o644)


def clear_pending(cfg: Config) -> None:
    for path in (cfg.paths.state_dir / REQUEST_FILE, cfg.paths.pki_dir / PENDING_KEY):
        files.discard(path)


def _facts(cert: x509.Certificate | None) -> ServingReport:
    if cert is None:
        return {"present": False}
    return {
        "present": True,
        "serial": facts.serial(cert),
        "not_before": wire.iso(compat.not_valid_before(cert)),
        "not_after": wire.iso(compat.not_valid_after(cert)),
        "renew_at": wire.iso(renew_at(cert)),  # the daemon looks again then
    }


def facts_on_disk(cfg: Config) -> ServingReport:
    """What status shows without asking anyone: the installed certificate and any request."""
    try:
        current = server_store(cfg).load_current()
    except StoreError:
        current = None
    out = _facts(current.certificate if current else None)
    pending = read_pending(cfg)
    if pending is not None and pending.denied:
        out.update({"state": "denied", "name": pending.name, "message": pending.denied})
    elif pending is not None:
        msg = f"pending approval: `kubectl certificate approve {pending.name}`"
        out.update({"state": "pending", "name": pending.name, "message": msg})
    else:
        out["state"] = "current" if current else "none"
    return out


def current_path(cfg: Config) -> Path:
    return server_store(cfg).current
