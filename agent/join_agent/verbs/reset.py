"""``join-agent reset``: remove what ``join`` wrote, under the state lock; with
``--for-image``, everything that belongs to this machine rather than to the image."""

from __future__ import annotations

import shutil
from pathlib import Path

from join_agent.config.model import Config
from join_agent.errors import JoinAgentError
from join_agent.storage import files, names, state

# serving.py's files, named here so that reset does not import cryptography.


def reset(cfg: Config, *, for_image: bool = False) -> list[str]:
    """Stop a kubelet left behind, remove the credentials, kubeconfig, CA file and recorded
    state; returns one line per thing done. ``for_image``: also the ``[[certificate]]``
    tables' keys, certificates and records, and the lock, so that every machine made from
    the image starts as a new node (docs/install.md, "Building a node image")."""
    from join_agent.host import preflight

    # Nothing is signalled or removed on the word of a file someone else could have put
    # there: the directories first, then each pidfile as it is read.
    preflight.require_directories(cfg)
    pid = state.running_agent(cfg.paths.state_dir)
    if pid is not None:
        from join_agent.host import platform

        raise JoinAgentError(
            f"join-agent run is running (pid {pid}): stop the service first "
            f"({platform.current().stop_command}), then reset"
        )
    done: list[str] = []
    pidfile = cfg.paths.state_dir / names.KUBELET_PIDFILE
    if pidfile.exists():
        # A kubelet left by an agent that was killed: stop it before its credentials go.
        from join_agent.kubelet import processes

        reaped = processes.reap_stale(
            pidfile, stop_grace=cfg.kubelet.stop_grace, procs=processes.OsProcesses()
        )
        if reaped:
            done.append(reaped)
    with files.state_lock(cfg.paths.state_dir):
        candidates = _written(cfg) + (_tables(cfg) if for_image else [])
        for path in candidates:
            if path.is_symlink() or path.exists():
                path.unlink()
                done.append(f"removed {path}")
        tables = cfg.paths.state_dir / names.CERTIFICATES_DIR
        if for_image and tables.is_dir() and not tables.is_symlink():
            shutil.rmtree(tables)
            done.append(f"removed {tables}")
    if for_image:
        lock = cfg.paths.state_dir / names.LOCK_FILE
        if lock.exists():  # after the lock is released: a fresh machine makes its own
            lock.unlink()
            done.append(f"removed {lock}")
    return done


def _written(cfg: Config) -> list[Path]:
    """What ``join`` and the daemon write for the node's own credentials."""
    out: list[Path] = []
    if cfg.paths.pki_dir.is_dir():
        for prefix in (names.CLIENT_PREFIX, names.SERVER_PREFIX):
            out += sorted(cfg.paths.pki_dir.glob(f"{prefix}-*.pem"))
            out += sorted(cfg.paths.pki_dir.glob(f"{files.TMP_PREFIX}{prefix}-*"))
        out.append(cfg.paths.pki_dir / names.SERVING_PENDING_KEY)
    out += [cfg.paths.kubeconfig, cfg.paths.ca_file]
    state_files = (
        names.STATUS_FILE, names.TOFU_FILE, names.KUBELET_PIDFILE, names.SERVING_REQUEST,
        names.MACHINE_RECORD,
    )  # fmt: skip
    return out + [cfg.paths.state_dir / n for n in state_files]


def _tables(cfg: Config) -> list[Path]:
    """The files the ``[[certificate]]`` tables export: keys made on this machine."""
    out: list[Path] = []
    for spec in cfg.certificates:
        out += [spec.cert_file, spec.key_file]
        if spec.ca_file is not None:
            out.append(spec.ca_file)
    return out


IMAGE_REMINDER = (
    "join-agent holds nothing of this machine now. Before you capture the image, empty "
    "the machine id too (`truncate -s 0 /etc/machine-id` with systemd), or every machine "
    'made from it shares one: docs/install.md, "Building a node image".'
)
