"""``join-agent run``: keep the node's credentials valid and its kubelet running.

The resident loop stays on the standard library: every enrollment or inspection runs
in a short-lived child (``join-agent worker …``) that loads cryptography and httpx and
exits. The loop sleeps until the next event — a renewal time, a signal, a child
exiting, a watchdog tick — never longer than schedule.MAX_SLEEP, and recomputes every
time from the wall clock (suspend, NTP steps).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import selectors
import signal
import subprocess
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import __version__, children, config, files, platform, state
from .config import Config
from .core import schedule
from .core.durations import format_duration
from .core.protocol import ErrorKind
from .core.renewal import Held, RenewalPolicy, identity_mismatch, renew_at
from .errors import ConfigError, JoinAgentError
from .kubelet import KubeletSupervisor
from .log import get_logger
from .notify import Notifier

log = get_logger("join_agent.daemon")

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Worker:
    """One running child: ``join-agent worker <mode>``."""

    mode: str
    proc: subprocess.Popen[bytes]
    started: dt.datetime
    output: bytearray = field(default_factory=bytearray)


class Daemon:
    """The loop: it starts workers and the kubelet, and acts on what core.renewal decides."""

    def __init__(
        self,
        cfg: Config,
        *,
        notifier: Notifier,
        environ: Mapping[str, str],
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        kubelet_factory: Callable[[Config, str], KubeletSupervisor | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.notifier = notifier
        self.environ = dict(environ)
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.kubelet_factory = kubelet_factory or _default_kubelet
        self.kubelet: KubeletSupervisor | None = None
        self.creds: dict[str, Any] | None = None
        self.serving: dict[str, Any] | None = None  # the serving certificate's last report
        self.serving_next: dt.datetime | None = None  # when to look at it again
        self.extras: list[dict[str, Any]] | None = None  # the [[certificate]] reports
        self.extras_next: dt.datetime | None = None
        self.extras_pass_pending = False  # a reload changed the tables: look at once
        self.renewal = RenewalPolicy(
            retry_min=cfg.renewal.retry_min,
            retry_max=cfg.renewal.retry_max,
            salt=self.rng.random(),  # a fleet that failed in one second retries apart
        )
        self.worker: Worker | None = None
        self.pending_signals: list[int] = []
        self.stopping = False
        self.ready_sent = False  # READY=1: the agent is up (see _up)
        self.worked = False  # joined with its kubelet started, once: agent.state "running"
        self.started_at = clock()
        self.start_time = state.process_start_time(os.getpid())  # read once, not per tick
        self.last_published: str = ""
        self.last_status_line = ""
        # The last SIGHUP's outcome, for status.json (`join-agent reload` waits for it).
        self.reloads: dict[str, Any] | None = None
        self.last_watchdog = 0.0
        self.identity_checked = -1e9  # monotonic time of the last address check
        self.seen_addresses: list[str] | None = None
        self.selector = selectors.DefaultSelector()
        self.metrics: Any = None

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.selector.register(wake_r, selectors.EVENT_READ, "signal")
        previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        state.write_agent_pidfile(self.cfg.paths.state_dir, os.getpid())
        # A status.json temp file of a killed predecessor would otherwise stay forever.
        for leftover in files.sweep(self.cfg.paths.state_dir):
            log.info("removed_leftover", path=str(leftover))
        self._start_metrics()
        log.info("starting", version=__version__, config=str(self.cfg.source), pid=os.getpid())
        self.notifier.send("STATUS=starting: reading the credentials on disk")
        self._spawn_worker("inspect")
        try:
            while True:
                now = self.clock()
                self._drain(wake_r)
                self._handle_signals(now)
                self._collect_worker(now)
                if not self.stopping:
                    self._decide(now)
                self._tick_kubelet(now)
                if self.stopping and self._stopped(now):
                    break
                self._publish(now)
                self._watchdog()
                timeout = schedule.sleep_seconds(now, self._next_wake(now))
                interval = self.notifier.watchdog_interval
                if interval is not None and not self.stopping:  # no pings while stopping
                    # Wake when the next ping is due, not a whole interval after any other
                    # wake-up: the gap between pings stays one interval.
                    due = self.last_watchdog + interval.total_seconds() - time.monotonic()
                    timeout = min(timeout, max(due, 0.0))
                self.selector.select(timeout)
        finally:
            signal.set_wakeup_fd(previous_fd)
            state.remove_agent_pidfile(self.cfg.paths.state_dir, os.getpid())
        self._publish(self.clock(), final=True)
        log.info("stopped")
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)

    def _drain(self, fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self, now: dt.datetime) -> None:
        signals, self.pending_signals = self.pending_signals, []
        for sig in signals:
            if sig in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                self._begin_stop(now, signal.Signals(sig).name)
            elif sig == signal.SIGHUP:
                self._reload(now)
            elif sig == signal.SIGUSR1 and not self.stopping:
                log.info("renewal_requested", via="SIGUSR1")
                self.renewal.ask("requested (SIGUSR1 / join-agent renew)")

    # ------------------------------------------------------------------ decisions

    def _decide(self, now: dt.datetime) -> None:
        """Start a worker when one is due, and the kubelet when credentials exist."""
        if self.creds is None or self.worker is not None:
            return
        if self._files_changed():
            # Someone else wrote the credentials (`join-agent join`, an operator): read
            # them again rather than renew on the strength of stale facts.
            log.info("credentials_changed_on_disk")
            self._spawn_worker("inspect")
            return
        self._check_identity(now)
        due = self._next_attempt(now)
        if due is not None and now >= due:
            self._spawn_worker("enroll")
            return
        if self._joined() and self.cfg.kubelet.manage and self.kubelet is None:
            self._start_kubelet(now)
        # Never before the kubelet: it runs with its self-signed certificate meanwhile.
        if self._serving_wanted() and self._joined() and now >= (self.serving_next or now):
            self._spawn_worker("serving")
        elif self._extras_wanted() and now >= (self.extras_next or now):
            self._spawn_worker("certificates")

    def _files_changed(self) -> bool:
        ids = (self.creds or {}).get("ids")
        if not isinstance(ids, dict):
            return False
        current = self.cfg.paths.pki_dir / "kubelet-client-current.pem"
        return ids.get("credentials") != state.file_identity(current)

    def _joined(self) -> bool:
        return bool(self.creds and self.creds.get("present")) and self.cfg.paths.kubeconfig.exists()

    def _held(self) -> Held | None:
        """The certificate on disk, as the renewal policy sees it; None without one."""
        c = self.creds
        if not c or not c.get("present"):
            return None
        return Held(
            serial=str(c["serial"]),
            not_before=state.parse_iso(c["not_before"]),
            not_after=state.parse_iso(c["not_after"]),
        )

    def _next_attempt(self, now: dt.datetime) -> dt.datetime:
        return self.renewal.next_attempt(now, self._held())

    def _check_identity(self, now: dt.datetime) -> None:
        """Renew early when the node's name or addresses no longer match the certificate."""
        c = self.creds
        if not c or not c.get("present") or self.renewal.requested:
            return
        # At most once a minute: a netlink dump on every watchdog tick is work for nothing.
        mono = time.monotonic()
        if mono - self.identity_checked < 60:
            return
        self.identity_checked = mono
        from . import identity

        try:
            ident = identity.resolve(self.cfg.node)
        except JoinAgentError as e:
            log.warning("identity_unavailable", error=str(e))
            return
        want_ips = sorted(str(a) for a in ident.addresses)
        if self.seen_addresses is not None and want_ips != self.seen_addresses:
            # The serving certificate and [[certificate]] tables with node_addresses name
            # them too: look at those at once rather than at their next deadline.
            self.serving_next = self.extras_next = None
        self.seen_addresses = want_ips
        have_ips = sorted(c.get("sans", {}).get("ip", []))
        why = identity_mismatch(
            c.get("node"),
            have_ips,
            ident.name,
            want_ips,
            addresses_in_certificate=self.cfg.signer_kind != "kubernetes",
        )
        if why is not None:
            log.info(
                "identity_changed",
                node=ident.name,
                addresses=want_ips,
                certificate_addresses=have_ips,
            )
            self.renewal.request(why)

    # ------------------------------------------------------------------ the worker child

    def _spawn_worker(self, mode: str) -> None:
        argv = children.worker_argv(self.cfg.source, mode)
        env = children.worker_env(self.environ)
        now = self.clock()
        if mode == "enroll":
            self.renewal.begin(now)
            log.info("enrolling", reason=self.renewal.reason or "renewal deadline")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                cwd=children.WORKING_DIRECTORY,
            )
        except OSError as e:  # out of memory or processes: a failed attempt, retried later
            error = f"cannot start the worker process: {e.strerror or e}"
            self._apply(now, mode, {"ok": False, "error": error, "kind": "OSError"})
            return
        stdout = typing.cast(IO[bytes], proc.stdout)  # stdout=PIPE: never None
        os.set_blocking(stdout.fileno(), False)
        self.selector.register(stdout, selectors.EVENT_READ, "worker")
        self.worker = Worker(mode=mode, proc=proc, started=now)

    def _collect_worker(self, now: dt.datetime) -> None:
        w = self.worker
        if w is None:
            return
        stdout = typing.cast(IO[bytes], w.proc.stdout)
        try:
            while chunk := stdout.read(65536):
                w.output += chunk
        except (BlockingIOError, TypeError):
            pass  # nothing more yet (read() on a non-blocking pipe may return None)
        if w.proc.poll() is None:
            if now - w.started > worker_timeout(self.cfg):
                log.error("worker_timeout", mode=w.mode, pid=w.proc.pid)
                w.proc.kill()
            return
        self.selector.unregister(stdout)
        stdout.close()
        self.worker = None
        try:
            result = json.loads(bytes(w.output) or b"null")
        except ValueError:
            result = None
        if not isinstance(result, dict):
            result = {
                "ok": False,
                "error": f"the worker exited with status {w.proc.returncode} and no result "
                "(see the log lines above)",
                "kind": "WorkerError",
            }
        self._apply(now, w.mode, result)

    def _extras_wanted(self) -> bool:
        # After the last table is removed, one more pass reports what was left on disk.
        return bool(self.cfg.certificates) or self.extras_pass_pending

    def _apply_extras(self, now: dt.datetime, result: dict[str, Any]) -> None:
        reports = result.get("certificates")
        if not isinstance(reports, list):  # the pass failed as a whole (no CA, no key…)
            self.extras_next = now + self.cfg.renewal.retry_max
            return
        self.extras = reports
        self.extras_pass_pending = False
        times = [state.parse_iso(r["next_attempt"]) for r in reports if r.get("next_attempt")]
        floor = now + self.cfg.renewal.retry_min
        self.extras_next = max(min(times), floor) if times else None
        for r in reports:
            if r.get("state") != "valid" or (r.get("action") or {}).get("pending"):
                log.warning("certificate_attention", name=r.get("name"), state=r.get("state"))

    def _serving_wanted(self) -> bool:
        return self.cfg.signer_kind == "kubernetes" and self.cfg.kubernetes.serving

    def _apply_serving(self, now: dt.datetime, report: dict[str, Any]) -> None:
        """Remember the serving certificate's state and when to look at it again: soon
        while a request waits for approval, at its renewal point once it is current."""
        self.serving = report
        self.serving_next = now + self.cfg.renewal.retry_max
        if report.get("state") == "current" and report.get("renew_at"):
            renew_at = state.parse_iso(report["renew_at"])
            self.serving_next = max(renew_at, now + self.cfg.renewal.retry_min)
        if report.get("state") in ("pending", "denied", "error"):
            log.info("serving_certificate", state=report.get("state"), msg=report.get("message"))
        if (
            report.get("rotated")
            and self.kubelet is not None
            and self.cfg.kubelet.restart_on_serving_rotation
            and self._kubelet_serves_our_cert()
        ):
            log.info("kubelet_restart", reason="it serves the rotated serving certificate")
            self.kubelet.restart(now)

    def _apply(self, now: dt.datetime, mode: str, result: dict[str, Any]) -> None:
        if isinstance(result.get("serving"), dict):
            self._apply_serving(now, result["serving"])
        elif mode == "serving":  # the worker died before it could report: not at once again
            self.serving_next = now + self.cfg.renewal.retry_max
        if mode == "certificates":
            self._apply_extras(now, result)
        if mode in ("serving", "certificates"):
            self.creds = result.get("credentials", self.creds)
            return
        self._apply_node(now, mode, result)

    def _apply_node(self, now: dt.datetime, mode: str, result: dict[str, Any]) -> None:
        """What an ``inspect`` or ``enroll`` worker found out about the node's own pair."""
        creds = result.get("credentials")
        if isinstance(creds, dict):
            old_serial = (self.creds or {}).get("serial")
            self.creds = creds
            rotated = creds.get("serial") != old_serial and old_serial is not None
        else:
            rotated = False
        r = self.renewal
        if mode == "inspect":
            if result.get("ok") is False and self.creds is None:
                self.creds = {"present": False}
            delay = r.first_look(
                now, joined=self._joined(), splay=self.cfg.renewal.splay, draw=self.rng.random()
            )
            if delay is not None:
                log.info("splay", delay=format_duration(delay))
            return
        if result.get("ok"):
            r.succeeded(now)
            log.info(
                "renewed", serial=(self.creds or {}).get("serial"), source=result.get("source")
            )
            self._after_rotation(now, ca_changed=bool(result.get("ca_changed")), rotated=rotated)
            if self.metrics:
                self.metrics.renewals.labels(result="success").inc()
        else:
            kind = ErrorKind.of(result.get("kind", ""))
            r.failed(now, str(result.get("error", "unknown error")), kind)
            log.error("renewal_failed", error=str(result.get("error")), failures=r.failures)
            if self.metrics:
                self.metrics.renewals.labels(result="failure").inc()
                self.metrics.failures.labels(reason=kind.value or "unknown").inc()

    def _after_rotation(self, now: dt.datetime, *, ca_changed: bool, rotated: bool) -> None:
        # The client certificate is re-read by client-go at each handshake: no restart.
        # CA data in the kubeconfig is not reloaded, nor (before 1.31's default) a serving
        # certificate read from a file: those need one restart.
        if self.kubelet is None or not (ca_changed or rotated):
            return
        if ca_changed:
            log.warning("kubelet_restart", reason="the cluster CA changed")
            self.kubelet.restart(now)
        elif (
            rotated
            and self.cfg.kubelet.restart_on_serving_rotation
            and self._kubelet_serves_our_cert()
        ):
            log.info("kubelet_restart", reason="it serves the rotated certificate")
            self.kubelet.restart(now)

    def _kubelet_serves_our_cert(self) -> bool:
        from .kubelet import read_text, serving_cert_file

        served = serving_cert_file(list(self.cfg.kubelet.command), read_text)
        if served is None:
            return False
        for name in ("kubelet-client-current.pem", "kubelet-server-current.pem"):
            ours = self.cfg.paths.pki_dir / name
            if served == ours or served.resolve() == ours.resolve():
                return True
        return False

    # ------------------------------------------------------------------ the kubelet

    def _start_kubelet(self, now: dt.datetime) -> None:
        name = str((self.creds or {}).get("node", ""))
        self.kubelet = self.kubelet_factory(self.cfg, name)
        if self.kubelet is not None:
            self.kubelet.start(now)

    def _tick_kubelet(self, now: dt.datetime) -> None:
        if self.kubelet is not None:
            before = self.kubelet.snapshot().get("restarts", 0)
            self._kubelet_next = self.kubelet.tick(now)
            if self.metrics:
                delta = self.kubelet.snapshot().get("restarts", 0) - before
                if delta > 0:
                    self.metrics.kubelet_restarts.inc(delta)

    # ------------------------------------------------------------------ stop / reload

    def _begin_stop(self, now: dt.datetime, why: str) -> None:
        log.info("stopping", signal=why)
        self.stopping = True
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        if self.worker is not None:
            self.worker.proc.terminate()  # the store is crash-safe; the next start recovers
        if self.kubelet is not None:
            self.kubelet.stop(now)

    def _stopped(self, now: dt.datetime) -> bool:
        if self.worker is not None:
            return False
        return self.kubelet is None or self.kubelet.snapshot().get("state") == "stopped"

    def _reload(self, now: dt.datetime) -> None:
        # Before READY=1 there is no reload for the service manager to wait for: a reload
        # then must not turn the unit active before the node can work.
        if self.ready_sent:
            self.notifier.send("RELOADING=1", "STATUS=reloading the config")
        try:
            new = config.load(self.cfg.source)
            refusal = reload_refusal(self.cfg, new) or _unsafe_commands(new)
            if refusal:
                raise ConfigError(refusal)
        except JoinAgentError as e:
            log.error("reload_refused", error=str(e), msg="keeping the running config")
            self._record_reload(now, str(e))
            return
        changed = _identity_of(new) != _identity_of(self.cfg)
        kubelet_changed = new.kubelet != self.cfg.kubelet
        if new.certificates != self.cfg.certificates:
            # New tables are issued at once; removed ones are reported (files left alone).
            self.extras_next, self.extras_pass_pending = None, True
        self.cfg = new
        log.info("reloaded", config=str(new.source), renew=changed)
        self.renewal.configure(new.renewal.retry_min, new.renewal.retry_max)
        if changed:
            self.renewal.request("the config changed")
        if kubelet_changed and self.kubelet is not None:
            self.kubelet.stop(now)
            self.kubelet = None  # started again with the new command by _decide
        self._record_reload(now, None)

    def _record_reload(self, now: dt.datetime, refused: str | None) -> None:
        count = int((self.reloads or {}).get("count", 0)) + 1
        self.reloads = {
            "count": count,
            "at": state.iso(now),
            "ok": refused is None,
            "message": refused,
        }
        if self.ready_sent:
            self.notifier.send("READY=1")
        # The next publish sends STATUS= again, whether or not its text changed: the
        # service manager last heard "reloading the config".
        self.last_status_line = ""

    # ------------------------------------------------------------------ reporting

    def _next_wake(self, now: dt.datetime) -> dt.datetime | None:
        times: list[dt.datetime] = []
        if self.creds is not None and self.worker is None and not self.stopping:
            at = self._next_attempt(now)
            if at is not None:
                times.append(at)
        kubelet_next = getattr(self, "_kubelet_next", None)
        if kubelet_next is not None:
            times.append(kubelet_next)
        if self.worker is not None:
            times.append(self.worker.started + worker_timeout(self.cfg))
        else:
            if self.serving_next is not None and self._serving_wanted():
                times.append(self.serving_next)
            if self.extras_next is not None and self._extras_wanted():
                times.append(self.extras_next)
        return min(times) if times else None

    def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or self.stopping:
            return
        mono = time.monotonic()
        if mono - self.last_watchdog >= interval.total_seconds() * 0.9:
            self.notifier.send("WATCHDOG=1")
            self.last_watchdog = mono

    def _publish(self, now: dt.datetime, *, final: bool = False) -> None:
        # A kubelet in backoff does not make a working node "starting" again.
        self.worked = self.worked or self._working()
        doc = self.status_document(now, final=final)
        # STATUS= before the file: `join-agent reload` returns once the file shows the
        # reload, and `systemctl status` right after it must not show "reloading" still.
        line = status_line(doc, now)
        if line != self.last_status_line:
            self.last_status_line = line
            self.notifier.send(f"STATUS={line}")
        text = json.dumps({k: v for k, v in doc.items() if k != "written_at"}, sort_keys=True)
        if text != self.last_published:
            self.last_published = text
            try:
                state.write(self.cfg.paths.state_dir, doc)
            except JoinAgentError as e:
                log.error("status_write_failed", error=str(e))
        if not self.ready_sent and not final and self._up():
            self.ready_sent = True
            self.notifier.send("READY=1", f"STATUS={line}")
            log.info("ready", status=line)
        if self.metrics:
            self.metrics.update(doc)

    def _up(self) -> bool:
        """READY=1 for the service manager: the agent has read the node's state and acted on
        it (the kubelet started when the node is joined). Not "joined": systemd counts a
        boot as finished only when no start job is left, so a unit that waited for a CA
        would keep `is-system-running` at "starting" for as long as the CA is away. What
        needs a joined node orders itself after join-agent-wait.service (`join-agent
        wait`) instead: docs/install.md, "What the service does"."""
        if self.creds is None:
            return False
        return not self._joined() or self._working()

    def _working(self) -> bool:
        """Joined, with the kubelet started when it is ours to run."""
        if not self._joined():
            return False
        if not self.cfg.kubelet.manage:
            return True
        return self.kubelet is not None and self.kubelet.snapshot().get("pid") is not None

    def status_document(self, now: dt.datetime, *, final: bool = False) -> dict[str, Any]:
        r = self.renewal
        held = self._held()
        creds = self.creds or {"present": False}
        at = None if self.creds is None or self.stopping else self._next_attempt(now)
        agent_state = (
            "stopped"
            if final
            else "stopping"
            if self.stopping
            else ("running" if self._working() or self.worked else "starting")
        )
        return {
            "schema": state.SCHEMA,
            "written_at": state.iso(now),
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "start_time": self.start_time,
                "started_at": state.iso(self.started_at),
                "state": agent_state,
                "config": str(self.cfg.source),
            },
            "node": creds.get("node"),
            "signer": _signer_facts(self.cfg),
            "credentials": creds,
            "kubelet": self._kubelet_doc(),
            "renewal": {
                "renew_at": None if held is None else state.iso(renew_at(held)),
                "next_attempt": None if at is None else state.iso(at),
                "failures": r.failures,
                "last_attempt": None if r.last_attempt is None else state.iso(r.last_attempt),
                "last_success": None if r.last_success is None else state.iso(r.last_success),
                "last_ok": r.last_ok,
                "reason": r.reason or None,
                "in_progress": self.worker is not None and self.worker.mode == "enroll",
            },
            "last_error": None if r.last_error is None else r.last_error.to_json(),
            "serving": self.serving if self._serving_wanted() else None,
            "certificates": self.extras,
            "waiting_for": None if self._working() else self._waiting_for(now),
            "reload": self.reloads,
        }

    def _kubelet_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"managed": self.cfg.kubelet.manage}
        if self.kubelet is not None:
            doc.update(self.kubelet.snapshot())
        return doc

    def _waiting_for(self, now: dt.datetime) -> str:
        r = self.renewal
        if self.creds is None:
            return "reading the credentials on disk"
        splay = r.splay_left(now)
        if splay is not None:
            return f"splay: first enrollment in {format_duration(splay)}"
        if not self._joined():
            if r.last_error:
                return f"the CA (last attempt failed: {r.last_error.message})"
            return "the CA"
        return "the kubelet to start"

    def _start_metrics(self) -> None:
        if not self.cfg.metrics_listen:
            return
        from .metrics import Metrics

        self.metrics = Metrics.serve(self.cfg.metrics_listen)


def status_line(doc: dict[str, Any], now: dt.datetime) -> str:
    """One line a person reads in `systemctl status`."""
    waiting = doc.get("waiting_for")
    cert = doc.get("credentials") or {}
    reload = doc.get("reload") or {}
    # Until a good reload, the file on disk is not what runs: say so on every line.
    refused = (
        [f"config reload refused, running the previous one: {reload.get('message')}"]
        if reload.get("ok") is False
        else []
    )
    if not cert.get("present"):
        first = f"not joined yet; waiting for {waiting}" if waiting else "not joined yet"
        return "; ".join([first, *refused])[:400]
    na = state.parse_iso(cert["not_after"])
    parts = [f"joined as {doc.get('node')}"]
    if na <= now:
        parts.append(f"cert EXPIRED {format_duration(now - na)} ago")
    else:
        text = f"cert expires in {format_duration(na - now)}"
        renew_at = (doc.get("renewal") or {}).get("renew_at")
        if renew_at:
            ra = state.parse_iso(renew_at)
            text += ", renewal overdue" if ra <= now else f", renews in {format_duration(ra - now)}"
        parts.append(text)
    kubelet = doc.get("kubelet") or {}
    if kubelet.get("managed"):
        parts.append(f"kubelet {kubelet.get('state', 'not started')}")
    parts += refused
    err = doc.get("last_error")
    if doc.get("renewal", {}).get("last_ok") is False and err:
        parts.append(f"last renewal failed: {err['message']}")
    elif waiting:
        parts.append(f"waiting for {waiting}")
    return "; ".join(parts)[:400]


_WORKER_TIMEOUT = dt.timedelta(minutes=10)


def worker_timeout(cfg: Config) -> dt.timedelta:
    """How long a worker may take: a CSR may wait for approval up to csr_timeout, and a pass
    over the [[certificate]] tables runs each table's action, each up to its timeout."""
    limit = _WORKER_TIMEOUT
    if cfg.signer_kind == "kubernetes":
        limit = max(limit, cfg.kubernetes.csr_timeout + dt.timedelta(minutes=2))
    actions = sum((c.action.timeout for c in cfg.certificates), dt.timedelta(0))
    return max(limit, actions + dt.timedelta(minutes=5))


_NOT_FOR_CHILDREN = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def _signer_facts(cfg: Config) -> dict[str, object]:
    if cfg.signer_kind == "kubernetes":
        source = cfg.kubernetes.discovery_file or "token discovery"
        return {"kind": "kubernetes", "server": cfg.cluster.server, "discovery": source}
    return {"kind": cfg.signer_kind, "urls": list(cfg.cfssl.urls)}


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


def _unsafe_commands(cfg: Config) -> str | None:
    from . import preflight

    problems = preflight.command_problems(cfg)
    return "; ".join(problems) if problems else None


def _identity_of(cfg: Config) -> tuple[object, ...]:
    """What, when changed by a reload, calls for a new certificate or kubeconfig."""
    k = cfg.kubernetes  # serving and csr_timeout do not touch the client certificate
    discovery = (k.bootstrap_token_file, k.ca_pins, k.discovery_file)
    return (cfg.cluster, cfg.node, cfg.signer_kind, cfg.cfssl, discovery, cfg.paths)


def kubelet_pidfile(cfg: Config) -> Path:
    return cfg.paths.state_dir / "kubelet.pid"


def _default_kubelet(cfg: Config, node_name: str) -> KubeletSupervisor | None:
    from . import kubelet

    argv = kubelet.kubelet_argv(list(cfg.kubelet.command), cfg.paths.kubeconfig, node_name)
    return kubelet.KubeletSupervisor(
        argv=argv,
        env=kubelet.kubelet_env(os.environ),
        pidfile=kubelet_pidfile(cfg),
        stop_grace=cfg.kubelet.stop_grace,
        backoff_base=cfg.kubelet.restart_min,
        backoff_cap=cfg.kubelet.restart_max,
        stable_after=cfg.kubelet.stable_after,
        draw=random.SystemRandom().random,
        procs=kubelet.OsProcesses(),
    )


def main(cfg: Config, environ: Mapping[str, str]) -> int:
    """Preflight, then the loop: what ``join-agent run`` does."""
    from . import files, kubelet, notify, preflight
    from .guard import UnsafePath

    notifier = notify.for_environment(environ)
    # Like sd_notify's unset_environment: the socket is ours alone. A child that inherits
    # it can speak for the service (systemctl, for one, reports ERRNO= there).
    child_env = {k: v for k, v in environ.items() if k not in _NOT_FOR_CHILDREN}
    for name in _NOT_FOR_CHILDREN:
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
    if cfg.kubelet.manage:
        problems = kubelet.conflicts(
            list(cfg.kubelet.command),
            read_file=kubelet.read_text,
            unit_active=kubelet.systemd_unit_active,
        )
        if problems:
            raise ConfigError(
                "refusing to run a kubelet that would fight join-agent: " + "; ".join(problems)
            )
        reaped = kubelet.reap_stale(
            kubelet_pidfile(cfg), stop_grace=cfg.kubelet.stop_grace, procs=kubelet.OsProcesses()
        )
        if reaped:
            log.warning("stale_kubelet", action=reaped)
    daemon = Daemon(cfg, notifier=notifier, environ=child_env)
    return daemon.run()
