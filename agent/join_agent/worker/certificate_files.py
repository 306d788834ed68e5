"""A ``[[certificate]]`` table's files: its versioned pairs and record under
``<state_dir>/certificates/``, the files it exports (owner, modes, staged then renamed,
key before certificate), and the report `status` shows of it."""

from __future__ import annotations

import datetime as dt
import grp
import json
import os
import pwd
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from join_agent.config.model import CertificateSpec, Config
from join_agent.core import wire
from join_agent.core.tables import when
from join_agent.errors import ConfigError, JoinAgentError, StoreError
from join_agent.log import get_logger
from join_agent.pki import compat
from join_agent.pki.facts import serial as serial_of
from join_agent.storage import files, guard, names, store

if TYPE_CHECKING:
    from join_agent.core.records import TableRecord, TableReport

log = get_logger("join_agent.worker.certificates")

DIRECTORY = names.CERTIFICATES_DIR


def pair_store(cfg: Config, spec: CertificateSpec) -> store.PairStore:
    # A folder each: PairStore's recovery globs by prefix, and one name may prefix another.
    return store.PairStore(cfg.paths.state_dir / DIRECTORY / spec.name, spec.name)


def record_path(cfg: Config, spec: CertificateSpec) -> Path:
    return cfg.paths.state_dir / DIRECTORY / f"{spec.name}.json"


def read_record(path: Path) -> TableRecord:
    """The table's record as this module last wrote it; {} when there is none or it cannot
    be read."""
    try:
        doc = json.loads(guard.read(path, "the certificate record", cap=guard.SMALL_CAP))
    except (OSError, ValueError, RecursionError, StoreError):
        return {}
    return cast("TableRecord", doc) if isinstance(doc, dict) else {}


def write_record(cfg: Config, spec: CertificateSpec, record: TableRecord) -> None:
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    files.atomic_write(record_path(cfg, spec), data, 0o644)


def facts(cert: Any) -> TableRecord:
    return {
        "serial": serial_of(cert),
        "not_before": wire.iso(compat.not_valid_before(cert)),
        "not_after": wire.iso(compat.not_valid_after(cert)),
        "subject": cert.subject.rfc4514_string(),
    }


def report(
    spec: CertificateSpec, record: TableRecord, next_attempt: dt.datetime, now: dt.datetime
) -> TableReport:
    na = when(record.get("not_after"))
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
        "next_attempt": wire.iso_due(next_attempt),
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


def facts_on_disk(cfg: Config, now: dt.datetime) -> list[TableReport]:
    """What status shows without the daemon: each table's record as last written."""
    out = []
    for spec in cfg.certificates:
        record = read_record(record_path(cfg, spec))
        at = when(record.get("next_attempt")) or now
        out.append(report(spec, record, at, now))
    return out + orphans(cfg)


def orphans(cfg: Config) -> list[TableReport]:
    """Certificates whose table is gone: their files are left alone, and said so."""
    root = cfg.paths.state_dir / DIRECTORY
    known = {s.name for s in cfg.certificates}
    out: list[TableReport] = []
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        if path.stem not in known:
            rec = read_record(path)
            out.append({
                "name": path.stem,
                "state": "removed",
                "message": "its [[certificate]] table was removed; its files were left as "
                f"they are ({', '.join(rec.get('files') or []) or 'none'})",
                "not_after": rec.get("not_after"),
            })  # fmt: skip
    return out


def export(spec: CertificateSpec, pair: store.Pair, cas: Sequence[Any]) -> None:
    """Write the table's files from the pair: all staged first, then renamed, the key
    before the certificate (a reader that loads both after the action sees one pair)."""
    writes: list[tuple[Path, bytes, int]] = [
        (spec.key_file, pair.key_pem, spec.key_mode),
        (spec.cert_file, compat.pem(pair.chain), spec.cert_mode),
    ]
    if spec.ca_file is not None:
        writes.append((spec.ca_file, compat.pem(cas), 0o644))
    uid, gid = owner(spec)
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


def export_if_changed(spec: CertificateSpec, pairs: store.PairStore, pair: store.Pair) -> None:
    try:
        same = _read(spec.cert_file) == compat.pem(pair.chain)
        same = same and _read(spec.key_file) == pair.key_pem
    except (OSError, StoreError):
        same = False
    if not same:
        log.warning("certificate_files_restored", name=spec.name)
        export(spec, pair, ca_bundle(pairs, spec, pair))


def ca_bundle(pairs: store.PairStore, spec: CertificateSpec, pair: store.Pair) -> list[Any]:
    try:
        return compat.load_pem_certificates(_read(ca_copy(pairs, spec)))
    except (OSError, ValueError, StoreError):
        return list(pair.chain[1:])


def _read(path: Path) -> bytes:
    return guard.read(path, "the certificate file", cap=guard.PEM_CAP)


def ca_copy(pairs: store.PairStore, spec: CertificateSpec) -> Path:
    return pairs.directory / f"{spec.name}-ca.crt"


def owner(spec: CertificateSpec) -> tuple[int, int]:
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
