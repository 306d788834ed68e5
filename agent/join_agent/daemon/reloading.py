"""What a SIGHUP may change in a running agent, and the record of each one's outcome."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from join_agent.config import loading
from join_agent.config.model import Config
from join_agent.core.wire import iso
from join_agent.errors import ConfigError
from join_agent.host import platform

if TYPE_CHECKING:
    from join_agent.core.records import ReloadRecord

# What a running agent cannot take over from a reload: its files (status, lock and
# pidfiles live there; a daemon under another state_dir is invisible to `status` and
# `reset`), the name the kubelet runs as, the signer, the metrics listener's socket.
_RESTART_ONLY: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("paths.state_dir", lambda c: c.paths.state_dir),
    ("paths.pki_dir", lambda c: c.paths.pki_dir),
    ("paths.kubeconfig", lambda c: c.paths.kubeconfig),
    ("paths.ca_file", lambda c: c.paths.ca_file),
    ("node.name", lambda c: c.node.name),
    ("signer.kind", lambda c: c.signer_kind),
    ("metrics.listen", lambda c: c.metrics_listen),
    ("metrics.textfile", lambda c: c.metrics_textfile),
)


@dataclass(frozen=True)
class Reload:
    """A config a SIGHUP may apply, and what it changes for the running agent."""

    new: Config
    renew: bool  # the node's identity: a new certificate
    kubelet: bool  # the kubelet's settings: restart it with them
    tables: bool  # the [[certificate]] tables


def read(old: Config) -> Reload:
    """Load the config file ``old`` came from; ConfigError (or the loader's error) when a
    running agent may not apply it."""
    new = loading.load(old.source)
    refusal = reload_refusal(old, new) or unsafe_commands(new)
    if refusal:
        raise ConfigError(refusal)
    return Reload(
        new,
        renew=identity_of(new) != identity_of(old),
        kubelet=new.kubelet != old.kubelet,
        tables=new.certificates != old.certificates,
    )


def reload_refusal(old: Config, new: Config) -> str | None:
    """Why ``new`` cannot replace ``old`` in a running agent, or None (pure)."""
    changed = [key for key, get in _RESTART_ONLY if get(old) != get(new)]
    if not changed:
        return None
    return (
        f"{' and '.join(changed)} changed, which a running agent cannot apply: restart it "
        f"({platform.current().restart_command}) to use the new config"
    )


def unsafe_commands(cfg: Config) -> str | None:
    """The trust rule for the commands a new config would run (kubelet, actions)."""
    from join_agent.host import preflight

    problems = preflight.command_problems(cfg)
    return "; ".join(problems) if problems else None


def identity_of(cfg: Config) -> tuple[object, ...]:
    """What, when changed by a reload, calls for a new certificate or kubeconfig."""
    k = cfg.kubernetes  # serving and csr_timeout do not touch the client certificate
    discovery = (k.bootstrap_token_file, k.ca_pins, k.discovery_file)
    return (cfg.cluster, cfg.node, cfg.signer_kind, cfg.cfssl, discovery, cfg.paths)


def record(previous: ReloadRecord | None, now: dt.datetime, refused: str | None) -> ReloadRecord:
    """status.json's ``reload``: `join-agent reload` waits for ``count`` to move."""
    return {
        "count": int((previous or {}).get("count", 0)) + 1,
        "at": iso(now),
        "ok": refused is None,
        "message": refused,
    }
