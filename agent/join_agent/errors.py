"""One error family. Every message is a sentence for an operator: what failed, what to do."""


class JoinAgentError(Exception):
    """Base of every error join-agent reports to a person; ``str()`` is the whole message."""

    exit_code = 1


class ConfigError(JoinAgentError):
    """The config file, a flag or a secret file is wrong; the message names the key."""


class IdentityError(JoinAgentError):
    """The node's name or addresses cannot be determined or are invalid."""


class TransportError(JoinAgentError):
    """The CA could not be reached or did not answer in time (worth trying another URL)."""


class CAResponseError(JoinAgentError):
    """The CA answered, but not with something we can accept (error envelope, bad JSON)."""


class TrustError(JoinAgentError):
    """The CA does not match a pin: fatal, never a reason to try the next source."""


class CertificateRejected(JoinAgentError):
    """An issued certificate fails verification; nothing is written."""


class StoreError(JoinAgentError):
    """Writing or reading the node's files failed."""


class KeyMismatch(StoreError):
    """A versioned file's key does not belong to its certificate."""


class LockedError(JoinAgentError):
    """Another join-agent process holds the state lock."""


class ClockError(JoinAgentError):
    """The clock is obviously wrong (earlier than this package's install): set it first."""
