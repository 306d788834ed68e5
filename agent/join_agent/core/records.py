"""The documents we write, as types: the parts of a worker's facts and reports
(core/protocol.py has the document itself), status.json (the daemon's record), a
``[[certificate]]`` table's record, and the ``status --json`` report. docs/status.md lists
every key; these give them names and checks, the JSON stays as documented.

Each type is as its writer builds it. ``total=False`` where a key may be missing: built a
part at a time, or read back from a file that an older version wrote (keys are added,
never removed); status.json is checked against ``storage.state.SHAPE`` as it is read.

For annotations only: import it under ``TYPE_CHECKING`` (``status`` must not pay for
building these classes at run time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts, ErrorJson


# --- the parts of a worker's facts (CredentialFacts) --------------------------------------


class Sans(TypedDict):
    dns: list[str]
    ip: list[str]


class KubeconfigFacts(TypedDict, total=False):
    """The kubeconfig as a worker found it: what its current context points at, and whether
    its CA data is the cluster's (``None``: not compared)."""

    path: str
    present: bool
    error: str | None
    ca_matches: bool | None
    current_context: str | None
    server: str | None
    user: str | None
    client_certificate: str | None
    client_key: str | None


class CaFileFacts(TypedDict, total=False):
    path: str
    present: bool
    subjects: list[str]
    error: str | None


class CaFacts(TypedDict):
    """One CA certificate: its pin (``join-agent pin``'s form), subject and expiry."""

    pin: str
    subject: str
    not_after: str


# --- the side jobs' reports (WorkerResult, status.json) -----------------------------------


class ServingReport(TypedDict, total=False):
    """The serving certificate: ``state`` is current, pending, denied, error, none or off;
    the installed certificate's facts when ``present``."""

    state: str
    name: str  # the CSR's
    message: str
    rotated: bool  # this pass installed a new one
    present: bool
    serial: str
    not_before: str
    not_after: str
    renew_at: str


class TableError(TypedDict):
    message: str
    at: str


class ActionRecord(TypedDict, total=False):
    """A rotation's action, in a table's record and in its report (``kind`` there only)."""

    kind: str | None
    pending: bool
    ok: bool | None
    exit: int | None
    output: str | None
    at: str | None
    failures: int


class TableRecord(TypedDict, total=False):
    """``<state_dir>/certificates/<name>.json``: what a ``[[certificate]]`` table holds and
    how its last attempts went (core.tables decides from it)."""

    serial: str
    subject: str
    not_before: str
    not_after: str
    failures: int
    last_error: TableError | None
    last_attempt: str
    last_success: str
    next_attempt: str
    rotations: int
    action: ActionRecord
    files: list[str]


class TableReport(TypedDict, total=False):
    """One ``[[certificate]]`` table as status shows it; a removed table's has ``name``,
    ``state`` "removed", ``message`` and ``not_after`` only."""

    name: str
    state: str  # valid, expired, failing, none, removed
    serial: str | None
    subject: str | None
    not_after: str | None
    next_attempt: str
    failures: int
    last_error: TableError | None
    rotations: int
    action: ActionRecord
    files: list[str]
    message: str


# --- status.json --------------------------------------------------------------------------


class AgentRecord(TypedDict, total=False):
    version: str
    pid: int
    start_time: str | None  # the kernel's, to tell a recycled pid
    started_at: str
    state: str  # starting, running, stopping, stopped
    config: str


class SignerRecord(TypedDict, total=False):
    kind: str
    urls: list[str]  # cfssl
    server: str  # kubernetes
    discovery: str  # kubernetes


class KubeletRecord(TypedDict, total=False):
    """The supervisor's state (kubelet/supervisor.py), and ``managed``."""

    managed: bool
    state: str
    pid: int | None
    restarts: int
    consecutive_failures: int
    since: str | None
    last_exit: int | None
    last_error: str | None
    next_start: str | None
    restart_delay: float | None


class RenewalRecord(TypedDict, total=False):
    renew_at: str | None
    next_attempt: str | None
    failures: int
    last_attempt: str | None
    last_success: str | None
    last_ok: bool | None
    reason: str | None
    in_progress: bool


class ReloadRecord(TypedDict, total=False):
    """The last SIGHUP's outcome: `join-agent reload` waits for ``count`` to move."""

    count: int
    at: str
    ok: bool
    message: str | None


class StatusRecord(TypedDict, total=False):
    """``<state_dir>/status.json``."""

    schema: int
    written_at: str
    agent: AgentRecord
    node: str | None
    signer: SignerRecord
    credentials: CredentialFacts
    kubelet: KubeletRecord
    renewal: RenewalRecord
    last_error: ErrorJson | None
    serving: ServingReport | None
    certificates: list[TableReport] | None
    waiting_for: str | None
    reload: ReloadRecord | None


# --- what `status` needs of the config (verbs/status.py, storage/runtime.py) -------------


class ConfigStamp(TypedDict):
    """What changes whenever the config file is edited, replaced, chowned or chmodded."""

    dev: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


class HealthzTarget(TypedDict):
    """``kubelet.healthz_url``, split once where the config is loaded."""

    url: str
    host: str
    port: int
    path: str


class StatusSettings(TypedDict):
    """The few settings ``status`` judges with, taken from a config (durations in seconds)."""

    state_dir: str
    pki_dir: str
    kubeconfig: str
    ca_file: str
    signer_kind: str
    server: str
    node_name: str | None  # None: the hostname, looked up when judged
    clock_skew: float
    overdue_after: float
    manage_kubelet: bool
    healthz: HealthzTarget | None
    serving: bool
    certificates: bool  # any [[certificate]] table


class RuntimeRecord(TypedDict):
    """``<runtime_dir>/<config>.json``: a running daemon's settings, and which version of
    which config file they come from (storage/runtime.py)."""

    schema: int
    version: str
    pid: int  # the daemon's: the SMF refresh method tells by it which config it runs
    config: str
    stamp: ConfigStamp
    settings: StatusSettings


# --- the `status --json` report (core/judging.py) -----------------------------------------
# Every key is there, null when unknown: scripts index without guarding.


class CertificatePart(TypedDict):
    path: str
    present: bool
    node: str | None
    subject: str | None
    issuer: str | None
    serial: str | None
    sans: Sans | None
    not_before: str | None
    not_after: str | None
    seconds_left: int | None


class KubeconfigPart(TypedDict):
    path: str | None
    present: bool
    current_context: str | None
    server: str | None
    user: str | None
    client_certificate: str | None
    client_key: str | None


class CaFilePart(TypedDict):
    path: str | None
    present: bool | None
    subjects: list[str] | None


class AgentPart(TypedDict):
    running: bool
    pid: int | None
    version: str | None
    state: str | None
    started_at: str | None


class RenewalPart(TypedDict):
    renew_at: str | None
    next_attempt: str | None
    failures: int | None
    last_attempt: str | None
    last_success: str | None
    last_ok: bool | None
    reason: str | None
    in_progress: bool | None


class KubeletPart(TypedDict):
    managed: bool
    state: str | None
    pid: int | None
    restarts: int | None
    consecutive_failures: int | None
    since: str | None
    last_exit: int | None
    last_error: str | None
    next_start: str | None
    restart_delay: float | None
    healthz: str | None


class StatusReport(TypedDict, total=False):
    """The whole report: judge() builds the files' part, overlay() adds the daemon's, and
    verbs/status.py the source and the side jobs'."""

    schema: int
    checked_at: str
    state: str
    health: str  # healthy, degraded, broken: the exit status 0, 1, 2
    source: str  # daemon, files
    problems: list[str]
    node: str | None
    certificate: CertificatePart
    kubeconfig: KubeconfigPart
    ca_file: CaFilePart
    ca: list[CaFacts]
    agent: AgentPart
    signer: SignerRecord | None
    renewal: RenewalPart
    last_error: ErrorJson | None
    kubelet: KubeletPart
    serving: ServingReport
    certificates: list[TableReport]
