"""``join-agent reset``: remove what ``join`` wrote, under the state lock."""

from __future__ import annotations

from pathlib import Path

from join_agent.config.model import Config
from join_agent.errors import JoinAgentError
from join_agent.storage import files, names, state

# serving.py's files, named here so that reset does not import cryptography.


def reset(cfg: Config) -> list[str]:
    """Stop a kubelet left behind, remove the credentials, kubeconfig, CA file and recorded
    state; returns one line per thing done."""
    from join_agent.host import preflight

    # Nothing is signalled or removed on the word of a file someone else could have put
    # there: the directories first, then each pidfile as it is read.
    preflight.require_directories(cfg)
    pid = state.running_agent(cfg.paths.state_dir)
    if pid is not None:
        raise JoinAgentError(
            f"join-agent run is running (pid {pid}): stop the service first "
            "(systemctl stop join-agent), then reset"
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
        candidates: list[Path] = []
        if cfg.paths.pki_dir.is_dir():
            for prefix in (names.CLIENT_PREFIX, names.SERVER_PREFIX):
                candidates += sorted(cfg.paths.pki_dir.glob(f"{prefix}-*.pem"))
                candidates += sorted(cfg.paths.pki_dir.glob(f"{files.TMP_PREFIX}{prefix}-*"))
            candidates.append(cfg.paths.pki_dir / names.SERVING_PENDING_KEY)
        candidates += [cfg.paths.kubeconfig, cfg.paths.ca_file]
        candidates += [
            cfg.paths.state_dir / n
            for n in (
                names.STATUS_FILE,
                names.TOFU_FILE,
                names.KUBELET_PIDFILE,
                names.SERVING_REQUEST,
            )
        ]
        for path in candidates:
            if path.is_symlink() or path.exists():
                path.unlink()
                done.append(f"removed {path}")
    return done
