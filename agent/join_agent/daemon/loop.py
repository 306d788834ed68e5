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
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from join_agent import __version__
from join_agent.config.model import Config
from join_agent.core import schedule, wire
from join_agent.core.durations import format_duration
from join_agent.core.protocol import CredentialFacts, ErrorKind, WorkerResult
from join_agent.core.renewal import RenewalPolicy
from join_agent.core.wire import iso
from join_agent.daemon import metrics, presence, reloading, workers
from join_agent.daemon.identity_watch import IdentityWatch
from join_agent.daemon.kubelet_ctl import KubeletControl, KubeletFactory
from join_agent.daemon.reporting import Reporter, renewal_doc, signer_facts, waiting_for
from join_agent.daemon.sidejobs import SideJobs
from join_agent.daemon.wakeups import Wakeups
from join_agent.errors import JoinAgentError
from join_agent.host import platform, proc
from join_agent.host.notify import Notifier
from join_agent.log import get_logger
from join_agent.storage import files, names, state

if TYPE_CHECKING:
    from join_agent.core.records import ReloadRecord, StatusRecord

log = get_logger("join_agent.daemon")

Clock = Callable[[], dt.datetime]


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
        installed: dt.datetime | None = None,
    ) -> None:
        self.cfg = cfg
        self.environ = dict(environ)
        self.clock = clock
        self.monotonic = monotonic
        self.rng = rng or random.SystemRandom()
        self.kubelet = KubeletControl(kubelet_factory, serves_ours=kubelet_serves_ours)
        self.creds: CredentialFacts | None = None  # the last worker's facts about the files
        self.current = cfg.paths.pki_dir / names.CLIENT_CURRENT  # what those facts are about
        self.side = SideJobs()
        self.renewal = RenewalPolicy(
            retry_min=cfg.renewal.retry_min,
            retry_max=cfg.renewal.retry_max,
            join_retry_max=cfg.renewal.join_retry_max,
            salt=self.rng.random(),  # a fleet that failed in one second retries apart
        )
        self.reporter = Reporter(notifier, cfg.paths.state_dir, monotonic)
        self.stopping = False
        self.worked = False  # joined with its kubelet started, once: agent.state "running"
        self.started_at = clock()
        self.start_time = proc.start_time(os.getpid())  # read once, not per tick
        self.reloads: ReloadRecord | None = None  # the last SIGHUP's outcome
        self.identity = IdentityWatch(monotonic)
        self.wakeups = Wakeups()
        self.worker = workers.Slot(self.wakeups.watch, self.wakeups.forget)
        self.metrics: metrics.Sink = metrics.NoMetrics()
        self.installed = installed or platform.installed_at()
        self.clock_behind: dt.datetime | None = None  # the floor, while the clock is earlier

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        self.wakeups.install()
        where = platform.current().addresses_from
        self.identity.listen(where, self.wakeups.watch_addresses, self.wakeups.forget)
        presence.announce(self.cfg)
        # A status.json temp file of a killed predecessor would otherwise stay forever.
        for leftover in files.sweep(self.cfg.paths.state_dir):
            log.info("removed_leftover", path=str(leftover))
        self.metrics = metrics.for_config(self.cfg.metrics_listen, self.cfg.metrics_textfile)
        log.info("starting", version=__version__, config=str(self.cfg.source), pid=os.getpid())
        self.reporter.notifier.send("STATUS=starting: reading the credentials on disk")
        self._spawn_worker("inspect")
        try:
            while not self._turn():
                pass
        finally:
            self.identity.close()
            self.wakeups.restore()
            presence.withdraw(self.cfg)
        self.publish(self.clock(), final=True)
        log.info("stopped")
        return 0

    def _turn(self) -> bool:
        """One turn of the loop; True once the agent has stopped."""
        now = self.clock()
        for sig in self.wakeups.take():
            self.on_signal(now, sig)
        self._collect_worker(now)
        if not self.stopping:
            self.decide(now)
        self.metrics.kubelet_restarted(self.kubelet.tick(now))
        if self.stopping and self._stopped():
            return True
        self.publish(now)
        timeout = schedule.sleep_seconds(now, self.next_wake(now))
        if not self.stopping:  # no pings while stopping
            self.reporter.watchdog()
            due = self.reporter.watchdog_due_in()
            timeout = timeout if due is None else min(timeout, due)
        if "addresses" in self.wakeups.wait(timeout):
            self.identity.heard()
        return False

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

    def decide(self, now: dt.datetime) -> None:
        """Start a worker when one is due, and the kubelet when credentials exist."""
        if self.creds is None or self.worker.busy:
            return
        if self._files_changed():
            # Written by someone else (`join`, an operator): read, not renewed on stale facts.
            log.info("credentials_changed_on_disk")
            self._spawn_worker("inspect")
            return
        self.check_identity()
        held = schedule.held(self.creds)
        self._look_at_clock(
            now, schedule.clock_floor(self.installed, held, self.cfg.renewal.clock_skew)
        )
        if now >= self.renewal.next_attempt(now, held) and self.clock_behind is None:
            self._spawn_worker("enroll")
            return
        if self._usable(now) and self.cfg.kubelet.manage:
            self.kubelet.ensure_started(self.cfg, str((self.creds or {}).get("node", "")), now)
        # Never before the kubelet: it runs with its self-signed certificate meanwhile.
        mode = self.side.due(
            now, serving=self._serving_wanted(), extras=bool(self.cfg.certificates),
            joined=self._joined(),
        )  # fmt: skip
        if mode is not None:
            self._spawn_worker(mode)

    def _files_changed(self) -> bool:
        ids = (self.creds or {}).get("ids")
        return isinstance(ids, dict) and ids.get("credentials") != state.file_identity(self.current)

    def _look_at_clock(self, now: dt.datetime, floor: dt.datetime) -> None:
        """Wait for time sync, without counting failures, while the clock is obviously wrong."""
        behind = floor if now < floor else None
        if behind and not self.clock_behind:
            log.warning("clock_not_set", now=iso(now), earliest=iso(floor))
        elif self.clock_behind and not behind:
            log.info("clock_set", now=iso(now))
        self.clock_behind = behind

    def _joined(self) -> bool:
        """Credentials of this machine (another's are never presented: host/machine.py)."""
        c = self.creds
        ours = bool(c and c.get("present") and not c.get("foreign"))
        return ours and self.cfg.paths.kubeconfig.exists()

    def check_identity(self) -> None:
        """Renew early when the node's name or addresses no longer match the certificate."""
        seen = self.identity.look(self.creds if self._may_look() else None, self.cfg)
        if seen and seen.addresses_changed:
            self.side.addresses_changed()
        if seen and seen.mismatch is not None:
            self.renewal.request(seen.mismatch)

    def _may_look(self) -> bool:
        """Our own credentials and no renewal asked for yet: a look may ask for one."""
        c = self.creds or {}
        return bool(c.get("present") and not c.get("foreign") and not self.renewal.requested)

    # ------------------------------------------------------------------ the worker child

    def _spawn_worker(self, mode: str) -> None:
        now = self.clock()
        if mode == "enroll":
            self.renewal.begin(now)
            log.info("enrolling", reason=self.renewal.reason or "renewal deadline")
        failed = self.worker.start(self.cfg, mode, self.environ, now)
        if failed is not None:
            self.on_result(now, mode, failed)

    def _collect_worker(self, now: dt.datetime) -> None:
        done = self.worker.collect(self.cfg, now)
        if done is not None:
            self.on_result(now, *done)

    def _serving_wanted(self) -> bool:
        return self.cfg.signer_kind == "kubernetes" and self.cfg.kubernetes.serving

    def on_result(self, now: dt.datetime, mode: str, result: WorkerResult) -> None:
        """What a worker reported: the node's pair (inspect, enroll), or a side job's."""
        if self.side.absorb(
            now, mode, result, self.cfg, kubelet=self.kubelet, metrics=self.metrics
        ):
            self.creds = result.get("credentials", self.creds)
            return
        self._apply_node(now, mode, result)

    def _apply_node(self, now: dt.datetime, mode: str, result: WorkerResult) -> None:
        """What an ``inspect`` or ``enroll`` worker found out about the node's own pair."""
        creds = result.get("credentials")
        old_serial = (self.creds or {}).get("serial")
        if isinstance(creds, dict):
            self.creds = creds
        rotated = old_serial is not None and (self.creds or {}).get("serial") != old_serial
        if mode == "inspect":
            if result.get("ok") is False and self.creds is None:
                self.creds = {"present": False, "credentials": str(self.current)}
            splay, draw = self.cfg.renewal.splay, self.rng.random()
            if foreign := (self.creds or {}).get("foreign"):
                log.warning("credentials_of_another_machine", msg=foreign)
            delay = self.renewal.first_look(now, joined=self._joined(), splay=splay, draw=draw)
            if delay is not None:
                log.info("splay", delay=format_duration(delay))
        elif result.get("ok"):
            self.renewal.succeeded(now)
            log.info(
                "renewed", serial=(self.creds or {}).get("serial"), source=result.get("source")
            )
            self.kubelet.after_rotation(
                now,
                ca_changed=bool(result.get("ca_changed")),
                rotated=rotated,
                serving_restart=self.cfg.kubelet.restart_on_serving_rotation,
            )
            self.metrics.renewal("success", None)
        else:
            kind = ErrorKind.of(result.get("kind", ""))
            self.renewal.failed(now, str(result.get("error", "unknown error")), kind)
            log.error(
                "renewal_failed", error=str(result.get("error")), failures=self.renewal.failures
            )
            self.metrics.renewal("failure", kind.value)

    # ------------------------------------------------------------------ stop / reload

    def _begin_stop(self, now: dt.datetime, why: str) -> None:
        log.info("stopping", signal=why)
        self.stopping = True
        self.reporter.stopping()
        self.worker.terminate()
        self.kubelet.stop(now)

    def _stopped(self) -> bool:
        return not self.worker.busy and self.kubelet.stopped()

    def _reload(self, now: dt.datetime) -> None:
        self.reporter.reloading()
        try:
            r = reloading.read(self.cfg)
        except JoinAgentError as e:
            log.error("reload_refused", error=str(e), msg="keeping the running config")
            self._reloaded(now, str(e))
            return
        if r.tables:
            self.side.tables_changed()
        self.cfg = new = r.new
        presence.record_settings(new)
        self.renewal.configure(new.renewal.retry_min, new.renewal.retry_max,
                               new.renewal.join_retry_max)  # fmt: skip
        log.info("reloaded", config=str(new.source), renew=r.renew)
        if r.renew:
            self.renewal.request("the config changed")
        if r.kubelet:
            self.kubelet.ask_settings(new, self.environ)
            self.kubelet.replace(now)
        self._reloaded(now, None)

    def _reloaded(self, now: dt.datetime, refused: str | None) -> None:
        self.reloads = reloading.record(self.reloads, now, refused)
        self.reporter.reloaded()

    # ------------------------------------------------------------------ reporting

    def next_wake(self, now: dt.datetime) -> dt.datetime | None:
        """The latest the loop sleeps until: the next time something is due."""
        times: list[dt.datetime] = []
        if self.creds is not None and not self.worker.busy and not self.stopping:
            due = self.renewal.next_attempt(now, schedule.held(self.creds))
            times.append(max(due, now + schedule.CLOCK_POLL) if self.clock_behind else due)
            # (The clock read anew, as the watch reads its monotonic: never a wake too early.)
            times += self.identity.wake_at(self.clock()) if self._may_look() else []
        if self.kubelet.next is not None:
            times.append(self.kubelet.next)
        deadline = self.worker.deadline(self.cfg)
        if deadline is not None:
            times.append(deadline)
        else:
            extras = bool(self.cfg.certificates)
            times += self.side.next_wake(serving=self._serving_wanted(), extras=extras)
        return min(times) if times else None

    def publish(self, now: dt.datetime, *, final: bool = False) -> None:
        """status.json, STATUS= and READY=1, the metrics: what the daemon knows now."""
        # A kubelet in backoff does not make a working node "starting" again.
        self.worked = self.worked or self._working(now)
        doc = self.status_document(now, final=final)
        self.reporter.publish(doc, now, up=self._up(now), final=final)
        self.metrics.update(doc)

    def _up(self, now: dt.datetime) -> bool:
        """READY=1: the node's state was read and acted on (the kubelet started on valid
        credentials). Not "joined": a start job that waited for a CA would hold the boot;
        what needs a joined node orders itself after join-agent-wait (docs/install.md)."""
        return self.creds is not None and (not self._usable(now) or self._working(now))

    def _usable(self, now: dt.datetime) -> bool:
        """Joined, with a certificate valid now: the kubelet is started on nothing less."""
        held = schedule.held(self.creds) if self._joined() else None
        return held is not None and now < held.not_after

    def _working(self, now: dt.datetime) -> bool:
        """Usable credentials, with the kubelet started when it is ours to run."""
        if not self._usable(now):
            return False
        if not self.cfg.kubelet.manage:
            return True
        return self.kubelet.has_process()

    def status_document(self, now: dt.datetime, *, final: bool = False) -> StatusRecord:
        """status.json (docs/status.md): what the daemon knows now."""
        creds = self.creds or {"present": False, "credentials": str(self.current)}
        error = self.renewal.last_error
        usable = self._usable(now)  # an expired node is "starting" again, kubelet or not
        agent_state = "running" if self._working(now) or (self.worked and usable) else "starting"
        if self.stopping or final:
            agent_state = "stopped" if final else "stopping"
        read, behind = self.creds is not None, self.clock_behind
        waiting = waiting_for(now, self.renewal, read=read, joined=usable, clock_behind=behind)
        return {
            "schema": wire.SCHEMA,
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
            "kubelet": {"managed": self.cfg.kubelet.manage, **self.kubelet.snapshot()},
            "renewal": renewal_doc(
                now,
                self.renewal,
                schedule.held(self.creds),
                looking=self.creds is not None and not self.stopping,
                enrolling=self.worker.mode == "enroll",
            ),
            "last_error": None if error is None else error.to_json(),
            "serving": self.side.serving if self._serving_wanted() else None,
            "certificates": self.side.extras,
            "waiting_for": None if self._working(now) else waiting,
            "reload": self.reloads,
        }
