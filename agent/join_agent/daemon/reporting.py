"""What the daemon tells others: status.json (for `status`, `renew`, `reload`, `wait`), the
service manager's READY=1, STATUS= and WATCHDOG=1, and the one line `systemctl status`
shows. The daemon builds the document; this publishes it."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from join_agent.config.model import Config
from join_agent.core.durations import format_duration
from join_agent.core.renewal import RenewalPolicy
from join_agent.core.schedule import Held, renew_at
from join_agent.core.wire import iso, parse_iso
from join_agent.errors import JoinAgentError
from join_agent.host.notify import Notifier
from join_agent.log import get_logger
from join_agent.storage import state

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts
    from join_agent.core.records import RenewalRecord, SignerRecord, StatusRecord

log = get_logger("join_agent.daemon")


class Reporter:
    """Publishes each status document once it changes, and speaks sd_notify."""

    def __init__(
        self,
        notifier: Notifier,
        state_dir: Path,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.state_dir = state_dir
        self.monotonic = monotonic
        self.ready_sent = False  # READY=1 went out (see Daemon.up)
        self.last_published = ""
        self.last_status_line = ""
        self.last_watchdog = 0.0

    def publish(self, doc: StatusRecord, now: dt.datetime, *, up: bool, final: bool) -> None:
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
                state.write(self.state_dir, doc)
            except JoinAgentError as e:
                log.error("status_write_failed", error=str(e))
        if not self.ready_sent and not final and up:
            self.ready_sent = True
            self.notifier.send("READY=1", f"STATUS={line}")
            log.info("ready", status=line)

    def reloading(self) -> None:
        # Before READY=1 there is no reload for the service manager to wait for: a reload
        # then must not turn the unit active before the agent has looked at the node.
        if self.ready_sent:
            self.notifier.send("RELOADING=1", "STATUS=reloading the config")

    def reloaded(self) -> None:
        if self.ready_sent:
            self.notifier.send("READY=1")
        # The next publish sends STATUS= again, whether or not its text changed: the
        # service manager last heard "reloading the config".
        self.last_status_line = ""

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        mono = self.monotonic()
        if mono - self.last_watchdog >= interval.total_seconds() * 0.9:
            self.notifier.send("WATCHDOG=1")
            self.last_watchdog = mono

    def watchdog_due_in(self) -> float | None:
        """Seconds until the next ping is due (the loop wakes for it), or None without one:
        the gap between pings stays one interval, whatever else woke the loop."""
        interval = self.notifier.watchdog_interval
        if interval is None:
            return None
        return max(self.last_watchdog + interval.total_seconds() - self.monotonic(), 0.0)


def renewal_doc(
    now: dt.datetime, policy: RenewalPolicy, held: Held | None, *, looking: bool, enrolling: bool
) -> RenewalRecord:
    """status.json's ``renewal``. ``looking``: the daemon knows the files and is not
    stopping, so it has a next attempt; ``enrolling``: a worker is enrolling now."""
    at = policy.next_attempt(now, held) if looking else None

    def when(t: dt.datetime | None) -> str | None:
        return None if t is None else iso(t)

    return {
        "renew_at": None if held is None else iso(renew_at(held)),
        "next_attempt": when(at),
        "failures": policy.failures,
        "last_attempt": when(policy.last_attempt),
        "last_success": when(policy.last_success),
        "last_ok": policy.last_ok,
        "reason": policy.reason or None,
        "in_progress": enrolling,
    }


def waiting_for(
    now: dt.datetime,
    policy: RenewalPolicy,
    *,
    read: bool,
    joined: bool,
    clock_behind: dt.datetime | None = None,
) -> str:
    """What the daemon waits for before the node works (``read``: the files were read;
    ``clock_behind``: the earliest the clock can truly read, while it reads earlier)."""
    if not read:
        return "reading the credentials on disk"
    if clock_behind is not None:
        return (
            f"the clock to be set: it reads {iso(now)}, before {iso(clock_behind)} "
            "(no real-time clock? time sync not done yet?)"
        )
    splay = policy.splay_left(now)
    if splay is not None:
        return f"splay: first enrollment in {format_duration(splay)}"
    if not joined:
        if policy.last_error:
            return f"the CA (last attempt failed: {policy.last_error.message})"
        return "the CA"
    return "the kubelet to start"


def signer_facts(cfg: Config) -> SignerRecord:
    if cfg.signer_kind == "kubernetes":
        source = cfg.kubernetes.discovery_file or "token discovery"
        return {"kind": "kubernetes", "server": cfg.cluster.server, "discovery": source}
    return {"kind": cfg.signer_kind, "urls": list(cfg.cfssl.urls)}


def status_line(doc: StatusRecord, now: dt.datetime) -> str:
    """One line a person reads in `systemctl status` (pure)."""
    waiting = doc.get("waiting_for")
    cert = doc.get("credentials") or {}
    reload = doc.get("reload") or {}
    # Until a good reload, the file on disk is not what runs: say so on every line.
    refused = (
        [f"config reload refused, running the previous one: {reload.get('message')}"]
        if reload.get("ok") is False
        else []
    )
    if not cert.get("present") or cert.get("foreign"):
        first = "not joined yet" + (" (the credentials on disk are another machine's)"
                                    if cert.get("foreign") else "")  # fmt: skip
        first += f"; waiting for {waiting}" if waiting else ""
        return "; ".join([first, *refused])[:400]
    parts = [f"joined as {doc.get('node')}", _expiry(cert, doc.get("renewal") or {}, now)]
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


def _expiry(cert: CredentialFacts, renewal: RenewalRecord, now: dt.datetime) -> str:
    na = parse_iso(cert["not_after"])
    if na <= now:
        return f"cert EXPIRED {format_duration(now - na)} ago"
    text = f"cert expires in {format_duration(na - now)}"
    deadline = renewal.get("renew_at")
    if deadline:
        ra = parse_iso(deadline)
        text += ", renewal overdue" if ra <= now else f", renews in {format_duration(ra - now)}"
    return text
