"""``join-agent run`` up to its loop: the trust rule for the config, one agent per
state_dir, a kubelet that would fight us refused, a kubelet a killed agent left behind
stopped, then the loop (loop.Daemon)."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

from join_agent.config.model import Config
from join_agent.daemon import workers
from join_agent.daemon.loop import Daemon
from join_agent.errors import ConfigError, JoinAgentError
from join_agent.host import children, notify, preflight
from join_agent.kubelet import command, processes, supervisor
from join_agent.log import get_logger
from join_agent.storage import files, names, state
from join_agent.storage.guard import UnsafePath

log = get_logger("join_agent.daemon")

# Like sd_notify's unset_environment: the socket is ours alone. A child that inherits it
# can speak for the service (systemctl, for one, reports ERRNO= there).
NOT_FOR_CHILDREN = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def kubelet_pidfile(cfg: Config) -> Path:
    return cfg.paths.state_dir / names.KUBELET_PIDFILE


def default_kubelet(cfg: Config, node_name: str) -> supervisor.KubeletSupervisor | None:
    argv = command.kubelet_argv(list(cfg.kubelet.command), cfg.paths.kubeconfig, node_name)
    return supervisor.KubeletSupervisor(
        argv=argv,
        env=command.kubelet_env(os.environ),
        pidfile=kubelet_pidfile(cfg),
        stop_grace=cfg.kubelet.stop_grace,
        backoff_base=cfg.kubelet.restart_min,
        backoff_cap=cfg.kubelet.restart_max,
        stable_after=cfg.kubelet.stable_after,
        draw=random.SystemRandom().random,
        procs=processes.OsProcesses(),
    )


def main(cfg: Config, environ: Mapping[str, str]) -> int:
    """Preflight, then the loop: what ``join-agent run`` does."""
    notifier = notify.for_environment(environ)
    child_env = {k: v for k, v in environ.items() if k not in NOT_FOR_CHILDREN}
    for name in NOT_FOR_CHILDREN:
        os.environ.pop(name, None)
    unsafe = preflight.problems(cfg)
    if unsafe:
        raise UnsafePath("; ".join(unsafe))
    # The working directory is nobody's business here (and must not keep a mount busy).
    os.chdir(children.WORKING_DIRECTORY)
    files.ensure_dir(cfg.paths.state_dir, 0o700)
    other = state.running_agent(cfg.paths.state_dir)
    if other is not None and other != os.getpid():
        raise JoinAgentError(
            f"join-agent run is already running for {cfg.paths.state_dir} (pid {other})"
        )
    # The kubelet's settings may be YAML: a worker reads them, the resident process does not.
    facts = workers.run_once(cfg, "kubelet", child_env)
    if facts.get("ok") is False:
        raise JoinAgentError(f"cannot read the kubelet's settings: {facts.get('error')}")
    problems = [str(p) for p in facts.get("conflicts") or []]
    if problems:
        raise ConfigError(
            "refusing to run a kubelet that would fight join-agent: " + "; ".join(problems)
        )
    if cfg.kubelet.manage:
        reaped = processes.reap_stale(
            kubelet_pidfile(cfg), stop_grace=cfg.kubelet.stop_grace, procs=processes.OsProcesses()
        )
        if reaped:
            log.warning("stale_kubelet", action=reaped)
    daemon = Daemon(
        cfg,
        notifier=notifier,
        environ=child_env,
        kubelet_factory=default_kubelet,
        kubelet_serves_ours=facts.get("serves_our_certificate") is True,
    )
    return daemon.run()
