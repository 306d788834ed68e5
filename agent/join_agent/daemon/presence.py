"""What a running daemon leaves for other commands to find, and takes away when it stops:
its pidfile (``renew``, ``reload`` and ``status`` look for a live daemon there) and the
record of its settings (storage/runtime.py: ``status`` then need not load the config)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from join_agent import __version__
from join_agent.errors import JoinAgentError
from join_agent.host import platform
from join_agent.log import get_logger
from join_agent.storage import runtime, state

if TYPE_CHECKING:
    from join_agent.config.model import Config

log = get_logger("join_agent.daemon")


def announce(cfg: Config) -> None:
    state.write_agent_pidfile(cfg.paths.state_dir, os.getpid())
    record_settings(cfg)


def record_settings(cfg: Config) -> None:
    """Record ``cfg``'s settings for ``status`` (at start, after an accepted reload). Only
    a speed-up: when it cannot be written, ``status`` loads the config as before."""
    record = runtime.record_of(cfg, __version__, os.getpid())
    if record is None:
        return
    try:
        runtime.write(platform.current().runtime_dir, record)
    except (OSError, JoinAgentError) as e:
        log.warning(
            "runtime_record_not_written",
            error=str(e),
            msg="`join-agent status` will load the config itself",
        )


def withdraw(cfg: Config) -> None:
    with contextlib.suppress(OSError):
        runtime.remove(platform.current().runtime_dir, str(cfg.source))
    state.remove_agent_pidfile(cfg.paths.state_dir, os.getpid())
