"""The kubelet as the daemon holds it: started once the node has joined, restarted when a
rotation needs it, stopped with the agent. The supervisor (kubelet/supervisor.py) runs
the process; this decides when to ask it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from join_agent.config.model import Config
from join_agent.daemon import workers
from join_agent.kubelet.supervisor import KubeletSupervisor
from join_agent.log import get_logger

if TYPE_CHECKING:
    from join_agent.core.records import KubeletRecord

log = get_logger("join_agent.daemon")

KubeletFactory = Callable[[Config, str], KubeletSupervisor | None]


class KubeletControl:
    def __init__(self, factory: KubeletFactory, *, serves_ours: bool) -> None:
        self.factory = factory
        # Whether the kubelet serves one of our certificates from a file: a rotation of it
        # then needs a restart. Read from its settings by a worker (they may be YAML, which
        # the resident process does not load).
        self.serves_ours = serves_ours
        self.supervisor: KubeletSupervisor | None = None
        self.next: dt.datetime | None = None  # when the supervisor wants its next tick

    def ask_settings(self, cfg: Config, environ: Mapping[str, str]) -> None:
        """A worker reads the kubelet's settings again (a reload changed [kubelet])."""
        facts = workers.run_once(cfg, "kubelet", environ)
        self.serves_ours = facts.get("serves_our_certificate") is True

    def ensure_started(self, cfg: Config, node_name: str, now: dt.datetime) -> None:
        if self.supervisor is None:
            self.supervisor = self.factory(cfg, node_name)
            if self.supervisor is not None:
                self.supervisor.start(now)

    def tick(self, now: dt.datetime) -> int:
        """Let the supervisor act; how many restarts that took."""
        if self.supervisor is None:
            return 0
        before = self.supervisor.snapshot().get("restarts", 0)
        self.next = self.supervisor.tick(now)
        return int(self.supervisor.snapshot().get("restarts", 0) - before)

    def after_rotation(
        self, now: dt.datetime, *, ca_changed: bool, rotated: bool, serving_restart: bool
    ) -> None:
        """The client certificate is re-read by client-go at each handshake: no restart. CA
        data in the kubeconfig is not reloaded, nor (before 1.31's default) a serving
        certificate read from a file: those need one restart."""
        if self.supervisor is None:
            return
        if ca_changed:
            log.warning("kubelet_restart", reason="the cluster CA changed")
            self.supervisor.restart(now)
        elif rotated:
            self.serving_rotated(now, "it serves the rotated certificate", serving_restart)

    def serving_rotated(self, now: dt.datetime, reason: str, enabled: bool) -> None:
        if self.supervisor is not None and enabled and self.serves_ours:
            log.info("kubelet_restart", reason=reason)
            self.supervisor.restart(now)

    def stop(self, now: dt.datetime) -> None:
        if self.supervisor is not None:
            self.supervisor.stop(now)

    def replace(self, now: dt.datetime) -> None:
        """A reload changed its command: stop it; the loop starts it again with the new."""
        self.stop(now)
        self.supervisor = None

    def stopped(self) -> bool:
        return self.supervisor is None or self.supervisor.snapshot().get("state") == "stopped"

    def has_process(self) -> bool:
        return self.supervisor is not None and self.supervisor.snapshot().get("pid") is not None

    def snapshot(self) -> KubeletRecord:
        return self.supervisor.snapshot() if self.supervisor is not None else {}
