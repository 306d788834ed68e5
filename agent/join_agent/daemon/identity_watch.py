"""Whether the node is still what its certificate says: its name and addresses, looked up
(a netlink dump) and compared by core.renewal.

When to look: soon after the kernel says an address or a link changed (Linux: the
notifications of host/netlink.py), once a burst of them has settled; and once a minute
otherwise, which is what finds a new name, and on illumos (nothing notifies there) every
address change. Looking costs a dump, so a burst (DHCP renumbering sends several, each
IPv6 address a second one once its DAD is done) gets one look, not one per message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from join_agent.config.model import Config
from join_agent.core.protocol import CredentialFacts
from join_agent.core.renewal import identity_mismatch
from join_agent.errors import JoinAgentError
from join_agent.log import get_logger

if TYPE_CHECKING:
    import socket

    from join_agent.daemon.wakeups import HasFileno

log = get_logger("join_agent.daemon")

# The regular look. Where nothing notifies, the loop wakes for it; elsewhere it comes
# with whatever wakes the loop (under the shipped unit, the watchdog: every minute).
EVERY_SECONDS = 60.0
# A wake-up this close to the minute counts as the minute: the watchdog's tick would
# otherwise fall just short of it every other time and double the interval.
EARLY_SECONDS = 1.0
# A burst of notifications is looked at once it has been quiet this long...
QUIET_SECONDS = 2.0
# ...or this long after its first message, however long it goes on.
BURST_SECONDS = 10.0


@dataclass(frozen=True)
class Seen:
    mismatch: str | None  # why the certificate no longer names this node
    addresses_changed: bool  # since the last look (side jobs name them too)


@dataclass
class IdentityWatch:
    monotonic: Callable[[], float]
    polls: bool = True  # nothing notifies: the loop wakes for the minute's look
    checked: float = -1e9  # monotonic time of the last look
    addresses: list[str] | None = None  # what the last look found
    burst: float | None = None  # the first notification since the last look
    settled: float | None = None  # when the burst will have been quiet long enough
    feed: socket.socket | None = None  # the kernel's notifications (host/netlink.py)
    forget: Callable[[HasFileno], None] | None = None

    def listen(
        self, addresses_from: str, watch: Callable[[HasFileno], None],
        forget: Callable[[HasFileno], None],
    ) -> None:  # fmt: skip
        """Take the kernel's notifications where there are any; poll where there are none
        (illumos, or a kernel that refuses the socket)."""
        if addresses_from != "netlink":
            return
        from join_agent.host import netlink

        try:
            self.feed = netlink.subscribe()
        except OSError as e:
            _polling_instead("address_notifications_unavailable", e)
            return
        self.polls, self.forget = False, forget
        watch(self.feed)

    def heard(self) -> None:
        """The feed is readable: read it, and look soon if it told of a change."""
        if self.feed is None:
            return
        from join_agent.host import netlink

        try:
            if netlink.changed(self.feed):
                self.notified()
        except OSError as e:
            _polling_instead("address_notifications_lost", e)
            self.close()
            self.notified()  # what was lost may have been a change

    def close(self) -> None:
        if self.feed is not None:
            if self.forget is not None:
                self.forget(self.feed)
            self.feed.close()
        self.feed, self.polls = None, True

    def notified(self) -> None:
        """The kernel said an address or a link changed: look once it has settled."""
        now = self.monotonic()
        self.burst = now if self.burst is None else self.burst
        self.settled = min(now + QUIET_SECONDS, self.burst + BURST_SECONDS)

    def wake_at(self, now: dt.datetime) -> list[dt.datetime]:
        """When the loop must be awake to look (``now``: the wall clock), if ever."""
        times = [] if self.settled is None else [self.settled]
        if self.polls:
            times.append(self.checked + EVERY_SECONDS)
        if not times:
            return []
        delay = min(times) - self.monotonic()
        # Due, and still not looked at: the loop had to do something first (a worker that
        # could not be started, say). A second's wait, then, never a spin.
        return [now + dt.timedelta(seconds=delay if delay > 0 else EARLY_SECONDS)]

    def due(self, now: float) -> bool:
        settled = self.settled is not None and now >= self.settled
        return settled or now - self.checked >= EVERY_SECONDS - EARLY_SECONDS

    def look(self, creds: CredentialFacts | None, cfg: Config) -> Seen | None:
        """Compare the node with ``creds`` if a look is due. None for ``creds`` (not
        joined, a renewal asked for already): no look, and what was notified is moot, for
        an enrollment looks at the node itself."""
        now = self.monotonic()
        if creds is None:
            self.burst = self.settled = None
            return None
        if not self.due(now):
            return None
        self.checked, self.burst, self.settled = now, None, None
        from join_agent.host import identity

        try:
            ident = identity.resolve(cfg.node)
        except JoinAgentError as e:
            log.warning("identity_unavailable", error=str(e))
            return None
        want = sorted(str(a) for a in ident.addresses)
        changed = self.addresses is not None and want != self.addresses
        self.addresses = want
        have = sorted(creds.get("sans", {}).get("ip", []))
        in_sans = cfg.signer_kind != "kubernetes"  # the kubelet client signer takes none
        why = identity_mismatch(
            creds.get("node"), have, ident.name, want, addresses_in_certificate=in_sans
        )
        if why is not None:
            log.info(
                "identity_changed", node=ident.name, addresses=want, certificate_addresses=have
            )
        return Seen(mismatch=why, addresses_changed=changed)


def _polling_instead(event: str, e: OSError) -> None:
    log.warning(
        event,
        error=e.strerror or str(e),
        msg=f"looking at the addresses every {EVERY_SECONDS:.0f} s instead",
    )
