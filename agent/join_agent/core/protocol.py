"""What crosses the process boundary between the daemon and its worker child, and what the
daemon records in status.json: the types, and their one JSON form each.

The JSON is documented (docs/status.md) and stays as it is: these types give it names and
checks, they do not change it.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import TypedDict

SCHEMA = 1  # status.json's; keys are added, never renamed or removed


class ErrorKind(str, enum.Enum):
    """Why an attempt failed: the class of the error, by the name status.json records."""

    CONFIG = "ConfigError"
    IDENTITY = "IdentityError"
    TRANSPORT = "TransportError"
    TLS_VERIFY = "TlsVerifyFailed"
    STREAM_REFUSED = "StreamRefused"
    CA_RESPONSE = "CAResponseError"
    TRUST = "TrustError"
    NO_SIGNATURE = "NoSignature"
    REJECTED = "CertificateRejected"
    STORE = "StoreError"
    KEY_MISMATCH = "KeyMismatch"
    UNSAFE_PATH = "UnsafePath"
    LOCKED = "LockedError"
    KUBELET = "KubeletError"
    DENIED = "RequestDenied"
    APPROVAL_TIMEOUT = "ApprovalTimeout"
    CREDENTIALS_REFUSED = "CredentialsRefused"
    GENERIC = "JoinAgentError"
    OS = "OSError"  # the worker could not be started
    WORKER = "WorkerError"  # the worker died without a result
    UNKNOWN = ""  # a kind this version does not know (a newer worker's, a hand edit)

    @classmethod
    def of(cls, name: object) -> ErrorKind:
        try:
            return cls(str(name))
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class ErrorRecord:
    """The last failed attempt, as status.json's ``last_error`` holds it."""

    message: str
    kind: ErrorKind
    at: dt.datetime

    def to_json(self) -> ErrorJson:
        return {"message": self.message, "kind": self.kind.value, "at": iso(self.at)}


class ErrorJson(TypedDict):
    message: str
    kind: str
    at: str


def iso(t: dt.datetime) -> str:
    """UTC, to the second, with a Z: the one timestamp form in every file we write."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    """Read back ``iso()``'s "YYYY-MM-DDTHH:MM:SSZ" (no strptime: it costs an import)."""
    if len(text) != 20 or text[10] != "T" or text[19] != "Z":
        raise ValueError(f"not a UTC timestamp: {text!r}")
    return dt.datetime(
        int(text[0:4]), int(text[5:7]), int(text[8:10]),
        int(text[11:13]), int(text[14:16]), int(text[17:19]),
        tzinfo=dt.timezone.utc,
    )  # fmt: skip
