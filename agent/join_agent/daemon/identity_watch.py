"""Whether the node is still what its certificate says: its name and addresses, looked
up (a netlink dump) no more than once a minute, and compared by core.renewal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from join_agent.config.model import Config
from join_agent.core.protocol import CredentialFacts
from join_agent.core.renewal import identity_mismatch
from join_agent.errors import JoinAgentError
from join_agent.log import get_logger

log = get_logger("join_agent.daemon")

# A netlink dump on every watchdog tick is work for nothing.
EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Seen:
    mismatch: str | None  # why the certificate no longer names this node
    addresses_changed: bool  # since the last look (side jobs name them too)


@dataclass
class IdentityWatch:
    monotonic: Callable[[], float]
    checked: float = -1e9  # monotonic time of the last look
    addresses: list[str] | None = None  # what the last look found

    def look(self, creds: CredentialFacts, cfg: Config) -> Seen | None:
        """Compare the node with ``creds`` if a minute has passed since the last look."""
        now = self.monotonic()
        if now - self.checked < EVERY_SECONDS:
            return None
        self.checked = now
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
