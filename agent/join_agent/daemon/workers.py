"""The daemon's worker children: ``join-agent worker <mode>`` in a process of its own, one
at a time, whose stdout is one JSON document. The child loads cryptography and httpx and
exits; the daemon only reads what it printed."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from join_agent.config.model import Config
from join_agent.core.protocol import ErrorKind, WorkerResult, failed, worker_result
from join_agent.host import children
from join_agent.log import get_logger

log = get_logger("join_agent.daemon")

# An enrollment that waits for nothing takes seconds; this bounds a hung one.
WORKER_TIMEOUT = dt.timedelta(minutes=10)


@dataclass
class Worker:
    """One running child: ``join-agent worker <mode>``."""

    mode: str
    proc: subprocess.Popen[bytes]
    started: dt.datetime
    output: bytearray = field(default_factory=bytearray)

    @property
    def stdout(self) -> IO[bytes]:
        return typing.cast(IO[bytes], self.proc.stdout)  # stdout=PIPE: never None


def worker_timeout(cfg: Config) -> dt.timedelta:
    """How long a worker may take: a CSR may wait for approval up to csr_timeout, and a pass
    over the [[certificate]] tables runs each table's action, each up to its timeout."""
    limit = WORKER_TIMEOUT
    if cfg.signer_kind == "kubernetes":
        limit = max(limit, cfg.kubernetes.csr_timeout + dt.timedelta(minutes=2))
    actions = sum((c.action.timeout for c in cfg.certificates), dt.timedelta(0))
    return max(limit, actions + dt.timedelta(minutes=5))


def spawn(cfg: Config, mode: str, environ: Mapping[str, str], now: dt.datetime) -> Worker:
    """Start a worker whose stdout the daemon reads without blocking; OSError if it cannot."""
    proc = subprocess.Popen(
        children.worker_argv(cfg.source, mode),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=children.worker_env(environ),
        close_fds=True,
        cwd=children.WORKING_DIRECTORY,
    )
    worker = Worker(mode=mode, proc=proc, started=now)
    os.set_blocking(worker.stdout.fileno(), False)
    return worker


def drain(worker: Worker) -> None:
    """Whatever the child has printed so far."""
    try:
        while chunk := worker.stdout.read(65536):
            worker.output += chunk
    except (BlockingIOError, TypeError):
        pass  # nothing more yet (read() on a non-blocking pipe may return None)


def result(output: bytes, returncode: int | None) -> WorkerResult:
    """The document a finished worker printed, or one that says why there is none."""
    try:
        doc = json.loads(output or b"null")
    except ValueError:
        doc = None
    return worker_result(doc, returncode)


def run_once(cfg: Config, mode: str, environ: Mapping[str, str]) -> WorkerResult:
    """A worker run to its end, for what the daemon needs before its loop starts."""
    try:
        done = subprocess.run(
            children.worker_argv(cfg.source, mode),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=children.worker_env(environ),
            cwd=children.WORKING_DIRECTORY,
            timeout=worker_timeout(cfg).total_seconds(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return failed(f"the worker did not run: {e}", ErrorKind.OS)
    return result(done.stdout, done.returncode)


class Slot:
    """The daemon's one worker at a time: started, read as it prints, killed when it takes
    longer than ``worker_timeout``, and its document handed back once it has exited."""

    def __init__(self, watch: Callable[[IO[bytes]], None], forget: Callable[[IO[bytes]], None]):
        self.watch, self.forget = watch, forget
        self.worker: Worker | None = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    @property
    def mode(self) -> str | None:
        return None if self.worker is None else self.worker.mode

    def start(
        self, cfg: Config, mode: str, environ: Mapping[str, str], now: dt.datetime
    ) -> WorkerResult | None:
        """Start a worker; the document of a failed attempt if it cannot be started."""
        try:
            self.worker = spawn(cfg, mode, environ, now)
        except OSError as e:  # out of memory or processes: a failed attempt, retried later
            return failed(f"cannot start the worker process: {e.strerror or e}", ErrorKind.OS)
        self.watch(self.worker.stdout)
        return None

    def collect(self, cfg: Config, now: dt.datetime) -> tuple[str, WorkerResult] | None:
        """(mode, document) once the worker has exited; None while it runs."""
        w = self.worker
        if w is None:
            return None
        drain(w)
        if w.proc.poll() is None:
            if now - w.started > worker_timeout(cfg):
                log.error("worker_timeout", mode=w.mode, pid=w.proc.pid)
                w.proc.kill()
            return None
        self.forget(w.stdout)
        w.stdout.close()
        self.worker = None
        return w.mode, result(bytes(w.output), w.proc.returncode)

    def deadline(self, cfg: Config) -> dt.datetime | None:
        return None if self.worker is None else self.worker.started + worker_timeout(cfg)

    def terminate(self) -> None:
        if self.worker is not None:
            self.worker.proc.terminate()  # the store is crash-safe; the next start recovers
