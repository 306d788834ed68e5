"""``<state_dir>/status.json``: what the daemon knows, written atomically on every change.

Standard library only: the resident daemon and ``status`` use it without loading
cryptography, and without pathlib (``status``'s fast path, docs/benchmarks.md): paths are
strings or path objects, joined with ``os.path``. Its keys are an API (docs/status.md):
add keys, never rename them.
"""

from __future__ import annotations

import json
import os

from join_agent import TYPE_CHECKING
from join_agent.core.wire import parse_iso
from join_agent.host import proc
from join_agent.storage import names

if TYPE_CHECKING:
    from join_agent.core.protocol import FileIdentity
    from join_agent.core.records import StatusRecord
    from join_agent.storage.guard import StrPath


STATUS_FILE, AGENT_PIDFILE = names.STATUS_FILE, names.AGENT_PIDFILE


def file_identity(path: StrPath) -> FileIdentity | None:
    """What changes whenever a file is replaced: the resolved name, inode, size, mtime."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return {"file": real, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


MAX_STATUS = 1 << 20  # status.json is a few KiB; [[certificate]] tables add ~1 KiB each


def read(state_dir: StrPath) -> StatusRecord | None:
    """The recorded status, or None when there is none or it cannot be read."""
    return read_checked(state_dir)[0]


def read_checked(state_dir: StrPath) -> tuple[StatusRecord | None, str | None]:
    """(the recorded status, None), or (None, why it cannot be used): absent is not damage."""
    from join_agent.errors import StoreError
    from join_agent.storage import guard

    path = os.path.join(state_dir, STATUS_FILE)
    try:
        doc = json.loads(guard.read(path, "the status file", cap=MAX_STATUS))
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror or e}"
    except StoreError as e:
        return None, str(e)
    except (ValueError, RecursionError):
        return None, f"{path} is not valid JSON"
    problem = document_problem(doc)
    if problem is not None:
        return None, f"{path} is damaged ({problem})"
    record: StatusRecord = doc  # checked against SHAPE just above
    return record, None


def write(state_dir: StrPath, doc: StatusRecord) -> None:
    # The writer (fcntl, the crash points) is the daemon's; `status` only reads.
    from pathlib import Path

    from join_agent.storage.files import atomic_write

    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    atomic_write(Path(state_dir, STATUS_FILE), text.encode(), 0o644)


def write_agent_pidfile(state_dir: StrPath, pid: int) -> None:
    from pathlib import Path

    from join_agent.storage.files import atomic_write

    text = f"{pid} {proc.start_time(pid) or '-'}\n"
    atomic_write(Path(state_dir, AGENT_PIDFILE), text.encode(), 0o644)


def _read_pidfile(path: StrPath) -> str:
    """A pidfile's text; UnsafePath (a StoreError) when someone but root could have
    written it: whoever writes it chooses whom root signals."""
    from join_agent.storage import guard

    return guard.read_text(path, "the pidfile", cap=4096)


def running_agent(state_dir: StrPath) -> int | None:
    """The pid of a live ``join-agent run`` for this state_dir, or None.

    Raises UnsafePath when the pidfile is not root's alone (see ``_read_pidfile``).
    """
    try:
        text = _read_pidfile(os.path.join(state_dir, AGENT_PIDFILE))
        pid_text, _, start = text.strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if proc.alive(pid, None if start in ("", "-") else start) else None


def remove_agent_pidfile(state_dir: StrPath, pid: int) -> None:
    import contextlib  # the daemon's, on its way out: not on `status`'s path

    from join_agent.errors import StoreError

    path = os.path.join(state_dir, AGENT_PIDFILE)
    with contextlib.suppress(OSError, StoreError):
        if _read_pidfile(path).split(" ", 1)[0] == str(pid):
            os.unlink(path)


# --- the shape of status.json -------------------------------------------------------------
# What ``status`` and ``renew`` read back is checked against this before anything is
# judged from it: a damaged or hand-edited file is reported as damage, never followed into
# a wrong verdict or a crash. Keys may be missing (older daemons wrote fewer) unless they
# end in "!"; a key that is present must have its shape. "iso" is a timestamp as
# ``iso()`` writes it.

_N = type(None)
_STR, _INT, _BOOL = (str, _N), (int, _N), (bool, _N)
_ISO: tuple[object, ...] = ("iso", _N)
_ERROR = (_N, {"message": str, "kind": str, "at": "iso"})
_IDS = (_N, {"file": str, "inode": int, "size": int, "mtime_ns": int})
_CREDENTIALS = {
    "credentials!": str, "present": bool, "error": _STR, "key_mismatch": _BOOL, "foreign": _STR,
    "issued_by_ca_file": _BOOL, "node": _STR, "subject": _STR, "issuer": _STR,
    "serial": _STR, "sans": (_N, {"dns!": [str], "ip!": [str]}), "not_before": _ISO,
    "not_after": _ISO,
    "kubeconfig": (_N, {
        "path": _STR, "present": _BOOL, "error": _STR, "ca_matches": _BOOL,
        "current_context": _STR, "server": _STR, "user": _STR,
        "client_certificate": _STR, "client_key": _STR,
    }),
    "ca_file": (_N, {"path": _STR, "present": _BOOL, "subjects": [str], "error": _STR}),
    "ca": (_N, [{"pin!": str, "subject!": str, "not_after!": "iso"}]),
    "ids": (_N, {"credentials": _IDS, "kubeconfig": _IDS, "ca_file": _IDS}),
}  # fmt: skip
_REPORT_ACTION = {
    "kind": _STR, "pending": _BOOL, "ok": _BOOL, "exit": _INT, "output": _STR, "at": _ISO,
    "failures": _INT,
}  # fmt: skip
SHAPE: dict[str, object] = {
    "schema": int,
    "written_at": "iso",
    "agent": {
        "version": str, "pid": int, "start_time": _STR, "started_at": "iso", "state": str,
        "config": str,
    },
    "node": _STR,
    "signer": (_N, dict),
    "credentials": _CREDENTIALS,
    "kubelet": {
        "managed": bool, "state": _STR, "pid": _INT, "restarts": _INT,
        "consecutive_failures": _INT, "since": _ISO, "last_exit": _INT, "last_error": _STR,
        "next_start": _ISO, "restart_delay": (int, float, _N),
    },
    "renewal": {
        "renew_at": _ISO, "next_attempt": _ISO, "failures": int, "last_attempt": _ISO,
        "last_success": _ISO, "last_ok": _BOOL, "reason": _STR, "in_progress": bool,
    },
    "last_error": _ERROR,
    "serving": (_N, {
        "state": str, "message": _STR, "present": _BOOL, "not_after": _ISO, "renew_at": _ISO,
    }),
    "certificates": (_N, [{
        "name": str, "state": str, "serial": _STR, "subject": _STR, "not_after": _ISO,
        "next_attempt": _ISO, "failures": _INT, "last_error": _ERROR, "rotations": _INT,
        "message": _STR, "action": (_N, _REPORT_ACTION), "files": (_N, list),
    }]),
    "waiting_for": _STR,
    "reload": (_N, {"count!": int, "at": "iso", "ok!": bool, "message": _STR}),
}  # fmt: skip


# Facts that a present certificate always has (null only while there is none).
_PRESENT_CERTIFICATE = {
    "node": str, "subject": str, "issuer": str, "serial": str,
    "sans": {"dns!": [str], "ip!": [str]}, "not_before": "iso", "not_after": "iso",
}  # fmt: skip


def document_problem(doc: object) -> str | None:
    """Where a status.json document breaks SHAPE, or what a present certificate lacks
    (pure)."""
    problem = shape_problem(doc)
    if problem is not None or not isinstance(doc, dict):
        return problem
    creds = doc.get("credentials")
    if not isinstance(creds, dict) or creds.get("present") is not True:
        return None
    for key, shape in _PRESENT_CERTIFICATE.items():
        problem = shape_problem(creds.get(key), shape, f"credentials.{key}")
        if problem is not None:
            return problem
    return None


def shape_problem(value: object, shape: object = SHAPE, where: str = "") -> str | None:
    """Where ``value`` breaks ``shape`` (see SHAPE), as "key.path: what", or None (pure)."""
    if isinstance(shape, tuple):
        found = [shape_problem(value, s, where) for s in shape]
        if None in found:
            return None
        # The alternative that got deepest says the most ("a.b: not a string", not "a: not null").
        return max((p for p in found if p is not None), key=lambda p: len(p.split(":")[0]))
    if isinstance(shape, dict):
        return _object_problem(value, shape, where)
    if isinstance(shape, list):
        return _list_problem(value, shape[0], where)
    here = where or "the document"
    if shape == "iso":
        return None if _is_iso(value) else f"{here}: not a timestamp"
    assert isinstance(shape, type)  # noqa: S101 - SHAPE is written above
    fits = isinstance(value, shape) and (shape is bool or not isinstance(value, bool))
    return None if fits else f"{here}: not {_name(shape)}"


def _object_problem(value: object, shape: dict[str, object], where: str) -> str | None:
    if not isinstance(value, dict):
        return f"{where or 'the document'}: not an object"
    for marked, inner in shape.items():
        key = marked.rstrip("!")
        here = f"{where}.{key}".lstrip(".")
        if key not in value:
            if marked.endswith("!"):
                return f"{here}: missing"
            continue
        problem = shape_problem(value[key], inner, here)
        if problem is not None:
            return problem
    return None


def _list_problem(value: object, item: object, where: str) -> str | None:
    if not isinstance(value, list):
        return f"{where or 'the document'}: not a list"
    for i, v in enumerate(value):
        problem = shape_problem(v, item, f"{where}[{i}]")
        if problem is not None:
            return problem
    return None


def _is_iso(value: object) -> bool:
    try:
        return isinstance(value, str) and parse_iso(value) is not None
    except ValueError:
        return False


def _name(t: type) -> str:
    return {str: "a string", int: "a number", bool: "true or false", _N: "null"}.get(t, t.__name__)
