"""The one rule for what root may trust on this node (docs/security.md, "On the node").

Every file and directory the agent reads for a decision, writes through or executes must
be something only root could have put there: owned by root (or by the agent's own uid)
and not writable by group or others, on the whole path from ``/``. A directory on the way
that others may write is allowed only with the sticky bit (``/tmp``): there nobody else
can rename or remove what root put in it. A symlink is followed only when it lies in such
a path (so only root could have made it) and where it leads passes the same rule; writes
never follow one (``files`` opens with O_NOFOLLOW and renames over the name). Every read
is of a regular file, with a size cap, and never blocks (a FIFO is refused, not opened
for a writer that never comes). Every directory is created with an explicit mode,
whatever the umask.

The judging is pure (``judge``); walking the path and opening files is the edge.
Standard library only: the resident daemon uses it. Paths are strings or path objects
and are handled with ``os.path``: ``status`` reads through here on its fast path, which
does without pathlib (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import stat

from join_agent import TYPE_CHECKING
from join_agent.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Literal

    StrPath = str | os.PathLike[str]
    Kind = Literal["file", "dir", "any"]

# Caps for what the agent reads: generous for what such files hold, small enough that a
# link to /dev/zero or a runaway file cannot fill the memory of a root process.
PEM_CAP = 1 << 20  # certificates, keys, CA bundles, kubeconfigs
CONFIG_CAP = 1 << 20
SMALL_CAP = 64 << 10  # pidfiles, pins, records


class UnsafePath(StoreError):
    """A path the agent would trust is not something only root could have put there."""


def trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def owner_name(uid: int) -> str:
    import pwd  # a builtin module: cheap, and only on this error path

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def access(mode: int) -> str:
    """What group and others may do with a file of ``mode``, in words (pure):
    "readable by group", "writable by group and others", "readable and writable by
    group, readable by others"; "" when they may do nothing."""
    said: dict[str, str] = {}
    for who, shift in (("group", 3), ("others", 0)):
        bits = (mode >> shift) & 0o7
        verbs = [v for b, v in ((4, "readable"), (2, "writable"), (1, "executable")) if bits & b]
        if verbs:
            said[who] = ", ".join(verbs[:-1]) + " and " + verbs[-1] if len(verbs) > 1 else verbs[0]
    if len(said) == 2 and said["group"] == said["others"]:
        return f"{said['group']} by group and others"
    return ", ".join(f"{verbs} by {who}" for who, verbs in said.items())


def _who(bits: int) -> str:
    who = [name for flag, name in ((0o020, "group"), (0o002, "others")) if bits & flag]
    return " and ".join(who)


def judge(st: os.stat_result, *, uids: Iterable[int], on_the_way: bool) -> tuple[str, str] | None:
    """(what is wrong, the command's verb) for one path component, or None (pure).

    ``on_the_way``: a directory above the final path, where a sticky bit makes a directory
    others may write safe to pass through.
    """
    mode = st.st_mode
    if st.st_uid not in set(uids):
        return f"is owned by {owner_name(st.st_uid)}, not root", "chown root"
    if stat.S_ISLNK(mode):
        return None  # a link's own mode means nothing; its owner and place do
    writable = mode & 0o022
    if writable and not (on_the_way and stat.S_ISDIR(mode) and mode & stat.S_ISVTX):
        return (
            f"is writable by {_who(writable)} (mode {stat.S_IMODE(mode):04o})",
            "chmod go-w",
        )
    return None


def _kind_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def problem(path: StrPath, what: str, kind: Kind = "file") -> str | None:
    """The sentence for the first component of ``path`` that breaks the rule, or None.

    A path that does not exist (yet) is judged as far as it exists: what is missing is
    the caller's to report or create.
    """
    try:
        st = os.stat(path)
    except OSError:
        st = None  # missing (or a dangling link): the walk judges what is there
    want = {"file": stat.S_ISREG, "dir": stat.S_ISDIR}.get(kind)
    if st is not None and want is not None and not want(st.st_mode):
        expected = "a regular file" if kind == "file" else "a directory"
        return f"{what} {path} is {_kind_name(st.st_mode)}, not {expected}"
    return _walk(os.path.abspath(path), what, trusted_uids(), depth=0)


def _components(path: str) -> list[str]:
    """``/``, ``/a``, ``/a/b`` … for an absolute, normalised ``path`` (pure)."""
    names = [n for n in path.split(os.sep) if n]
    return [os.sep] + [os.sep + os.sep.join(names[: i + 1]) for i in range(len(names))]


def _walk(path: str, what: str, uids: frozenset[int], depth: int) -> str | None:
    linked = False
    parts = _components(path)
    for i, here in enumerate(parts):
        try:
            st = os.lstat(here)
        except OSError:
            return None  # missing from here on: nothing more to judge
        wrong = judge(st, uids=uids, on_the_way=i < len(parts) - 1)
        if wrong is not None:
            text, verb = wrong
            whose = "" if here == path else f" (on the path to {path})"
            return f"{what} {here}{whose} {text}: run `{verb} {here}`"
        linked = linked or stat.S_ISLNK(st.st_mode)
    if linked and depth < 8:
        # Where the links lead must pass too: a root-made link into a directory that
        # others can write would hand them the file.
        return _walk(os.path.realpath(path), what, uids, depth + 1)
    return None


def require(path: StrPath, what: str, kind: Kind = "file") -> None:
    """Raise UnsafePath with ``problem``'s sentence, if there is one."""
    found = problem(path, what, kind)
    if found is not None:
        raise UnsafePath(found)


def read(path: StrPath, what: str, *, cap: int, trusted: bool = True) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes.

    ``trusted``: the file decides something the agent does as root, so it must pass the
    rule (``problem``) too. OSError (FileNotFoundError included) passes through for the
    caller's own sentence; every refusal is an UnsafePath that names the path.
    """
    st = os.stat(path)  # before open: a device or FIFO is never opened
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{what} {path} is {_kind_name(st.st_mode)}, not a regular file")
    if trusted:
        require(path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since the stat above
            raise UnsafePath(f"{what} {path} is {_kind_name(st.st_mode)}, not a regular file")
        if trusted and (wrong := judge(st, uids=trusted_uids(), on_the_way=False)):
            raise UnsafePath(f"{what} {path} {wrong[0]}: run `{wrong[1]} {path}`")
        if st.st_size > cap:
            raise UnsafePath(_too_large(what, path, cap))
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, cap + 1 - size) or 1):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:  # grew since the fstat (/proc-like files report size 0)
                raise UnsafePath(_too_large(what, path, cap))
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_text(path: StrPath, what: str, *, cap: int, trusted: bool = True) -> str:
    """``read`` decoded as UTF-8; UnsafePath if it is not UTF-8 text."""
    try:
        return read(path, what, cap=cap, trusted=trusted).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePath(f"{what} {path} is not UTF-8 text") from None


def read_text_or_none(path: StrPath, cap: int = CONFIG_CAP) -> str | None:
    """A regular file's text that decides nothing on its own (a kubelet's settings, the
    kernel's boot id), or None when it cannot be read as one."""
    try:
        return read_text(path, "the file", cap=cap, trusted=False)
    except (OSError, StoreError):
        return None


def _too_large(what: str, path: StrPath, cap: int) -> str:
    return f"{what} {path} is larger than the {_size(cap)} such a file may have"


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"


def ensure_dir(directory: StrPath, mode: int, what: str = "directory") -> None:
    """Create ``directory`` (and missing parents, 0755) with exactly ``mode``, whatever the
    umask; an existing one, and the whole path to it, must pass the rule."""
    target = os.path.abspath(directory)
    missing: list[str] = []
    here = target
    while not os.path.lexists(here):
        missing.append(here)
        here = os.path.dirname(here)
    require(here, what, "dir")
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)  # owner-only until its mode is set
        except FileExistsError:
            require(d, what, "dir")  # someone was faster: judge theirs
            continue
        os.chmod(d, mode if d == target else 0o755)


def command_problems(argv: Iterable[str], what: str) -> list[str]:
    """Why running ``argv`` as root would run something another user chose, one sentence
    each: the executable, and every file named by an absolute path in its arguments
    (``--flag=/path`` included: the script an interpreter runs, the config a daemon
    reads), must pass the rule. A bare name is refused: PATH would choose it."""
    args = list(argv)
    if not args:
        return []
    if not args[0].startswith("/"):
        return [f"{what} starts with {args[0]!r}, not an absolute path: PATH would choose it"]
    found = [problem(args[0], what) or ""]
    for arg in args[1:]:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value.startswith("/") and os.path.isfile(value):
            found.append(problem(value, f"{what} argument") or "")
    return [p for p in found if p]  # a missing file is the supervisor's to report
