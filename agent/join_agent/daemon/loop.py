"""``join-agent run``'s loop: keep the node's credentials valid and its kubelet running.

The resident process stays on the standard library: every enrollment or inspection runs
in a short-lived worker child (workers.py) that loads cryptography and httpx and exits.
The loop sleeps until the next event (a renewal time, a signal, a child exiting, a
watchdog tick), never longer than schedule.MAX_SLEEP, and recomputes every time from the
wall clock (suspend, NTP steps). It decides nothing itself: when to renew is
core.renewal's, what the side jobs need is sidejobs', what to publish is reporting's.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import selectors
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from join_agent import __version__, config
from join_agent.config import Config
from join_agent.core import schedule
from join_agent.core.durations import format_duration
from join_agent.core.protocol import ErrorKind, iso
from join_agent.core.renewal import Held, RenewalPolicy, identity_mismatch, renew_at
from join_agent.daemon import reloading, workers
from join_agent.daemon.reporting import Reporter, signer_facts
from join_agent.daemon.sidejobs import SideJobs
from join_agent.errors import ConfigError, JoinAgentError
from join_agent.host.notify import Notifier
from join_agent.kubelet.supervisor import KubeletSupervisor
from join_agent.log import get_logger
from join_agent.storage import files, names, state

log = get_logger("join_agent.daemon")

Clock = Callable[[], dt.datetime]
KubeletFactory = Callable[[Config, str], KubeletSupervisor | None]
# A netlink dump on every watchdog tick is work for nothing: the addresses are compared
# with the certificate's at most this often.
IDENTITY_EVERY = 60.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Daemon:
    """The loop: it starts workers and the kubelet, and acts on what core.renewal decides."""

    def __init__(
        self,
        cfg: Config,
        *,
        notifier: Notifier,
        environ: Mapping[str, str],
        kubelet_factory: KubeletFactory,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        kubelet_serves_ours: bool = False,
    ) -> None:
        self.cfg = cfg
        self.environ = dict(environ)
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.SystemRandom()
        self.kubelet_factory = kubelet_factory
        # Whether the kubelet serves one of our certificates from a file: a rotation of it
        # then needs a kubelet restart. Read from its settings by a worker (they may be
        # YAML, which the resident process does not load).
        self.kubelet_serves_ours = kubelet_serves_ours
        self.kubelet: KubeletSupervisor | None = None
        self.kubelet_next: dt.datetime | None = None
        self.creds: dict[str, Any] | None = None  # the last worker's facts about the files
        self.side = SideJobs()
        self.renewal = RenewalPolicy(
            retry_min=cfg.renewal.retry_min,
            retry_max=cfg.renewal.retry_max,
            salt=self.rng.random(),  # a fleet that failed in one second retries apart
        )
        self.reporter = Reporter(notifier, cfg.paths.state_dir, monotonic)
        self.worker: workers.Worker | None = None
        self.pending_signals: list[int] = []
        self.stopping = False
        self.worked = False  # joined with its kubelet started, once: agent.state "running"
        self.started_at = clock()
        self.start_time = state.process_start_time(os.getpid())  # read once, not per tick
        self.reloads: dict[str, Any] | None = None  # the last SIGHUP's outcome
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
            signal.signal(sig, lambda signum, _frame: self.pending_signals.append(signum))
        state.write_agent_pidfile(self.cfg.paths.state_dir, os.getpid())
        # A status.json temp file of a killed predecessor would otherwise stay forever.
        for leftover in files.sweep(self.cfg.paths.state_dir):
            log.info("removed_leftover", path=str(leftover))
        self._start_metrics()
        log.info("starting", version=__version__, config=str(self.cfg.source), pid=os.getpid())
        self.reporter.notifier.send("STATUS=starting: reading the credentials on disk")
        self._spawn_worker("inspect")
        try:
            while not self._turn(wake_r):
                pass
        finally:
            signal.set_wakeup_fd(previous_fd)
            state.remove_agent_pidfile(self.cfg.paths.state_dir, os.getpid())
        self.publish(self.clock(), final=True)
        log.info("stopped")
        return 0

    def _turn(self, wake_r: int) -> bool:
        """One turn of the loop; True once the agent has stopped."""
        now = self.clock()
        _drain(wake_r)
        self._handle_signals(now)
        self._collect_worker(now)
        if not self.stopping:
            self._decide(now)
        self._tick_kubelet(now)
        if self.stopping and self._stopped():
            return True
        self.publish(now)
        timeout = schedule.sleep_seconds(now, self._next_wake(now))
        if not self.stopping:  # no pings while stopping
            self.reporter.watchdog()
            due = self.reporter.watchdog_due_in()
            timeout = timeout if due is None else min(timeout, due)
        self.selector.select(timeout)
        return False

    def _handle_signals(self, now: dt.datetime) -> None:
        signals, self.pending_signals = self.pending_signals, []
        for sig in signals:
            self.on_signal(now, sig)

    def on_signal(self, now: dt.datetime, sig: int) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 asks for a renewal now."""
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
        self.check_identity()
        if now >= self.renewal.next_attempt(now, self._held()):
            self._spawn_worker("enroll")
            return
        if self._joined() and self.cfg.kubelet.manage and self.kubelet is None:
            self._start_kubelet(now)
        # Never before the kubelet: it runs with its self-signed certificate meanwhile.
        mode = self.side.due(
            now, serving=self._serving_wanted(), extras=bool(self.cfg.certificates),
            joined=self._joined(),
        )  # fmt: skip
        if mode is not None:
            self._spawn_worker(mode)

    def _files_changed(self) -> bool:
        ids = (self.creds or {}).get("ids")
        if not isinstance(ids, dict):
            return False
        current = self.cfg.paths.pki_dir / names.CLIENT_CURRENT
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

    def check_identity(self) -> None:
        """Renew early when the node's name or addresses no longer match the certificate."""
        c = self.creds
        if not c or not c.get("present") or self.renewal.requested:
            return
        mono = self.monotonic()
        if mono - self.identity_checked < IDENTITY_EVERY:
            return
        self.identity_checked = mono
        from join_agent.host import identity

        try:
            ident = identity.resolve(self.cfg.node)
        except JoinAgentError as e:
            log.warning("identity_unavailable", error=str(e))
            return
        want_ips = sorted(str(a) for a in ident.addresses)
        if self.seen_addresses is not None and want_ips != self.seen_addresses:
            self.side.addresses_changed()
        self.seen_addresses = want_ips
        have_ips = sorted(c.get("sans", {}).get("ip", []))
        in_sans = self.cfg.signer_kind != "kubernetes"  # the kubelet client signer takes none
        why = identity_mismatch(
            c.get("node"), have_ips, ident.name, want_ips, addresses_in_certificate=in_sans
        )
        if why is not None:
            log.info(
                "identity_changed", node=ident.name, addresses=want_ips,
                certificate_addresses=have_ips,
            )  # fmt: skip
            self.renewal.request(why)

    # ------------------------------------------------------------------ the worker child

    def _spawn_worker(self, mode: str) -> None:
        now = self.clock()
        if mode == "enroll":
            self.renewal.begin(now)
            log.info("enrolling", reason=self.renewal.reason or "renewal deadline")
        try:
            self.worker = workers.spawn(self.cfg, mode, self.environ, now)
        except OSError as e:  # out of memory or processes: a failed attempt, retried later
            error = f"cannot start the worker process: {e.strerror or e}"
            self.on_result(now, mode, {"ok": False, "error": error, "kind": "OSError"})
            return
        self.selector.register(self.worker.stdout, selectors.EVENT_READ, "worker")

    def _collect_worker(self, now: dt.datetime) -> None:
        w = self.worker
        if w is None:
            return
        workers.drain(w)
        if w.proc.poll() is None:
            if now - w.started > workers.worker_timeout(self.cfg):
                log.error("worker_timeout", mode=w.mode, pid=w.proc.pid)
                w.proc.kill()
            return
        self.selector.unregister(w.stdout)
        w.stdout.close()
        self.worker = None
        self.on_result(now, w.mode, workers.result(bytes(w.output), w.proc.returncode))

    def _serving_wanted(self) -> bool:
        return self.cfg.signer_kind == "kubernetes" and self.cfg.kubernetes.serving

    def on_result(self, now: dt.datetime, mode: str, result: dict[str, Any]) -> None:
        """What a worker reported: the node's pair (inspect, enroll), or a side job's."""
        retry = {"retry_min": self.cfg.renewal.retry_min, "retry_max": self.cfg.renewal.retry_max}
        if isinstance(result.get("serving"), dict):
            report = result["serving"]
            self.side.serving_reported(now, report, **retry)
            if report.get("state") in ("pending", "denied", "error"):
                log.info(
                    "serving_certificate", state=report.get("state"), msg=report.get("message")
                )
            if report.get("rotated"):
                self._restart_kubelet_for_serving(now, "it serves the rotated serving certificate")
        elif mode == "serving":
            self.side.serving_failed(now, self.cfg.renewal.retry_max)
        if mode == "certificates":
            for r in self.side.tables_reported(now, result.get("certificates"), **retry):
                log.warning("certificate_attention", name=r.get("name"), state=r.get("state"))
        if mode in ("serving", "certificates"):
            self.creds = result.get("credentials", self.creds)
            return
        self._apply_node(now, mode, result)

    def _apply_node(self, now: dt.datetime, mode: str, result: dict[str, Any]) -> None:
        """What an ``inspect`` or ``enroll`` worker found out about the node's own pair."""
        creds = result.get("credentials")
        old_serial = (self.creds or {}).get("serial")
        if isinstance(creds, dict):
            self.creds = creds
        rotated = old_serial is not None and (self.creds or {}).get("serial") != old_serial
        if mode == "inspect":
            if result.get("ok") is False and self.creds is None:
                self.creds = {"present": False}
            splay, draw = self.cfg.renewal.splay, self.rng.random()
            delay = self.renewal.first_look(now, joined=self._joined(), splay=splay, draw=draw)
            if delay is not None:
                log.info("splay", delay=format_duration(delay))
        elif result.get("ok"):
            self.renewal.succeeded(now)
            log.info(
                "renewed", serial=(self.creds or {}).get("serial"), source=result.get("source")
            )
            self._after_rotation(now, ca_changed=bool(result.get("ca_changed")), rotated=rotated)
            self._count("success", None)
        else:
            kind = ErrorKind.of(result.get("kind", ""))
            self.renewal.failed(now, str(result.get("error", "unknown error")), kind)
            log.error(
                "renewal_failed", error=str(result.get("error")), failures=self.renewal.failures
            )
            self._count("failure", kind)

    def _count(self, outcome: str, kind: ErrorKind | None) -> None:
        if self.metrics:
            self.metrics.renewals.labels(result=outcome).inc()
            if kind is not None:
                self.metrics.failures.labels(reason=kind.value or "unknown").inc()

    def _after_rotation(self, now: dt.datetime, *, ca_changed: bool, rotated: bool) -> None:
        # The client certificate is re-read by client-go at each handshake: no restart.
        # CA data in the kubeconfig is not reloaded, nor (before 1.31's default) a serving
        # certificate read from a file: those need one restart.
        if self.kubelet is not None and ca_changed:
            log.warning("kubelet_restart", reason="the cluster CA changed")
            self.kubelet.restart(now)
        elif rotated:
            self._restart_kubelet_for_serving(now, "it serves the rotated certificate")

    def _restart_kubelet_for_serving(self, now: dt.datetime, reason: str) -> None:
        if (
            self.kubelet is not None
            and self.cfg.kubelet.restart_on_serving_rotation
            and self.kubelet_serves_ours
        ):
            log.info("kubelet_restart", reason=reason)
            self.kubelet.restart(now)

    # ------------------------------------------------------------------ the kubelet

    def _start_kubelet(self, now: dt.datetime) -> None:
        name = str((self.creds or {}).get("node", ""))
        self.kubelet = self.kubelet_factory(self.cfg, name)
        if self.kubelet is not None:
            self.kubelet.start(now)

    def _tick_kubelet(self, now: dt.datetime) -> None:
        if self.kubelet is None:
            return
        before = self.kubelet.snapshot().get("restarts", 0)
        self.kubelet_next = self.kubelet.tick(now)
        delta = self.kubelet.snapshot().get("restarts", 0) - before
        if self.metrics and delta > 0:
            self.metrics.kubelet_restarts.inc(delta)

    # ------------------------------------------------------------------ stop / reload

    def _begin_stop(self, now: dt.datetime, why: str) -> None:
        log.info("stopping", signal=why)
        self.stopping = True
        self.reporter.stopping()
        if self.worker is not None:
            self.worker.proc.terminate()  # the store is crash-safe; the next start recovers
        if self.kubelet is not None:
            self.kubelet.stop(now)

    def _stopped(self) -> bool:
        if self.worker is not None:
            return False
        return self.kubelet is None or self.kubelet.snapshot().get("state") == "stopped"

    def _reload(self, now: dt.datetime) -> None:
        self.reporter.reloading()
        try:
            new = config.load(self.cfg.source)
            refusal = reloading.reload_refusal(self.cfg, new) or reloading.unsafe_commands(new)
            if refusal:
                raise ConfigError(refusal)
        except JoinAgentError as e:
            log.error("reload_refused", error=str(e), msg="keeping the running config")
            self._reloaded(now, str(e))
            return
        changed = reloading.identity_of(new) != reloading.identity_of(self.cfg)
        kubelet_changed = new.kubelet != self.cfg.kubelet
        if new.certificates != self.cfg.certificates:
            self.side.tables_changed()
        self.cfg = new
        self.renewal.configure(new.renewal.retry_min, new.renewal.retry_max)
        log.info("reloaded", config=str(new.source), renew=changed)
        if changed:
            self.renewal.request("the config changed")
        if kubelet_changed:
            self.kubelet_serves_ours = kubelet_serves_ours(new, self.environ)
            if self.kubelet is not None:
                self.kubelet.stop(now)
                self.kubelet = None  # started again with the new command by _decide
        self._reloaded(now, None)

    def _reloaded(self, now: dt.datetime, refused: str | None) -> None:
        self.reloads = reloading.record(self.reloads, now, refused)
        self.reporter.reloaded()

    # ------------------------------------------------------------------ reporting

    def _next_wake(self, now: dt.datetime) -> dt.datetime | None:
        times: list[dt.datetime] = []
        if self.creds is not None and self.worker is None and not self.stopping:
            times.append(self.renewal.next_attempt(now, self._held()))
        if self.kubelet_next is not None:
            times.append(self.kubelet_next)
        if self.worker is not None:
            times.append(self.worker.started + workers.worker_timeout(self.cfg))
        else:
            extras = bool(self.cfg.certificates)
            times += self.side.next_wake(serving=self._serving_wanted(), extras=extras)
        return min(times) if times else None

    def publish(self, now: dt.datetime, *, final: bool = False) -> None:
        """status.json, STATUS= and READY=1, the metrics: what the daemon knows now."""
        # A kubelet in backoff does not make a working node "starting" again.
        self.worked = self.worked or self._working()
        doc = self.status_document(now, final=final)
        self.reporter.publish(doc, now, up=self._up(), final=final)
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
        """status.json (docs/status.md): what the daemon knows now."""
        creds = self.creds or {"present": False}
        error = self.renewal.last_error
        agent_state = "running" if self._working() or self.worked else "starting"
        if self.stopping or final:
            agent_state = "stopped" if final else "stopping"
        return {
            "schema": state.SCHEMA,
            "written_at": iso(now),
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "start_time": self.start_time,
                "started_at": iso(self.started_at),
                "state": agent_state,
                "config": str(self.cfg.source),
            },
            "node": creds.get("node"),
            "signer": signer_facts(self.cfg),
            "credentials": creds,
            "kubelet": {
                "managed": self.cfg.kubelet.manage,
                **(self.kubelet.snapshot() if self.kubelet is not None else {}),
            },
            "renewal": self._renewal_doc(now),
            "last_error": None if error is None else error.to_json(),
            "serving": self.side.serving if self._serving_wanted() else None,
            "certificates": self.side.extras,
            "waiting_for": None if self._working() else self._waiting_for(now),
            "reload": self.reloads,
        }

    def _renewal_doc(self, now: dt.datetime) -> dict[str, Any]:
        r, held = self.renewal, self._held()
        at = None if self.creds is None or self.stopping else r.next_attempt(now, held)

        def when(t: dt.datetime | None) -> str | None:
            return None if t is None else iso(t)

        return {
            "renew_at": None if held is None else iso(renew_at(held)),
            "next_attempt": when(at),
            "failures": r.failures,
            "last_attempt": when(r.last_attempt),
            "last_success": when(r.last_success),
            "last_ok": r.last_ok,
            "reason": r.reason or None,
            "in_progress": self.worker is not None and self.worker.mode == "enroll",
        }

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
        from join_agent.daemon.metrics import Metrics

        self.metrics = Metrics.serve(self.cfg.metrics_listen)


def kubelet_serves_ours(cfg: Config, environ: Mapping[str, str]) -> bool:
    """Asked of a worker: does the kubelet serve one of our certificates from a file?"""
    facts = workers.run_once(cfg, "kubelet", environ)
    return facts.get("serves_our_certificate") is True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
