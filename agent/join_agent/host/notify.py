"""Telling the service manager the truth: systemd's sd_notify, a no-op under SMF.

sdnotify swallows errors and ignores WATCHDOG_USEC, so the watchdog period and
WATCHDOG_PID are read here and errors are logged once, not hidden.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Protocol

from join_agent.log import get_logger

log = get_logger("join_agent.host.notify")


class Notifier(Protocol):
    watchdog_interval: dt.timedelta | None

    def send(self, *lines: str) -> None: ...


class NullNotifier:
    """No service-manager protocol (SMF, a terminal): every message is dropped."""

    watchdog_interval: dt.timedelta | None = None

    def send(self, *lines: str) -> None:
        pass


class SystemdNotifier:
    """sd_notify over $NOTIFY_SOCKET (abstract sockets included, via sdnotify)."""

    def __init__(self, environ: Mapping[str, str], pid: int) -> None:
        import sdnotify

        self._notifier = sdnotify.SystemdNotifier(debug=True)
        self._failed = False
        self.watchdog_interval = watchdog_interval(environ, pid)

    def send(self, *lines: str) -> None:
        # sdnotify encodes as latin-1: keep messages ASCII (our STATUS lines are).
        message = "\n".join(line.encode("ascii", "replace").decode() for line in lines)
        try:
            self._notifier.notify(message)
        except (OSError, AttributeError) as e:  # AttributeError: it never connected
            if not self._failed:
                log.warning("sd_notify_failed", error=str(e))
            self._failed = True


def watchdog_interval(environ: Mapping[str, str], pid: int) -> dt.timedelta | None:
    """Half of WATCHDOG_USEC, if the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None
    return dt.timedelta(microseconds=int(usec) / 2)


def for_environment(environ: Mapping[str, str] | None = None) -> Notifier:
    env = os.environ if environ is None else environ
    if env.get("NOTIFY_SOCKET"):
        return SystemdNotifier(env, os.getpid())
    return NullNotifier()
