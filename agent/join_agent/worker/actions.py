"""What runs after an extra certificate rotates: a command, an SMF or systemd restart, or a
signal to a pidfile's process.

No shell unless the config says ``shell = true``. The environment is built from nothing:
PATH, a locale, and which certificate rotated; never ours (no credentials directory, no
notify socket, nothing a secret could ride in).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from join_agent import log
from join_agent.config.model import Action, CertificateSpec
from join_agent.host import children, platform
from join_agent.host.platform import TOOLS
from join_agent.storage import guard

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MAX_OUTPUT = 2000  # characters of the action's output kept for status
POLL = 0.5  # seconds between looks at a restarted service (tests shorten it)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    exit: int | None  # the command's exit status; None when it did not run to the end
    output: str  # trimmed, scrubbed of secrets

    def describe(self) -> str:
        if self.ok:
            return "ok"
        return f"exit status {self.exit}" if self.exit is not None else self.output


def argv_for(action: Action, tool: Callable[[str], str] = lambda n: TOOLS[n][0]) -> list[str]:
    """The command an action runs (pure); [] for a signal or no action. ``tool`` gives the
    absolute path of sh, svcadm and systemctl (platform.TOOLS)."""
    if action.kind == "command":
        return [tool("sh"), "-c", action.argv[0]] if action.shell else list(action.argv)
    if action.kind == "smf_restart":
        return [tool("svcadm"), "restart", action.argv[0]]
    if action.kind == "smf_refresh":
        return [tool("svcadm"), "refresh", action.argv[0]]
    if action.kind == "systemd_reload":
        return [tool("systemctl"), "reload-or-restart", action.argv[0]]
    return []


# Kinds whose effect is on a target outside the table (a service, a process): one run per
# target and pass, whichever tables rotated. A command runs once per table, in that
# table's environment (JOIN_AGENT_CERTIFICATE and its files).
SHARED_KINDS = ("smf_restart", "smf_refresh", "systemd_reload", "signal")


def target_of(spec: CertificateSpec) -> tuple[object, ...]:
    """What tells one action's effect from another's (pure): tables whose actions share a
    target are acted on once a pass, e.g. every certificate kube-apiserver reads."""
    a = spec.action
    if a.kind in SHARED_KINDS:
        return (a.kind, a.argv, a.pidfile, a.signal)
    return ("command", spec.name)


def _tool(name: str) -> str:
    return platform.tool(name) or TOOLS[name][0]


def environment(spec: CertificateSpec) -> dict[str, str]:
    """The action's whole environment (pure)."""
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "JOIN_AGENT_CERTIFICATE": spec.name,
        "JOIN_AGENT_CERT_FILE": str(spec.cert_file),
        "JOIN_AGENT_KEY_FILE": str(spec.key_file),
    }
    if spec.ca_file is not None:
        env["JOIN_AGENT_CA_FILE"] = str(spec.ca_file)
    return env


def run(spec: CertificateSpec, *, environ: Mapping[str, str] | None = None) -> Outcome | None:
    """Run the action of ``spec``; None when it has none."""
    action = spec.action
    if not action.kind:
        return None
    if action.kind == "signal":
        return _signal(action)
    argv = argv_for(action, _tool)
    # Checked at each run, not only at load: what runs as root must still be root's alone.
    unsafe = guard.command_problems(argv, f"the action of [[certificate]] {spec.name}")
    if unsafe:
        return Outcome(False, None, "not run: " + "; ".join(unsafe))
    deadline = time.monotonic() + action.timeout.total_seconds()
    outcome = _command(argv, action, environment(spec) if environ is None else environ)
    if outcome.ok and action.kind in SERVICE_KINDS:
        return _came_back(action, outcome, deadline)
    return outcome


def _command(argv: list[str], action: Action, environ: Mapping[str, str]) -> Outcome:
    try:
        done = subprocess.run(
            argv,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=action.timeout.total_seconds(),
            check=False,
            cwd=children.WORKING_DIRECTORY,
        )
    except subprocess.TimeoutExpired as e:
        text = _text((e.stdout or b"") + (e.stderr or b""))
        return Outcome(False, None, f"timed out after {action.timeout}; output: {text}")
    except OSError as e:
        return Outcome(False, None, f"cannot run {argv[0]}: {e.strerror or e}")
    return Outcome(done.returncode == 0, done.returncode, _text(done.stdout + done.stderr))


# `svcadm restart` and `refresh` only ask svc.startd, and return before anything happened;
# `systemctl reload-or-restart` waits for its job, which may still leave the unit failed.
# An action counts as done once its service is running again, or it is retried.
SERVICE_KINDS = ("smf_restart", "smf_refresh", "systemd_reload")


def _came_back(action: Action, ran: Outcome, deadline: float) -> Outcome:
    """``ran`` once the action's service is online (SMF) or active (systemd) again; a
    failed outcome naming its state when it is not by ``deadline``."""
    target = action.argv[0]
    if action.kind == "systemd_reload":
        argv, want = [_tool("systemctl"), "is-active", target], "active"
    else:
        argv, want = [_tool("svcs"), "-H", "-o", "state", target], "online"
    state = "unknown"
    while True:
        try:
            state = children.run_tool(argv).stdout.strip() or "unknown"
        except OSError as e:
            state = f"unknown ({e})"
        if state == want:
            return ran
        # maintenance and failed stay so until someone acts: no use waiting for them
        if state in ("maintenance", "failed") or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    asked = argv_for(action, _tool)
    said = f"{target} is {state}, not {want}, after {os.path.basename(asked[0])} {asked[1]}"
    return Outcome(False, None, _text(f"{said}; {ran.output}".rstrip("; ").encode()))


def _signal(action: Action) -> Outcome:
    assert action.pidfile is not None  # noqa: S101 - config validation guarantees it
    try:
        # Whoever can write the pidfile chooses whom we signal: root's alone (guard's rule).
        text = guard.read_text(action.pidfile, "the action's pidfile", cap=guard.SMALL_CAP)
        pid = int(text.split()[0])
    except guard.UnsafePath as e:
        return Outcome(False, None, f"not signalling: {e}")
    except (OSError, ValueError, IndexError):
        return Outcome(False, None, f"no process id in {action.pidfile}")
    if pid <= 1:
        return Outcome(False, None, f"{action.pidfile} names pid {pid}: refusing to signal it")
    try:
        os.kill(pid, getattr(signal, f"SIG{action.signal}"))
    except OSError as e:
        return Outcome(False, None, f"cannot signal pid {pid}: {e.strerror or e}")
    return Outcome(True, 0, f"sent SIG{action.signal} to pid {pid}")


def _text(data: bytes) -> str:
    text = log.scrub(data.decode("utf-8", "replace")).strip()
    return text if len(text) <= MAX_OUTPUT else "…" + text[-MAX_OUTPUT:]
