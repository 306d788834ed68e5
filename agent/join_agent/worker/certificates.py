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

import datetime as dt
import grp
import ipaddress
import json
import os
import pwd
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from join_agent.config.model import CertificateSpec, Config, IPAddress
from join_agent.core import schedule
from join_agent.errors import CertificateRejected, ConfigError, JoinAgentError, StoreError
from join_agent.log import get_logger
from join_agent.pki import checks, compat, keys
from join_agent.signers.cfssl import CfsslSigner
from join_agent.storage import files, guard, names, state, store
from join_agent.worker import actions

log = get_logger("join_agent.worker.certificates")

DIRECTORY = names.CERTIFICATES_DIR


def request_for(spec: CertificateSpec, node_addresses: Sequence[IPAddress]) -> keys.Request:
    """What the table asks for (pure): its hosts split into names and addresses."""
    names: list[str] = []
    addresses: list[IPAddress] = []
    for host in spec.hosts:
        try:
            addresses.append(ipaddress.ip_address(host))
        except ValueError:
            names.append(host)
    if spec.node_addresses:
        addresses += node_addresses
    return keys.Request(
        common_name=spec.common_name,
        organizations=spec.organization,
        units=spec.organizational_unit,
        dns_names=tuple(dict.fromkeys(names)),
        addresses=tuple(dict.fromkeys(addresses)),
        usages=spec.usages,
    )


@dataclass(frozen=True)
class Plan:
    """What one pass does for one certificate, and when the next pass is due."""

    issue: str  # why a new certificate is needed now; "" = none
    run_action: bool  # a rotation's action has not succeeded yet and is due again
    next_attempt: dt.datetime


def decide(
    record: dict[str, Any],
    mismatch: str,
    *,
    now: dt.datetime,
    retry_min: dt.timedelta,
    retry_max: dt.timedelta,
    draw: float,
) -> Plan:
    """The pure decision for one certificate from its record (see ``_record``).

    ``mismatch`` says why the current pair no longer serves the table ("" when it does).
    """
    nb, na = _when(record.get("not_before")), _when(record.get("not_after"))
    deadline = None if nb is None or na is None else schedule.renewal_deadline(nb, na, draw)
    if mismatch:
        deadline = None
    at = schedule.next_attempt(
        now,
        deadline=deadline,
        not_after=na,
        failures=int(record.get("failures") or 0),
        last_attempt=_when(record.get("last_attempt")),
        retry_min=retry_min,
        retry_max=retry_max,
        draw=draw,
    )
    issue = ""
    if now >= at:
        issue = mismatch or ("no certificate yet" if deadline is None else "renewal deadline")
    action = record.get("action") or {}
    run_action = False
    if action.get("pending"):
        action_at = schedule.next_attempt(
            now,
            deadline=now,
            not_after=None,
            failures=int(action.get("failures") or 0),
            last_attempt=_when(action.get("at")),
            retry_min=retry_min,
            retry_max=retry_max,
            draw=draw,
        )
        run_action = now >= action_at and not issue
        at = min(at, action_at)
    return Plan(issue=issue, run_action=run_action, next_attempt=at if now < at else now)


def run_due(
    cfg: Config,
    signer: CfsslSigner,
    node_addresses: Sequence[IPAddress],
    *,
    now: Callable[[], dt.datetime],
    run_action: Callable[[CertificateSpec], actions.Outcome | None] = actions.run,
) -> list[dict[str, Any]]:
    """One pass over every table: issue what is due, run pending actions; the reports,
    plus one for each certificate left on disk by a table that was removed."""
    reports = []
    for spec in cfg.certificates:
        try:
            reports.append(_one(cfg, signer, spec, node_addresses, now=now, run_action=run_action))
        except (JoinAgentError, OSError, ValueError) as e:
            # One table's trouble (a folder gone, a value the libraries refuse) must neither
            # stop the others nor leave its last "valid" standing in status.
            message = str(e) if isinstance(e, JoinAgentError) else f"{type(e).__name__}: {e}"
            log.error("certificate_failed", name=spec.name, error=message)
            record = _read_record(_record_path(cfg, spec))
            record["failures"] = int(record.get("failures") or 0) + 1
            record["last_error"] = {"message": message[:500], "at": state.iso(now())}
            retry = now() + cfg.renewal.retry_max
            reports.append({**_report(spec, record, retry, now()), "state": "failing"})
    reports += orphans(cfg)
    return reports


def orphans(cfg: Config) -> list[dict[str, Any]]:
    """Certificates whose table is gone: their files are left alone, and said so."""
    root = cfg.paths.state_dir / DIRECTORY
    known = {s.name for s in cfg.certificates}
    out = []
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        if path.stem not in known:
            rec = _read_record(path)
            out.append({
                "name": path.stem,
                "state": "removed",
                "message": "its [[certificate]] table was removed; its files were left as "
                f"they are ({', '.join(rec.get('files') or []) or 'none'})",
                "not_after": rec.get("not_after"),
            })  # fmt: skip
    return out


def _one(
    cfg: Config,
    signer: CfsslSigner,
    spec: CertificateSpec,
    node_addresses: Sequence[IPAddress],
    *,
    now: Callable[[], dt.datetime],
    run_action: Callable[[CertificateSpec], actions.Outcome | None],
) -> dict[str, Any]:
    pairs = pair_store(cfg, spec)
    pairs.recover()
    files.sweep(pairs.directory)
    record = _read_record(_record_path(cfg, spec))
    request = request_for(spec, node_addresses)
    current = _current(pairs)
    if current is not None and record.get("serial") != f"{current.certificate.serial_number:x}":
        # A pair installed by a pass that died (or failed to export) before recording it:
        # finish that rotation (files, then the action) rather than ask the CA again.
        log.warning("certificate_rotation_resumed", name=spec.name)
        record.update(_facts(current.certificate), failures=0, last_error=None)
        record["action"] = {"pending": bool(spec.action.kind), "failures": 0}
        _export(spec, current, _ca_bundle(pairs, spec, current))

    def plan_for(mismatch: str) -> Plan:
        # One draw per certificate (its serial), as for the node's own.
        draw = random.Random(f"{spec.name}:{record.get('serial')}").random()  # noqa: S311
        return decide(
            record, mismatch, now=now(), retry_min=cfg.renewal.retry_min,
            retry_max=cfg.renewal.retry_max, draw=draw,
        )  # fmt: skip

    plan = plan_for(_mismatch(current, request, now(), cfg.renewal.clock_skew))
    if plan.issue:
        record["last_attempt"] = state.iso(now())
        try:
            current = _issue(cfg, signer, spec, request, pairs, now=now)
        except JoinAgentError as e:
            record["failures"] = int(record.get("failures") or 0) + 1
            record["last_error"] = {"message": str(e), "at": state.iso(now())}
            log.error("certificate_failed", name=spec.name, error=str(e))
        else:
            record.update(failures=0, last_error=None, last_success=state.iso(now()))
            record["rotations"] = int(record.get("rotations") or 0) + 1
            record["action"] = {"pending": bool(spec.action.kind), "failures": 0}
            plan = Plan(issue="", run_action=bool(spec.action.kind), next_attempt=now())
    elif current is not None:
        _export_if_changed(spec, pairs, current)  # a deleted or edited output file comes back
    if current is not None:
        record.update(_facts(current.certificate))
    record["files"] = [str(p) for p in (spec.cert_file, spec.key_file, spec.ca_file) if p]
    if plan.run_action:
        _write_record(cfg, spec, record)  # before the action: a crash must not lose "pending"
        _run_action(spec, record, now, run_action)
    after = plan_for("")
    record["next_attempt"] = state.iso(after.next_attempt)  # for status without the daemon
    _write_record(cfg, spec, record)
    return _report(spec, record, after.next_attempt, now())


def _issue(
    cfg: Config,
    signer: CfsslSigner,
    spec: CertificateSpec,
    request: keys.Request,
    pairs: store.PairStore,
    *,
    now: Callable[[], dt.datetime],
) -> store.Pair:
    _owner(spec)  # an unknown owner or group fails here, before the CA signs anything
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
    files.atomic_write(_ca_copy(pairs, spec), compat.pem(issued.ca_bundle), 0o644)
    _export(spec, pair, issued.ca_bundle)
    log.info(
        "certificate_rotated",
        name=spec.name,
        serial=f"{issued.certificate.serial_number:x}",
        not_after=compat.not_valid_after(issued.certificate).isoformat(),
        files=[str(spec.cert_file), str(spec.key_file)],
    )
    return pair


def _export(spec: CertificateSpec, pair: store.Pair, cas: Sequence[Any]) -> None:
    """Write the table's files from the pair: all staged first, then renamed, the key
    before the certificate (a reader that loads both after the action sees one pair)."""
    writes: list[tuple[Path, bytes, int]] = [
        (spec.key_file, pair.key_pem, spec.key_mode),
        (spec.cert_file, compat.pem(pair.chain), spec.cert_mode),
    ]
    if spec.ca_file is not None:
        writes.append((spec.ca_file, compat.pem(cas), 0o644))
    uid, gid = _owner(spec)
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in writes:
            if files.unchanged(path, data, mode) and _owned(path, uid, gid):
                continue
            tmp = files.stage(path, data, mode)
            staged.append((tmp, path))
            if uid != -1 or gid != -1:
                # Not through a symlink someone may have put in the temp file's place.
                os.chown(tmp, uid, gid, follow_symlinks=False)
        for tmp, path in staged:
            files.commit(tmp, path)
    except OSError as e:
        for tmp, _ in staged:
            files.discard(tmp)
        raise StoreError(f"cannot write {spec.name}'s files: {files.strerror(e)}") from None
    except JoinAgentError:
        for tmp, _ in staged:
            files.discard(tmp)
        raise


def _export_if_changed(spec: CertificateSpec, pairs: store.PairStore, pair: store.Pair) -> None:
    try:
        same = _read(spec.cert_file) == compat.pem(pair.chain)
        same = same and _read(spec.key_file) == pair.key_pem
    except (OSError, StoreError):
        same = False
    if not same:
        log.warning("certificate_files_restored", name=spec.name)
        _export(spec, pair, _ca_bundle(pairs, spec, pair))


def _ca_bundle(pairs: store.PairStore, spec: CertificateSpec, pair: store.Pair) -> list[Any]:
    try:
        return compat.load_pem_certificates(_read(_ca_copy(pairs, spec)))
    except (OSError, ValueError, StoreError):
        return list(pair.chain[1:])


def _read(path: Path) -> bytes:
    return guard.read(path, "the certificate file", cap=guard.PEM_CAP)


def _ca_copy(pairs: store.PairStore, spec: CertificateSpec) -> Path:
    return pairs.directory / f"{spec.name}-ca.crt"


def _owner(spec: CertificateSpec) -> tuple[int, int]:
    uid = gid = -1
    try:
        if spec.owner:
            uid = int(spec.owner) if spec.owner.isdigit() else pwd.getpwnam(spec.owner).pw_uid
        if spec.group:
            gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
    except KeyError:
        raise ConfigError(
            f"certificate.{spec.name}: owner {spec.owner!r} or group {spec.group!r} does not "
            "exist on this host"
        ) from None
    return uid, gid


def _owned(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    return uid in (-1, st.st_uid) and gid in (-1, st.st_gid)


def _run_action(
    spec: CertificateSpec,
    record: dict[str, Any],
    now: Callable[[], dt.datetime],
    run_action: Callable[[CertificateSpec], actions.Outcome | None],
) -> None:
    done = run_action(spec)
    action = dict(record.get("action") or {})
    action["at"] = state.iso(now())
    if done is None or done.ok:
        action.update(pending=False, failures=0, ok=True, exit=done.exit if done else None)
        action["output"] = done.output if done else ""
        log.info("certificate_action_ran", name=spec.name, kind=spec.action.kind)
    else:
        action.update(pending=True, ok=False, exit=done.exit, output=done.output)
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


def pair_store(cfg: Config, spec: CertificateSpec) -> store.PairStore:
    # A folder each: PairStore's recovery globs by prefix, and one name may prefix another.
    return store.PairStore(cfg.paths.state_dir / DIRECTORY / spec.name, spec.name)


def _record_path(cfg: Config, spec: CertificateSpec) -> Path:
    return cfg.paths.state_dir / DIRECTORY / f"{spec.name}.json"


def _read_record(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(guard.read(path, "the certificate record", cap=guard.SMALL_CAP))
    except (OSError, ValueError, RecursionError, StoreError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_record(cfg: Config, spec: CertificateSpec, record: dict[str, Any]) -> None:
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    files.atomic_write(_record_path(cfg, spec), data, 0o644)


def _facts(cert: Any) -> dict[str, Any]:
    return {
        "serial": f"{cert.serial_number:x}",
        "not_before": state.iso(compat.not_valid_before(cert)),
        "not_after": state.iso(compat.not_valid_after(cert)),
        "subject": cert.subject.rfc4514_string(),
    }


def _report(
    spec: CertificateSpec, record: dict[str, Any], next_attempt: dt.datetime, now: dt.datetime
) -> dict[str, Any]:
    na = _when(record.get("not_after"))
    if na is None:
        verdict = "none"
    elif na <= now:
        verdict = "expired"
    elif record.get("failures"):
        verdict = "failing"
    else:
        verdict = "valid"
    action = record.get("action") or {}
    return {
        "name": spec.name,
        "state": verdict,
        "serial": record.get("serial"),
        "subject": record.get("subject"),
        "not_after": record.get("not_after"),
        "next_attempt": state.iso(next_attempt),
        "failures": int(record.get("failures") or 0),
        "last_error": record.get("last_error"),
        "rotations": int(record.get("rotations") or 0),
        "action": {
            "kind": spec.action.kind or None,
            "pending": bool(action.get("pending")),
            "ok": action.get("ok"),
            "exit": action.get("exit"),
            "output": action.get("output"),
            "at": action.get("at"),
            "failures": int(action.get("failures") or 0),
        },
        "files": record.get("files") or [],
    }


def facts_on_disk(cfg: Config, now: dt.datetime) -> list[dict[str, Any]]:
    """What status shows without the daemon: each table's record as last written."""
    out = []
    for spec in cfg.certificates:
        record = _read_record(_record_path(cfg, spec))
        at = _when(record.get("next_attempt")) or now
        out.append(_report(spec, record, at, now))
    return out + orphans(cfg)


def _when(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return state.parse_iso(value)
    except ValueError:
        return None
