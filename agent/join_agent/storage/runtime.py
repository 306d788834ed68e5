"""``<runtime_dir>/<config>.json``: what a running daemon's config says that ``status``
needs (``core.records.StatusSettings``), so that ``status`` need not load the config.

Loading it (TOML, the config's model, pathlib) is most of what a ``status`` costs
(docs/benchmarks.md). The daemon writes the record when it starts and after each reload
it accepts, and removes it when it stops. ``status`` uses a record only when it is root's
alone (storage/guard.py), names the same config file, was written by this version of
join-agent, and the file's stamp (inode, size, times) is still the one the daemon loaded;
anything else, and ``status`` loads the config as it always did. A record never decides
more than the config it came from: the same file, read by the same code, says the same.

Standard library only, and no pathlib at import: ``status`` reads it on its fast path.
"""

from __future__ import annotations

import json
import os

from join_agent import TYPE_CHECKING
from join_agent.storage import guard, state

if TYPE_CHECKING:
    from join_agent.config.model import Config
    from join_agent.core.records import (
        ConfigStamp,
        HealthzTarget,
        RuntimeRecord,
        StatusSettings,
    )
    from join_agent.storage.guard import StrPath

SCHEMA = 1
_MAX_NAME = 240  # below NAME_MAX (255) with ".json" and a temp file's prefix to spare


def record_path(runtime_dir: str, config: str) -> str | None:
    """Where the record of ``config`` (an absolute path) lives; None for a path too long
    to name a file after (pure). The name is the path itself, made one file name."""
    name = config.replace("%", "%25").replace("/", "%2F")
    return None if len(name) > _MAX_NAME else os.path.join(runtime_dir, name + ".json")


def stamp_of(st: os.stat_result) -> ConfigStamp:
    """The stamp of a file from its stat (pure): any edit, replacement, chown or chmod
    changes one of these."""
    return {
        "dev": st.st_dev,
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def stamp(path: StrPath) -> ConfigStamp | None:
    try:
        return stamp_of(os.stat(path))
    except OSError:
        return None


def settings_of(cfg: Config) -> StatusSettings:
    """What ``status`` judges with, from a loaded config (pure)."""
    import datetime as dt

    healthz: HealthzTarget | None = None
    if cfg.kubelet.healthz_url:
        from urllib.parse import urlsplit

        parts = urlsplit(cfg.kubelet.healthz_url)
        healthz = {
            "url": cfg.kubelet.healthz_url,
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 80,
            "path": parts.path or "/healthz",
        }
    return {
        "state_dir": str(cfg.paths.state_dir),
        "pki_dir": str(cfg.paths.pki_dir),
        "kubeconfig": str(cfg.paths.kubeconfig),
        "ca_file": str(cfg.paths.ca_file),
        "signer_kind": cfg.signer_kind,
        "server": cfg.cluster.server,
        "node_name": cfg.node.name or None,
        "clock_skew": cfg.renewal.clock_skew.total_seconds(),
        "overdue_after": max(cfg.renewal.retry_max, dt.timedelta(minutes=15)).total_seconds(),
        "manage_kubelet": cfg.kubelet.manage,
        "healthz": healthz,
        "serving": cfg.signer_kind == "kubernetes" and cfg.kubernetes.serving,
        "certificates": bool(cfg.certificates),
    }


def record_of(cfg: Config, version: str, pid: int) -> RuntimeRecord | None:
    """The record the daemon ``pid`` running ``cfg`` writes; None when the config was not
    read from a file (pure)."""
    if cfg.stamp is None:
        return None
    return {
        "schema": SCHEMA,
        "version": version,
        "pid": pid,
        "config": str(cfg.source),
        "stamp": cfg.stamp,
        "settings": settings_of(cfg),
    }


def write(runtime_dir: str, record: RuntimeRecord) -> None:
    """Write (replace) ``record``, readable by all: it holds paths, never a secret."""
    path = record_path(runtime_dir, record["config"])
    if path is None:
        return
    from pathlib import Path

    from join_agent.storage.files import atomic_write

    guard.ensure_dir(runtime_dir, 0o755, "the runtime directory")
    atomic_write(Path(path), (json.dumps(record, sort_keys=True) + "\n").encode(), 0o644)


def remove(runtime_dir: str, config: str) -> None:
    """Remove the record of ``config``, if there is one."""
    path = record_path(runtime_dir, config)
    if path is not None:
        import contextlib  # the daemon's, on its way out: not on `status`'s path

        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def settings_for(runtime_dir: str, config: str, version: str) -> StatusSettings | None:
    """The settings recorded for ``config`` if they still say what the file says; None
    whenever that cannot be known (see the module's docstring)."""
    path = record_path(runtime_dir, config)
    if path is None or guard.problem(config, "config file") is not None:
        return None
    try:
        doc = json.loads(guard.read(path, "the runtime record", cap=guard.SMALL_CAP))
    except (OSError, ValueError, RecursionError, guard.UnsafePath):
        return None
    if not _usable(doc, config, version) or doc["stamp"] != stamp(config):
        return None
    record: RuntimeRecord = doc  # checked by _usable just above
    return record["settings"]


# The record's shape in storage/state.py's notation: written by root, but read as any
# file is. (A key marked "!" must be there.)
_N = type(None)
_SHAPE: dict[str, object] = {
    "schema!": int, "version!": str, "config!": str, "pid": int, "stamp!": (dict, _N),
    "settings!": {
        "state_dir!": str, "pki_dir!": str, "kubeconfig!": str, "ca_file!": str,
        "signer_kind!": str, "server!": str, "node_name!": (str, _N),
        "clock_skew!": (int, float), "overdue_after!": (int, float), "manage_kubelet!": bool,
        "healthz!": (_N, {"url!": str, "host!": str, "port!": int, "path!": str}),
        "serving!": bool, "certificates!": bool,
    },
}  # fmt: skip


def _usable(doc: object, config: str, version: str) -> bool:
    """Whether ``doc`` is a record of this version for ``config``, every key in its shape
    (pure)."""
    if state.shape_problem(doc, _SHAPE) is not None or not isinstance(doc, dict):
        return False
    return bool(doc["schema"] == SCHEMA and doc["version"] == version and doc["config"] == config)
