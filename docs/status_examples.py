"""Produce the example outputs of ``join-agent status`` shown in docs/status.md.

Not a test: it sets up each situation for real and records what the real CLI prints.
A real CFSSL CA (tests/lab/cfssl_ca.py) signs, ``join-agent join`` and ``join-agent run``
run as their own processes, and the kubelet is the stand-in (tests/standins/kubelet.py).

    PYTHONPATH=. python docs/status_examples.py           # print the generated section
    PYTHONPATH=. python docs/status_examples.py --write   # replace it in docs/status.md

Needs cfssl (Debian's golang-cfssl) and openssl; takes about two minutes, most of it
waiting for a 60-second certificate to expire. Temporary paths, ports and the CA's URL
are replaced by the usual ones (/var/lib/kubelet/pki, 10.0.0.5:8888, ...) so the output
reads as it would on a node; times, pids and serials are the real ones of the run.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import Node
from tests.lab.cfssl_ca import CfsslCA, free_port
from tests.standins import kubelet_command

DOC = Path(__file__).with_name("status.md")
BEGIN = "<!-- status_examples.py: begin (generated, do not edit by hand) -->"
END = "<!-- status_examples.py: end -->"

SERVER = "https://10.0.0.5:6443"
CA_URL = "http://10.0.0.5:8888"
HEALTHZ = "127.0.0.1:10248"
PLACES = {  # where a node keeps these files by default (platform.py, examples/config.toml)
    "pki": "/var/lib/kubelet/pki",
    "etc/kubelet.conf": "/etc/kubernetes/kubelet.conf",
    "etc/ca.crt": "/etc/kubernetes/pki/ca.crt",
    "state": "/var/lib/join-agent",
    "config.toml": "/etc/join-agent/config.toml",
    "cfssl-auth-key": "/etc/join-agent/cfssl-auth-key",
}


@dataclass
class Shot:
    """One command as an operator ran it, and what it printed."""

    command: str
    code: int
    out: str


@dataclass
class Situation:
    title: str
    setup: str  # how it was made, one paragraph of Markdown
    shots: list[Shot] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)  # every status --json
    show_json: bool = False


class Lab:
    """The temporary root, the CAs, and a way to turn its paths into a node's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.replacements: list[tuple[str, str]] = []
        self.cas: list[CfsslCA] = []
        self.agents: list[Agent] = []

    def ca(self, name: str, **kwargs: Any) -> CfsslCA:
        ca = CfsslCA(self.root / name, cn="example-cluster CA", **kwargs)
        ca.start()
        self.cas.append(ca)
        self.replacements.append((ca.url, CA_URL))
        return ca

    def node(self, name: str, ca: CfsslCA, *kubelet_flags: str) -> Node:
        node = Node(root=self.root / name, ca=ca)
        node.root.mkdir()
        ca.write_auth_key(node.auth_key)
        port = free_port()
        node.write_config(
            cluster={"server": SERVER, "name": "kubernetes"},
            kubelet={
                "command": kubelet_command(
                    f"--standin-record={node.root / 'kubelet.jsonl'}",
                    f"--standin-healthz-port={port}",
                    *kubelet_flags,
                ),
                "healthz_url": f"http://127.0.0.1:{port}/healthz",
                "stable_after": "5s",  # the default is 30s: shortened to keep this quick
            },
        )
        self.replacements.append((f"127.0.0.1:{port}", HEALTHZ))
        for rel, place in PLACES.items():
            self.replacements.append((str(node.root / rel), place))
        return node

    def clean(self, text: str) -> str:
        # Longest first: a node's root is a prefix of each of its paths.
        for old, new in sorted(self.replacements, key=lambda r: -len(r[0])):
            text = text.replace(old, new)
        return text

    def status(
        self,
        node: Node,
        situation: Situation,
        accept: Callable[[int, dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Run ``status`` and ``status --json`` (again, until ``accept`` likes what they
        say and they agree); record the text, the JSON when shown, and the JSON's keys."""
        for _ in range(50):
            text = node.run("status")
            doc = node.run("status", "--json")
            parsed: dict[str, Any] = json.loads(self.clean(doc.stdout))
            if text.returncode == doc.returncode and (
                accept is None or accept(doc.returncode, parsed)
            ):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"no acceptable status: {text} / {doc}")
        situation.shots.append(Shot("join-agent status", text.returncode, self.clean(text.stdout)))
        if situation.show_json:
            situation.shots.append(
                Shot("join-agent status --json", doc.returncode, self.clean(doc.stdout))
            )
        situation.documents.append(parsed)
        return parsed

    def run(self, node: Node, situation: Situation, *args: str) -> Shot:
        r = node.run(*args)
        shot = Shot("join-agent " + " ".join(args), r.returncode, self.clean(r.stdout + r.stderr))
        situation.shots.append(shot)
        return shot


class Agent:
    """One ``join-agent run`` process, stopped on exit."""

    def __init__(self, node: Node) -> None:
        self.node = node
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        self.log = (node.root / "agent.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "join_agent", "--config", str(node.config), "run"],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )

    def record(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.node.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def wait(self, what: str, cond: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.record()
            if doc and cond(doc):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"join-agent run exited waiting for {what}:\n{self.logs()}")
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}:\n{self.logs()}")

    def logs(self) -> str:
        return (self.node.root / "agent.log").read_text()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        # A kubelet the agent could not stop is ours too: the stand-in records its pid.
        record = self.node.root / "kubelet.jsonl"
        lines = record.read_text().splitlines() if record.exists() else []
        for line in lines:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(json.loads(line)["pid"]), signal.SIGKILL)


@contextlib.contextmanager
def daemon(node: Node) -> Iterator[Agent]:
    agent = Agent(node)
    try:
        yield agent
    finally:
        agent.stop()


def running(doc: dict[str, Any]) -> bool:
    return bool(doc["agent"]["state"] == "running" and doc["kubelet"].get("state") == "running")


# --- the situations -----------------------------------------------------------------------


def not_joined(lab: Lab, ca: CfsslCA) -> Situation:
    s = Situation(
        "Not joined",
        "A fresh node: a config file, no `join` yet, no daemon.",
    )
    lab.status(lab.node("not-joined", ca), s)
    return s


def joined_no_daemon(lab: Lab, ca: CfsslCA) -> Situation:
    s = Situation(
        "Joined, but the daemon is not running",
        "`join-agent join` enrolled the node (a one-year certificate); `join-agent run` "
        "was never started, so nothing will renew the certificate. The credentials are "
        "valid, so the state is `valid`, but the node is degraded. With no daemon "
        "running, `status` reads and parses the files itself (`source: files`).",
    )
    node = lab.node("joined", ca)
    lab.run(node, s, "join")
    lab.status(node, s)
    return s


def healthy(lab: Lab, ca: CfsslCA) -> tuple[Situation, dict[str, Any]]:
    s = Situation(
        "Daemon running, kubelet running and healthy",
        "`join-agent run` enrolled the node, started the (stand-in) kubelet and has "
        "reported it `running` (a run of `stable_after` without exiting); the kubelet "
        "answers `/healthz`. The files are the ones the daemon recorded, so `status` "
        "answers from `status.json` without parsing a certificate (`source: daemon`).",
        show_json=True,
    )
    node = lab.node("healthy", ca)
    with daemon(node) as agent:
        agent.wait("a running kubelet", running, 60)
        lab.status(node, s)
        recorded = json.loads(lab.clean(json.dumps(agent.record())))
    return s, recorded


def ca_down(lab: Lab, ca: CfsslCA) -> Situation:
    s = Situation(
        "The CA is down during a renewal",
        "A healthy node as above; then the CFSSL server is stopped and a renewal is "
        "asked for with `join-agent renew` (the same happens when the renewal deadline "
        "comes during an outage). The renewal fails, the daemon retries with backoff "
        "(`renewal.next_attempt` in the JSON), the kubelet keeps running, and `status` "
        "says degraded with the error until a renewal succeeds.",
    )
    node = lab.node("ca-down", ca)
    with daemon(node) as agent:
        agent.wait("a running kubelet", running, 60)
        port = ca.port
        ca.stop()
        try:
            lab.run(node, s, "renew")
            lab.status(node, s)
        finally:
            ca.start(port=port)
    return s


def crash_loop(lab: Lab, ca: CfsslCA) -> Situation:
    s = Situation(
        "The kubelet is crash-looping",
        "The stand-in kubelet exits 0.2 s after each start (`--standin-exit-after=0.2`). "
        "The daemon restarts it with a growing, jittered backoff (`[kubelet] restart_min` "
        "1 s to `restart_max` 1 min); captured while it waits in `backoff`.",
    )
    node = lab.node("crash-loop", ca, "--standin-exit-after=0.2")
    with daemon(node) as agent:
        agent.wait(
            "three restarts, in backoff",
            lambda d: (
                d["kubelet"].get("state") == "backoff" and (d["kubelet"].get("restarts") or 0) >= 3
            ),
            60,
        )
        # The kubelet spends 0.2 s of each cycle "starting": capture a moment in backoff.
        lab.status(node, s, lambda _code, d: d["kubelet"]["state"] == "backoff")
    return s


def mismatched(lab: Lab, ca: CfsslCA) -> Situation:
    s = Situation(
        "Key and certificate do not match",
        "A joined node (no daemon) whose private key in `kubelet-client-current.pem` was "
        "replaced by another key of the same kind.",
    )
    node = lab.node("mismatched", ca)
    lab.run(node, s, "join")
    s.shots.clear()  # the join is as in "Joined, but the daemon is not running"
    replace_key(node.current.resolve())
    lab.status(node, s)
    return s


def replace_key(pem_file: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    text = pem_file.read_text()
    block = re.search(
        r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", text, re.S
    )
    if block is None:
        raise RuntimeError(f"no private key in {pem_file}")
    old = serialization.load_pem_private_key(block.group(0).encode(), password=None)
    new: Any = (
        ec.generate_private_key(old.curve)
        if isinstance(old, ec.EllipticCurvePrivateKey)
        else rsa.generate_private_key(65537, old.key_size)  # type: ignore[union-attr]
    )
    fmt = (
        serialization.PrivateFormat.PKCS8
        if block.group(1) == ""
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    pem = new.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    pem_file.write_text(text.replace(block.group(0), pem.decode().strip()))


def expired_join(lab: Lab, short: CfsslCA) -> tuple[Node, float]:
    """Join against a CA that issues 60 s certificates; returns the node and not_after."""
    node = lab.node("expired", short)
    r = node.run("join")
    if r.returncode != 0:
        raise RuntimeError(f"join failed: {r.stderr}")
    doc = json.loads(node.run("status", "--json").stdout)
    not_after = doc["certificate"]["not_after"]
    return node, calendar.timegm(time.strptime(not_after, "%Y-%m-%dT%H:%M:%SZ"))


def expired(lab: Lab, node: Node, not_after: float) -> Situation:
    s = Situation(
        "The certificate has expired",
        "`join-agent join` against a CA whose profile issues 60-second certificates "
        '(`{"expiry": "60s", "backdate": "30s"}`), and no daemon to renew them: a node '
        "that was switched off past its certificate's lifetime looks the same.",
    )
    time.sleep(max(0.0, not_after - time.time() + 2))
    lab.status(node, s)
    return s


# --- output -----------------------------------------------------------------------------

HEALTH = {0: "healthy", 1: "degraded", 2: "broken"}


def render(situations: list[Situation], recorded: dict[str, Any]) -> str:
    out = [
        "Captured by `docs/status_examples.py` on "
        f"{time.strftime('%Y-%m-%d', time.gmtime())} with join-agent "
        f"{_version()}. Paths, ports and the CA's URL are rewritten to a node's usual ones; "
        "times, pids and serials are those of that run.\n",
    ]
    for n, s in enumerate(situations, 1):
        out.append(f"### {n}. {s.title}\n\n{s.setup}\n")
        for shot in s.shots:
            lang = "json" if shot.command.endswith("--json") else "console"
            body = shot.out.rstrip("\n")
            if lang == "json":
                out.append(
                    f"`$ {shot.command}` — exit status {shot.code}\n\n```json\n{body}\n```\n"
                )
            else:
                health = (
                    f" ({HEALTH[shot.code]})"
                    if shot.command.startswith("join-agent status")
                    else ""
                )
                out.append(
                    f"```console\n$ {shot.command}\n{body}\n```\n\nExit status: "
                    f"**{shot.code}**{health}\n"
                )
    out.append(_key_table(situations))
    out.append(
        "### `status.json` as the daemon wrote it (situation 3)\n\n"
        f"```json\n{json.dumps(recorded, indent=2, sort_keys=True)}\n```\n"
    )
    return "\n".join(out)


def _version() -> str:
    from join_agent import __version__

    return __version__


def _paths(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every key of a status document as a dotted path (lists: ``[]``), with its value."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            path = f"{prefix}.{k}" if prefix else k
            yield path, v
            yield from _paths(v, path)
    elif isinstance(doc, list):
        for v in doc:
            if isinstance(v, (dict, list)):
                yield from _paths(v, prefix + "[]")


def _type(v: Any) -> str:
    return {
        dict: "object", list: "array", str: "string", int: "integer", bool: "boolean",
        float: "number", type(None): "null",
    }[type(v)]  # fmt: skip


def _key_table(situations: list[Situation]) -> str:
    """Which keys each situation's ``status --json`` had, and of what type."""
    seen: dict[str, dict[int, set[str]]] = {}
    for n, s in enumerate(situations, 1):
        for doc in s.documents:
            for path, value in _paths(doc):
                seen.setdefault(path, {}).setdefault(n, set()).add(_type(value))
    cols = range(1, len(situations) + 1)
    lines = [
        "### Keys seen in the `--json` output of each situation\n",
        "Derived from the documents above (all situations, not only the one shown): the "
        "JSON type of each key in situations 1 to "
        f"{len(situations)}; `—` means the key was absent.\n",
        "| key | " + " | ".join(str(n) for n in cols) + " |",
        "|---|" + "---|" * len(situations),
    ]
    for path in sorted(seen, key=_order):
        cells = ["/".join(sorted(seen[path][n])) if n in seen[path] else "—" for n in cols]
        lines.append(f"| `{path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TOP = (
    "schema", "checked_at", "state", "health", "source", "node", "certificate", "kubeconfig",
    "ca_file", "ca", "agent", "signer", "renewal", "last_error", "kubelet", "problems",
)  # fmt: skip


def _order(path: str) -> tuple[int, str]:
    head = re.split(r"[.\[]", path, maxsplit=1)[0]
    return (TOP.index(head) if head in TOP else len(TOP), path)


def write_doc(section: str) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n\n" + section.strip() + "\n\n" + text[end:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"replace the section in {DOC}")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="join-agent-status-") as tmp:
        lab = Lab(Path(tmp))
        try:
            ca = lab.ca("ca")
            short = lab.ca("short-ca", expiry="60s", backdate="30s")
            # Joined first, so its minute runs out while the other situations are made.
            expiring, not_after = expired_join(lab, short)
            short.stop()
            situations = [not_joined(lab, ca), joined_no_daemon(lab, ca)]
            shot, recorded = healthy(lab, ca)
            situations += [shot, ca_down(lab, ca), crash_loop(lab, ca)]
            situations += [expired(lab, expiring, not_after), mismatched(lab, ca)]
        finally:
            for c in lab.cas:
                c.stop()
    section = render(situations, recorded)
    if args.write:
        write_doc(section)
    else:
        sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
