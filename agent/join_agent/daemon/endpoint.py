"""The metrics listener (``[metrics] listen``): ``/metrics`` for Prometheus, and two
health answers for whatever watches a node without it (a load balancer, a
node-problem-detector plugin, ``curl -f``), as the kubelet and the API server give them:

- ``/healthz``: the daemon's loop is alive: it has run within the longest it ever sleeps
  (core/schedule.MAX_SLEEP) and a minute's grace. The listener runs in its own thread, so
  it can say so when the loop hangs.
- ``/readyz``: the node is joined with credentials of its own that are valid now.

``200 ok`` when they hold; otherwise ``500`` (healthz) or ``503`` (readyz) with one line
that says why. Judging is pure (``healthz``, ``readyz``); serving is the edge.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from join_agent.core import schedule
from join_agent.core.wire import parse_iso

if TYPE_CHECKING:
    from join_agent.core.records import StatusRecord

GRACE = dt.timedelta(minutes=1)


class Health:
    """What the loop last published, and when (the monotonic clock)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self.turn: float | None = None
        self.doc: StatusRecord | None = None

    def seen(self, doc: StatusRecord) -> None:
        self.turn, self.doc = self.monotonic(), doc

    def answers(self, path: str, now: dt.datetime) -> tuple[int, str] | None:
        if path == "/healthz":
            return healthz(self.monotonic(), self.turn)
        if path == "/readyz":
            return readyz(self.doc, now)
        return None


def healthz(now: float, turn: float | None) -> tuple[int, str]:
    """The loop is alive: it ran within MAX_SLEEP and GRACE (pure)."""
    limit = (schedule.MAX_SLEEP + GRACE).total_seconds()
    if turn is None:
        return 500, "the daemon's loop has not run yet"
    if now - turn > limit:
        return 500, f"the daemon's loop last ran {now - turn:.0f} s ago (limit {limit:.0f} s)"
    return 200, "ok"


def readyz(doc: StatusRecord | None, now: dt.datetime) -> tuple[int, str]:
    """Joined, with credentials of this machine's that are valid at ``now`` (pure)."""
    cert = (doc or {}).get("credentials") or {}
    why = None
    if not cert.get("present"):
        why = "not joined yet"
    elif cert.get("error"):
        why = f"the credentials cannot be used: {cert.get('error')}"
    elif cert.get("foreign"):
        why = "the credentials on disk are another machine's; enrolling afresh"
    elif cert.get("not_after") and parse_iso(cert["not_after"]) <= now:
        why = f"the certificate expired at {cert['not_after']}"
    elif cert.get("not_before") and now < parse_iso(cert["not_before"]):
        why = f"the certificate is valid only from {cert['not_before']}"
    return (503, why) if why else (200, "ok")


def serve(
    host: str, port: int, metrics_app: Callable[..., Iterable[bytes]], health: Health
) -> None:
    """Listen on ``host:port`` in a daemon thread: the health paths, else the metrics."""
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not news for the journal

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        answer = health.answers(path, dt.datetime.now(dt.timezone.utc))
        if answer is None:
            return metrics_app(environ, start_response)
        code, text = answer
        status = {200: "200 OK", 500: "500 Internal Server Error", 503: "503 Service Unavailable"}
        body = (text + "\n").encode()
        start_response(
            status[code],
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    server = make_server(host, port, app, Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
