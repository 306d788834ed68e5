"""Enrollment and inspection, for ``join`` and for the daemon's short-lived child.

The resident daemon stays on the standard library (a few MB) and runs this in a child
process (``join-agent worker enroll|inspect``) whenever it needs cryptography or HTTP;
the child prints one JSON document on stdout and exits.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from join_agent.config.model import Config
from join_agent.core import wire
from join_agent.core.protocol import CredentialFacts, WorkerResult
from join_agent.core.wire import WORKER_SCHEMA
from join_agent.errors import ClockError, IdentityError, JoinAgentError
from join_agent.host import identity
from join_agent.net import transport
from join_agent.signers import factory
from join_agent.signers.kubernetes.bootstrap_token import BootstrapToken
from join_agent.storage import files, state, store
from join_agent.worker import enroll

if TYPE_CHECKING:
    from join_agent.core.records import ServingReport, TableReport


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def enroll_once(
    cfg: Config,
    environ: Mapping[str, str],
    *,
    token: BootstrapToken | None = None,
    token_origin: str = "",
) -> enroll.Enrolled:
    """One enrollment under the state lock: what ``join`` does."""
    from join_agent.host import preflight

    # Before any request: a CSR answered is wasted if its files cannot be written safely,
    # and every certificate fails its checks under a clock that is obviously wrong.
    preflight.require_directories(cfg)
    require_a_set_clock(_now())
    node = identity.resolve(cfg.node)
    limits = transport.Limits()
    # Under the lock: the pins (a pin recorded on first use included) are read and
    # recorded by one process at a time.
    with (
        store.state_lock(cfg.paths.state_dir),
        factory.build(cfg, environ, limits, token=token, token_origin=token_origin) as setup,
    ):
        enroll.client_store(cfg).recover()
        for directory in {
            cfg.paths.kubeconfig.parent,
            cfg.paths.ca_file.parent,
            cfg.paths.state_dir,
        }:
            files.sweep(directory)
        return enroll.enroll(
            cfg,
            setup.signer,
            node,
            now=_now,
            record_tofu_pin=setup.record_tofu_pin,
            pins=setup.pins,
        )


def require_a_set_clock(now: dt.datetime) -> None:
    from join_agent.host import platform

    installed = platform.installed_at()
    if now < installed:
        raise ClockError(
            f"the clock reads {wire.iso(now)}, before this package was installed "
            f"({wire.iso(installed)}): set the clock (time sync, NTP), then try again"
        )


def serving_once(cfg: Config, environ: Mapping[str, str]) -> ServingReport:
    """One look at the kubelet serving certificate (``[signer.kubernetes] serving``)."""
    if cfg.signer_kind != "kubernetes" or not cfg.kubernetes.serving:
        return {"state": "off"}
    from join_agent.signers.kubernetes.signer import KubernetesSigner
    from join_agent.worker import serving

    node = identity.resolve(cfg.node)
    with (
        store.state_lock(cfg.paths.state_dir),
        factory.build(cfg, environ, transport.Limits()) as setup,
    ):
        if not isinstance(setup.signer, KubernetesSigner):  # pragma: no cover - by config
            return {"state": "off"}
        return serving.step(cfg, setup.signer, node, _now)


def certificates_once(cfg: Config, environ: Mapping[str, str]) -> list[TableReport]:
    """One pass over the ``[[certificate]]`` tables: what is due is issued, pending actions
    run; the reports, one per table (and one per table removed since)."""
    from join_agent.signers.cfssl import CfsslSigner
    from join_agent.worker import certificate_files, certificates

    if not cfg.certificates:
        return certificate_files.orphans(cfg)
    addresses: certificates.NodeAddresses = ()
    if any(spec.node_addresses for spec in cfg.certificates):
        try:
            addresses = identity.resolve(cfg.node).addresses
        except IdentityError as e:
            addresses = e  # the tables that want them fail; the others are issued
    with (
        store.state_lock(cfg.paths.state_dir),
        factory.build(cfg, environ, transport.Limits()) as setup,
    ):
        if not isinstance(setup.signer, CfsslSigner):  # pragma: no cover - by config
            return []
        if setup.record_tofu_pin:
            # Trust on first use: the node's own enrollment records the CA's pin; until then
            # no other certificate is asked of a CA nobody vouched for.
            return _all_failing(cfg, "waiting for the node's first enrollment to record the CA pin")
        return certificates.run_due(cfg, setup.signer, addresses, now=_now)


def inspect(cfg: Config) -> CredentialFacts:
    """Facts about the credentials on disk, with the files' identities, for status.json."""
    from join_agent.worker import inspection

    current = enroll.client_store(cfg).current
    out = inspection.facts_of(inspection.snapshot(cfg, current))
    out["ids"] = {
        "credentials": state.file_identity(current),
        "kubeconfig": state.file_identity(cfg.paths.kubeconfig),
        "ca_file": state.file_identity(cfg.paths.ca_file),
    }
    return out


def run(cfg: Config, mode: str, environ: Mapping[str, str]) -> WorkerResult:
    """The worker verb: never raises for an expected failure, reports it in the document."""
    result: WorkerResult = {"schema": WORKER_SCHEMA, "ok": True, "mode": mode}
    if mode == "enroll":
        try:
            done = enroll_once(cfg, environ)
        except JoinAgentError as e:
            _failed(result, str(e), e)
        else:
            result["ca_changed"], result["source"] = done.ca_changed, done.source
    # Neither side job may cost the node's own enrollment its result: their failures,
    # expected or not (a file gone, a value the libraries refuse), land in their report.
    if mode == "certificates":
        try:
            result["certificates"] = certificates_once(cfg, environ)
        except (JoinAgentError, OSError, ValueError) as e:
            _failed(result, _sentence(e), e)
            result["certificates"] = _all_failing(cfg, _sentence(e))
    if mode == "serving" or (mode == "enroll" and result["ok"]):
        try:
            result["serving"] = serving_once(cfg, environ)
        except (JoinAgentError, OSError, ValueError) as e:
            result["serving"] = {"state": "error", "message": _sentence(e)}
    result["credentials"] = inspect(cfg)
    return result


def _failed(result: WorkerResult, sentence: str, e: Exception) -> None:
    # The error's class name on the wire: the daemon reads it back as an ErrorKind.
    result["ok"], result["error"], result["kind"] = False, sentence, type(e).__name__


def _sentence(e: Exception) -> str:
    if isinstance(e, JoinAgentError):
        return str(e)
    from join_agent import log

    return f"{type(e).__name__}: {log.scrub(str(e))[:300]}"


def _all_failing(cfg: Config, message: str) -> list[TableReport]:
    """Every table's last report, marked failing: a pass that could not run at all (no CA,
    no auth key) must show in status, not leave yesterday's "valid" standing."""
    from join_agent.worker import certificate_files

    reports = certificate_files.facts_on_disk(cfg, _now())
    for r in reports:
        if r.get("state") != "removed":
            r.update(
                {"state": "failing", "last_error": {"message": message, "at": wire.iso(_now())}}
            )
    return reports


def dumps(doc: WorkerResult) -> str:
    return json.dumps(doc, sort_keys=True) + "\n"
