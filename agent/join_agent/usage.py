"""join-agent's command line as argparse sees it: the verbs and their options, without
abbreviations, and usage errors that never repeat a value given (it may be a secret
typed where it does not belong)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from join_agent import __version__
from join_agent.core.modes import WORKER_MODES

PUBLIC_VERBS = ("join", "run", "status", "wait", "check", "renew", "reload", "reset", "pin")
VERBS = (*PUBLIC_VERBS, "worker")
_TOKEN_LIKE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
_HEX_LIKE = re.compile(r"[0-9a-fA-F]{16,}")
_NOT_ON_ARGV_HINT = (
    "; the bootstrap token is read from a file or standard input, never from the command "
    "line, where ps and the shell history keep it: --token-file FILE, or --token-file - "
    "(if you typed the token, it is in your shell history now: replace it with "
    "`kubeadm token create` and delete the old one)"
)


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations, whose errors never repeat a value they were given
    (it may be a secret typed where it does not belong) nor name the hidden worker verb."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {safe_usage_error(message)}\n")


def safe_usage_error(message: str) -> str:
    """argparse's ``message`` with what the operator typed reduced to option names (pure)."""
    prefix = "unrecognized arguments: "
    if message.startswith(prefix):
        words = message[len(prefix) :].split(" ")
        shown = [w.split("=", 1)[0] if w.startswith("-") else "..." for w in words]
        message = prefix + " ".join(shown)
        if any(w.split("=", 1)[0] == "--token" for w in words):
            message += _NOT_ON_ARGV_HINT
    message = re.sub(r"\(choose from [^)]*\)", "", message).rstrip()
    if "argument VERB: invalid choice" in message:
        message += f" (verbs: {', '.join(PUBLIC_VERBS)})"
    return _HEX_LIKE.sub("...", _TOKEN_LIKE.sub("...", message))


def _common(defaults: bool) -> _Parser:
    # The same options before and after the verb; after it, they must not reset what was
    # given before it, so the verbs' copies default to "absent".
    common = _Parser(add_help=False)
    d = {} if defaults else {"default": argparse.SUPPRESS}
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $JOIN_AGENT_CONFIG, else /etc/join-agent/config.toml)",
        **d,  # type: ignore[arg-type]
    )
    common.add_argument(
        "--debug",
        action="store_true",
        help="log debug lines and tracebacks",
        **d,  # type: ignore[arg-type]
    )
    return common


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb ``argv`` names, when only ``--config`` and ``--debug`` come before it."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--config":
            i += 2
        elif word == "--debug" or word.startswith("--config="):
            i += 1
        else:
            return word if word in VERBS else None
    return None


def parser(verb: str | None = None) -> argparse.ArgumentParser:
    """join-agent's whole command line: the global options, then one sub-parser a verb;
    with ``verb``, that verb's sub-parser alone (what parses the same argv the same way).
    Building all of them costs a `status` more than judging the node does, mostly in
    argparse's gettext lookups, and the daemon starts a `worker` at every attempt."""
    common = _common(defaults=False)
    p = _Parser(
        prog="join-agent",
        description="Join this node to a Kubernetes cluster and keep its credentials valid.",
        parents=[_common(defaults=True)],
    )
    p.add_argument("--version", action="version", version=f"join-agent {__version__}")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)
    for name in VERBS if verb is None else (verb,):
        if name in HELP:
            description = JOIN_DESCRIPTION if name == "join" else None
            sub = verbs.add_parser(name, parents=[common], help=HELP[name], description=description)
        else:  # the worker, the daemon's short-lived child: not for people, not in --help
            sub = verbs.add_parser(name, parents=[common])
        _VERB_OPTIONS.get(name, _no_options)(sub)
    return p


def _no_options(sub: argparse.ArgumentParser) -> None:
    pass


def _status(st: argparse.ArgumentParser) -> None:
    form = st.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable output (stable keys)")
    form.add_argument(
        "--nagios",
        action="store_true",
        help="one line for monitoring plugins (Nagios, Icinga): OK/WARNING/CRITICAL/UNKNOWN, "
        "with perfdata",
    )


def _wait(wt: argparse.ArgumentParser) -> None:
    wt.add_argument(
        "--timeout",
        metavar="DURATION",
        help='give up after this long, e.g. "90s" or "10m" (default: wait for ever)',
    )


def _pin(pn: argparse.ArgumentParser) -> None:
    pn.add_argument(
        "source",
        metavar="FILE_OR_URL",
        help="a PEM/DER certificate, a kubeconfig, or a CFSSL server URL (http[s]://host:port)",
    )


def _reload(rl: argparse.ArgumentParser) -> None:
    rl.add_argument(
        "--pid", type=int, metavar="PID", help="the daemon's pid, as the service knows it"
    )


def _reset(rs: argparse.ArgumentParser) -> None:
    rs.add_argument("--force", action="store_true", help="do not ask for confirmation")
    rs.add_argument(
        "--for-image",
        action="store_true",
        help="also the [[certificate]] tables' files and the lock: leave only the package, "
        "config and secrets, to build a node image from (implies --force)",
    )


def _worker(wk: argparse.ArgumentParser) -> None:
    wk.add_argument("mode", choices=WORKER_MODES)


HELP = {
    "join": "enroll once now: write key, certificate, CA and kubeconfig, then exit",
    "status": "show the node's credentials, kubelet and daemon "
    "(exit 0 healthy, 1 degraded, 2 broken, 3 status could not run)",
    "wait": "return once this node holds valid credentials and a kubeconfig "
    "(exit 0; 1 when --timeout passes first)",
    "pin": "print the sha256:<hex> SPKI pin of a CA certificate",
    "run": "the daemon: keep the credentials renewed and the kubelet running (foreground)",
    "reload": "have the running daemon read its config again; exit 1 if it refuses it",
    "renew": "renew now: asks the running daemon, or enrolls itself when none runs",
    "check": "preflight: config, secrets, CA and pin, clock, API server TLS, kernel, kubelet",
    "reset": "remove what join wrote (credentials, kubeconfig, CA)",
}
JOIN_DESCRIPTION = (
    "Enroll once now. The flags mirror `kubeadm join` and override the config file, which "
    "may then be absent: join-agent join --server https://10.0.0.5:6443 --token-file - "
    "--ca-pin sha256:<hex> (the token on standard input)."
)


def _join(jn: argparse.ArgumentParser) -> None:
    jn.add_argument(
        "--server", metavar="URL", help="API server URL (implies signer.kind = kubernetes)"
    )
    jn.add_argument(
        "--token-file",
        metavar="FILE",
        help="bootstrap token from FILE, or - for standard input (never on the command line)",
    )
    jn.add_argument(
        "--ca-pin",
        metavar="PIN",
        action="append",
        help="sha256:<hex> pin of the cluster CA, like --discovery-token-ca-cert-hash; repeatable",
    )
    jn.add_argument(
        "--discovery-file",
        metavar="PATH_OR_URL",
        help="kubeconfig (path or https URL) naming the API server and its CA",
    )


_VERB_OPTIONS = {
    "join": _join,
    "status": _status,
    "wait": _wait,
    "pin": _pin,
    "reload": _reload,
    "reset": _reset,
    "worker": _worker,
}
