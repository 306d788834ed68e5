"""What wakes the loop: a signal (through the wake-up fd), a worker's output, the kernel's
address notifications, or the time it asked for. One selector; the loop sleeps in
``wait`` and nowhere else."""

from __future__ import annotations

import os
import selectors
import signal
from typing import IO, Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


class Wakeups:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []  # received, not handled yet
        self._read = self._write = -1
        self._previous = -1

    def install(self) -> None:
        """Take the signals the daemon handles; SIGCHLD too, so a worker's exit wakes it."""
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.selector.register(self._read, selectors.EVENT_READ, "signal")
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, lambda signum, _frame: self.signals.append(signum))

    def restore(self) -> None:
        signal.set_wakeup_fd(self._previous)

    def take(self) -> list[int]:
        """The signals received since the last call (the wake-up pipe emptied)."""
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass
        taken, self.signals = self.signals, []
        return taken

    def watch(self, stream: IO[bytes]) -> None:
        self.selector.register(stream, selectors.EVENT_READ, "worker")

    def forget(self, stream: IO[bytes] | HasFileno) -> None:
        self.selector.unregister(stream)

    def watch_addresses(self, feed: HasFileno) -> None:
        self.selector.register(feed, selectors.EVENT_READ, "addresses")

    def wait(self, seconds: float) -> set[str]:
        """Sleep until something happens or ``seconds`` pass; what became readable."""
        return {key.data for key, _ in self.selector.select(seconds)}
