"""What crosses the process boundary between the daemon and its worker child, and what the
daemon records in status.json: the types, and their one JSON form each. The documents'
parts, status.json as a whole and the ``status --json`` report are in core/records.py.

The JSON is documented (docs/status.md) and stays as it is: these types give it names and
checks, they do not change it.
"""

from __future__ import annotations

import datetime as dt
import enum
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from join_agent.core.wire import WORKER_SCHEMA, iso

if TYPE_CHECKING:  # annotations only: no process pays for building them (core/records.py)
    from join_agent.core.records import (
        CaFacts,
        CaFileFacts,
        KubeconfigFacts,
        Sans,
        ServingReport,
        TableReport,
    )


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
    CLOCK = "ClockError"
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


class FileIdentity(TypedDict):
    """What changes whenever a file is replaced (``state.file_identity``)."""

    file: str
    inode: int
    size: int
    mtime_ns: int


class CredentialFacts(TypedDict, total=False):
    """The node's files as a worker found them: the certificate's fields (``node``,
    ``subject``, ``issuer``, ``serial``, ``sans``, ``not_before``, ``not_after``), the
    kubeconfig's and CA file's facts, and (from ``inspect``) each file's identity, which
    the daemon compares to notice files someone else replaced. docs/status.md lists them."""

    present: bool
    credentials: str
    error: str | None
    key_mismatch: bool
    foreign: str | None  # made on another machine: why (host/machine.py)
    issued_by_ca_file: bool | None
    node: str
    subject: str
    issuer: str
    serial: str
    sans: Sans
    not_before: str
    not_after: str
    kubeconfig: KubeconfigFacts
    ca_file: CaFileFacts
    ca: list[CaFacts]
    ids: dict[str, FileIdentity | None]


class WorkerResult(TypedDict, total=False):
    """What ``join-agent worker <mode>`` prints, one JSON object: whether the pass worked
    (``ok``; else ``error``, one sentence, and ``kind``, an ErrorKind's value), and what it
    found. ``credentials`` comes with every mode but ``kubelet``."""

    schema: int
    ok: bool
    mode: str
    error: str
    kind: str
    ca_changed: bool  # enroll: the issuing CA changed (the kubelet needs a restart)
    source: str  # enroll: which CA URL or API server issued it
    credentials: CredentialFacts
    serving: ServingReport
    certificates: list[TableReport]  # one a [[certificate]] table
    conflicts: list[str]  # kubelet: what would fight join-agent over the credentials
    serves_our_certificate: bool  # kubelet: a rotation then restarts it


def failed(error: str, kind: ErrorKind) -> WorkerResult:
    """The document of an attempt that failed before or outside the worker."""
    return {"schema": WORKER_SCHEMA, "ok": False, "error": error, "kind": kind.value}


def worker_result(doc: object, returncode: int | None) -> WorkerResult:
    """A worker's printed document, checked: anything else (nothing printed, another
    version's document) is a failed attempt that says why."""
    if not isinstance(doc, dict):
        return failed(
            f"the worker exited with status {returncode} and no result (see the log lines above)",
            ErrorKind.WORKER,
        )
    schema = doc.get("schema", WORKER_SCHEMA)
    if schema != WORKER_SCHEMA:
        return failed(
            f"the worker speaks protocol version {schema}, this daemon {WORKER_SCHEMA}: the "
            "package was upgraded under it; restart join-agent",
            ErrorKind.WORKER,
        )
    return typing.cast(WorkerResult, doc)
