#!/usr/bin/env python3
"""A stand-in kubelet: a real process that behaves, on cue, like a kubelet under join-agent.

It is a stand-in because a real kubelet cannot run here: it probes cloud metadata
addresses, needs a container runtime and root, and takes seconds to settle. What the
supervisor needs from it is only a process that starts, records what it was given,
answers /healthz, and crashes, ignores SIGTERM or exits cleanly when told to.

Every kubelet flag is accepted and ignored. Its own flags:

  --standin-record=FILE        append one JSON line per start: argv, the sd_notify /
                               credentials / socket-activation variables it inherited,
                               pid, process group, session, time
  --standin-healthz-port=N     serve GET /healthz -> 200 "ok" on 127.0.0.1:N (0 = off)
  --standin-exit-after=SECONDS exit after this long (crash on cue)
  --standin-exit-code=N        ... with this status; a negative N kills itself with signal -N
  --standin-ignore-sigterm     ignore SIGTERM (to test SIGKILL escalation)
  --standin-run-tool=NAME      run NAME once, looked up in PATH as a kubelet looks up
                               iptables or mount, and record the file it found (or null)
  --standin-credentials=FILE   record the SHA-256 of FILE as it starts (the client pair a
                               kubelet would present: kubelet-client-current.pem)

On SIGTERM it exits 0 promptly unless told to ignore it. The SIGTERM disposition is set
before the record line is written, so a test that saw the line may signal at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from types import FrameType

RECORDED_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "PATH",
)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--standin-record")
    p.add_argument("--standin-healthz-port", type=int, default=0)
    p.add_argument("--standin-exit-after", type=float)
    p.add_argument("--standin-exit-code", type=int, default=1)
    p.add_argument("--standin-ignore-sigterm", action="store_true")
    p.add_argument("--standin-run-tool")
    p.add_argument("--standin-credentials")
    opts, _kubelet_flags = p.parse_known_args(argv)
    return opts


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _serve_healthz(port: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Healthz(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/healthz"
            body = b"ok" if ok else b"not found"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _run_tool(name: str | None) -> str | None:
    import shutil
    import subprocess

    found = shutil.which(name) if name else None
    if found and name:
        subprocess.run([name], check=False, timeout=10)
    return found


def _sha256(path: str | None) -> str | None:
    import hashlib

    try:
        with open(path or "", "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _record(path: str, tool: str | None, credentials: str | None) -> None:
    line = {
        "credentials_sha256": _sha256(credentials),
        "argv": sys.argv[1:],
        "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
        "env_names": sorted(os.environ),
        "cwd": os.getcwd(),
        "tool": tool,
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "time": time.time(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    opts = _parse(argv)
    if opts.standin_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, _on_sigterm)
    if opts.standin_healthz_port:
        _serve_healthz(opts.standin_healthz_port)
    tool = _run_tool(opts.standin_run_tool)
    if opts.standin_record:
        _record(opts.standin_record, tool, opts.standin_credentials)
    if opts.standin_exit_after is None:
        while True:
            time.sleep(3600)
    time.sleep(opts.standin_exit_after)
    if opts.standin_exit_code < 0:
        os.kill(os.getpid(), -opts.standin_exit_code)
        time.sleep(5)  # the signal's default action ends us first
    return int(opts.standin_exit_code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
