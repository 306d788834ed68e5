"""Extra certificates from ``[[certificate]]`` tables (a control-plane host's proxy client,
front-proxy, etcd certificates…), kept by the same pipeline as the node's own.

Each one: a key made here, a CSR with exactly the table's subject and hosts, CFSSL's
``authsign`` with the table's profile, the answer checked against the pinned CA and the
request, a versioned pair in ``<state_dir>/certificates/<name>/`` (crash-safe, like the
kubelet's), the table's files exported from it, and its action run once per rotation —
retried with backoff when it fails, and reported, never swallowed. Decisions are pure
(``decide``); the rest is the edge.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from cryptography.hazmat.primitives import serialization

from join_agent.config.model import CertificateSpec, Config, IPAddress
from join_agent.core import tables, wire
from join_agent.errors import CertificateRejected, IdentityError, JoinAgentError, StoreError
from join_agent.log import get_logger
from join_agent.pki import checks, compat, facts, keys
from join_agent.signers.cfssl import CfsslSigner
from join_agent.storage import files, guard, names, store
from join_agent.worker import actions, certificate_files

if TYPE_CHECKING:
    from join_agent.core.records import TableRecord, TableReport

log = get_logger("join_agent.worker.certificates")

DIRECTORY = names.CERTIFICATES_DIR


# The node's addresses, or why they could not be found: only the tables that ask for them
# (node_addresses = true) fail for it; the others go on.
NodeAddresses = Sequence[IPAddress] | IdentityError


def request_for(spec: CertificateSpec, node_addresses: NodeAddresses) -> keys.Request:
    """What the table asks for (pure): its hosts split into names and addresses."""
    names: list[str] = []
    addresses: list[IPAddress] = []
    for host in spec.hosts:
        try:
            addresses.append(ipaddress.ip_address(host))
        except ValueError:
            names.append(host)
    if spec.node_addresses:
        if isinstance(node_addresses, IdentityError):
            raise IdentityError(
                f"[[certificate]] {spec.name} wants the node's addresses: {node_addresses}"
            )
        addresses += node_addresses
    return keys.Request(
        common_name=spec.common_name,
        organizations=spec.organization,
        units=spec.organizational_unit,
        dns_names=tuple(dict.fromkeys(names)),
        addresses=tuple(dict.fromkeys(addresses)),
        usages=spec.usages,
    )


def run_due(
    cfg: Config,
    signer: CfsslSigner,
    node_addresses: NodeAddresses,
    *,
    now: Callable[[], dt.datetime],
    run_action: Callable[[CertificateSpec], actions.Outcome | None] = actions.run,
) -> list[TableReport]:
    """One pass over every table: issue what is due, then run the pending actions, once
    per target (``actions.target_of``) and after every table of the pass is installed, so
    that a service reading several of them restarts once, with all of them new; the
    reports, plus one for each certificate left on disk by a table that was removed."""
    done: dict[str, _Table] = {}
    reports: dict[str, TableReport] = {}
    for spec in cfg.certificates:
        with _one_table(cfg, spec, reports, now):
            done[spec.name] = _one(cfg, signer, spec, node_addresses, now=now)
    by_target: dict[tuple[object, ...], list[_Table]] = {}
    for table in done.values():
        if table.run_action:
            by_target.setdefault(actions.target_of(table.spec), []).append(table)
    for group in by_target.values():
        outcome = _act(group, run_action)
        for table in group:
            with _one_table(cfg, table.spec, reports, now):
                _record_action(table.spec, table.record, outcome, now, shared=len(group))
    for name, table in done.items():
        with _one_table(cfg, table.spec, reports, now):
            reports[name] = _finish(cfg, table, now)
    return [reports[s.name] for s in cfg.certificates if s.name in reports] + (
        certificate_files.orphans(cfg)
    )


@contextlib.contextmanager
def _one_table(
    cfg: Config,
    spec: CertificateSpec,
    reports: dict[str, TableReport],
    now: Callable[[], dt.datetime],
) -> Iterator[None]:
    """One table's trouble (a folder gone, a value the libraries refuse) must neither stop
    the others nor leave its last "valid" standing in status."""
    try:
        yield
    except (JoinAgentError, OSError, ValueError) as e:
        message = str(e) if isinstance(e, JoinAgentError) else f"{type(e).__name__}: {e}"
        log.error("certificate_failed", name=spec.name, error=message)
        record = certificate_files.read_record(certificate_files.record_path(cfg, spec))
        record["failures"] = int(record.get("failures") or 0) + 1
        record["last_error"] = {"message": message[:500], "at": wire.iso(now())}
        retry = now() + cfg.renewal.retry_max
        reports[spec.name] = {
            **certificate_files.report(spec, record, retry, now()),
            "state": "failing",
        }


class _Table(NamedTuple):
    """A table after its pass, before its action: what ``_finish`` records."""

    spec: CertificateSpec
    record: TableRecord
    run_action: bool
    plan_for: Callable[[str], tables.Plan]


def _one(
    cfg: Config,
    signer: CfsslSigner,
    spec: CertificateSpec,
    node_addresses: NodeAddresses,
    *,
    now: Callable[[], dt.datetime],
) -> _Table:
    pairs = certificate_files.pair_store(cfg, spec)
    pairs.recover()
    files.sweep(pairs.directory)
    record = certificate_files.read_record(certificate_files.record_path(cfg, spec))
    request = request_for(spec, node_addresses)
    current = _current(pairs)
    if current is not None and record.get("serial") != facts.serial(current.certificate):
        _resume(spec, pairs, current, record)

    def plan_for(mismatch: str) -> tables.Plan:
        # One draw per certificate (its serial), as for the node's own.
        draw = random.Random(f"{spec.name}:{record.get('serial')}").random()  # noqa: S311
        return tables.decide(
            record, mismatch, now=now(), retry_min=cfg.renewal.retry_min,
            retry_max=cfg.renewal.retry_max, draw=draw,
        )  # fmt: skip

    plan = plan_for(_mismatch(current, request, now(), cfg.renewal.clock_skew))
    if plan.issue:
        record["last_attempt"] = wire.iso(now())
        try:
            current = _issue(cfg, signer, spec, request, pairs, now=now)
        except JoinAgentError as e:
            record["failures"] = int(record.get("failures") or 0) + 1
            record["last_error"] = {"message": str(e), "at": wire.iso(now())}
            log.error("certificate_failed", name=spec.name, error=str(e))
        else:
            record.update({"failures": 0, "last_error": None, "last_success": wire.iso(now())})
            record["rotations"] = int(record.get("rotations") or 0) + 1
            record["action"] = {"pending": bool(spec.action.kind), "failures": 0}
            plan = tables.Plan(issue="", run_action=bool(spec.action.kind), next_attempt=now())
    elif current is not None:
        certificate_files.export_if_changed(
            spec, pairs, current
        )  # a deleted or edited output file comes back
    if current is not None:
        record.update(certificate_files.facts(current.certificate))
    record["files"] = [str(p) for p in (spec.cert_file, spec.key_file, spec.ca_file) if p]
    if plan.run_action:
        certificate_files.write_record(
            cfg, spec, record
        )  # before the action: a crash must not lose "pending"
    return _Table(spec, record, plan.run_action, plan_for)


def _finish(cfg: Config, table: _Table, now: Callable[[], dt.datetime]) -> TableReport:
    after = table.plan_for("")
    table.record["next_attempt"] = wire.iso_due(after.next_attempt)  # status without the daemon
    certificate_files.write_record(cfg, table.spec, table.record)
    return certificate_files.report(table.spec, table.record, after.next_attempt, now())


def _resume(
    spec: CertificateSpec, pairs: store.PairStore, current: store.Pair, record: TableRecord
) -> None:
    """A pair installed by a pass that died (or failed to export) before recording it:
    finish that rotation (files, then the action) rather than ask the CA again."""
    log.warning("certificate_rotation_resumed", name=spec.name)
    record.update(certificate_files.facts(current.certificate))
    record.update({"failures": 0, "last_error": None})
    record["action"] = {"pending": bool(spec.action.kind), "failures": 0}
    certificate_files.export(spec, current, certificate_files.ca_bundle(pairs, spec, current))


def _issue(
    cfg: Config,
    signer: CfsslSigner,
    spec: CertificateSpec,
    request: keys.Request,
    pairs: store.PairStore,
    *,
    now: Callable[[], dt.datetime],
) -> store.Pair:
    certificate_files.owner(
        spec
    )  # an unknown owner or group fails here, before the CA signs anything
    key = keys.generate_key(spec.key)
    issued = signer.sign_with_profile(
        keys.build_request_csr(key, request), request.hosts(), spec.profile
    )
    checks.check_certificate(
        issued.certificate,
        key=key,
        request=request,
        ca=issued.verify_with,
        now=now(),
        clock_skew=cfg.renewal.clock_skew,
        who=f"the certificate the CA issued for [[certificate]] {spec.name!r}",
    )
    chain = [issued.certificate]
    if issued.ca.issuer != issued.ca.subject:
        chain.append(issued.ca)
    version = pairs.install(chain, keys.key_pem(key), now())
    pairs.prune()
    pair = store.parse_pair(version, guard.read(version, "the new pair", cap=guard.PEM_CAP))
    # Kept beside the pairs, so that a deleted ca_file can be written again without the CA.
    files.atomic_write(certificate_files.ca_copy(pairs, spec), compat.pem(issued.ca_bundle), 0o644)
    certificate_files.export(spec, pair, issued.ca_bundle)
    log.info(
        "certificate_rotated",
        name=spec.name,
        serial=facts.serial(issued.certificate),
        not_after=compat.not_valid_after(issued.certificate).isoformat(),
        files=[str(spec.cert_file), str(spec.key_file)],
    )
    return pair


def _act(
    group: Sequence[_Table], run_action: Callable[[CertificateSpec], actions.Outcome | None]
) -> actions.Outcome | None:
    """The action shared by ``group``, run once (as its first table's); a failure to run
    it at all is its outcome, for every table of the group."""
    try:
        return run_action(group[0].spec)
    except OSError as e:
        return actions.Outcome(False, None, f"cannot run the action: {e.strerror or e}")


def _record_action(
    spec: CertificateSpec,
    record: TableRecord,
    done: actions.Outcome | None,
    now: Callable[[], dt.datetime],
    *,
    shared: int,
) -> None:
    action = (record.get("action") or {}).copy()
    action["at"] = wire.iso(now())
    if done is None or done.ok:
        action.update({"pending": False, "failures": 0, "ok": True})
        action["exit"] = done.exit if done else None
        action["output"] = done.output if done else ""
        log.info("certificate_action_ran", name=spec.name, kind=spec.action.kind, tables=shared)
    else:
        action.update({"pending": True, "ok": False, "exit": done.exit, "output": done.output})
        action["failures"] = int(action.get("failures") or 0) + 1
        log.error(
            "certificate_action_failed", name=spec.name, kind=spec.action.kind,
            result=done.describe(), output=done.output[-300:],
        )  # fmt: skip
    record["action"] = action


def _current(pairs: store.PairStore) -> store.Pair | None:
    try:
        return pairs.load_current()
    except StoreError as e:
        log.warning("certificate_unreadable", path=str(pairs.current), error=str(e))
        return None


def _mismatch(
    pair: store.Pair | None, request: keys.Request, now: dt.datetime, skew: dt.timedelta
) -> str:
    if pair is None:
        return ""
    try:
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
        checks.check_certificate(
            pair.certificate,
            key=key,  # type: ignore[arg-type]
            request=request,
            ca=None,
            now=now,
            clock_skew=skew,
            who="the current certificate",
        )
    except CertificateRejected as e:
        if compat.not_valid_after(pair.certificate) <= now:
            return ""  # expired: the schedule says "now" by itself
        return f"it no longer matches its table ({e})"
    return ""
