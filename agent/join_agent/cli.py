"""Command line: verbs, exit codes, errors as one sentence. No logic lives here."""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys

from join_agent import TYPE_CHECKING
from join_agent.errors import JoinAgentError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence

    from join_agent.config.model import Config


# `status` exits 0/1/2 for healthy/degraded/broken (status.EXIT_*); when it cannot judge
# at all (no config, an unexpected error), 3: what a script must tell apart from
# "degraded", and what monitoring plugins call UNKNOWN.
STATUS_UNKNOWN = 3


def script() -> int:
    """``join-agent`` as a process of its own (the console script, ``python -m join_agent``):
    ``main()`` without the cyclic garbage collector. A verb that runs once and exits leaves
    nothing for it to find, and it would run many times over the modules being imported
    and once more over all of them at exit: ≈30 ms of a ``join``, 3 ms of a ``status``
    (docs/benchmarks.md). ``run``, ``wait`` and ``worker`` (whose pass may wait minutes for
    an approval), which stay, turn it back on."""
    gc.disable()
    try:
        return main()
    finally:
        gc.freeze()  # the interpreter's last collections then pass over what was loaded


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    # Whatever umask we were started under, nothing we (or the kubelet, an action) create
    # is writable by group or others unless a mode says so explicitly.
    os.umask(0o022)
    quick = _quick_status(words)
    if quick is not None:
        return quick
    from join_agent import log, usage

    args = usage.parser(usage.verb_of(words)).parse_args(words)
    if args.verb == "run":
        log.defer_asyncio()  # the resident daemon never uses it (before structlog loads)
    # The daemon and its worker children log what they do; the other verbs report on
    # standard output and log warnings only.
    log.setup(debug=args.debug, quiet=args.verb not in ("run", "worker"))
    failed = STATUS_UNKNOWN if args.verb == "status" else 1
    nagios = bool(getattr(args, "nagios", False))
    try:
        return _VERBS[args.verb](args)
    except JoinAgentError as e:
        code = failed if failed != 1 else exit_code(args.verb, e, os.environ)
        return _fail(str(e), args.debug, code, nagios=nagios)
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        return _fail(f"cannot access{where}: {e.strerror or e}", args.debug, failed, nagios=nagios)
    except Exception as e:  # noqa: BLE001 - last resort: a sentence, never a traceback
        return _fail(
            f"unexpected error ({type(e).__name__}: {log.scrub(str(e))[:200]}); please report it",
            args.debug,
            failed,
            nagios=nagios,
        )


def exit_code(verb: str, e: JoinAgentError, environ: Mapping[str, str]) -> int:
    """The exit status for ``e`` (pure). ``run`` under SMF (svc.startd sets SMF_FMRI for
    the method it execs us from) says "configuration error" for what no restart can fix:
    the config, or a path the trust rule refuses. Under systemd there is no such status:
    the unit restarts every RestartSec, which picks up a config or credential that
    provisioning writes late (docs/install.md)."""
    from join_agent.errors import ConfigError
    from join_agent.storage.guard import UnsafePath

    if verb == "run" and environ.get("SMF_FMRI") and isinstance(e, ConfigError | UnsafePath):
        from join_agent.host import platform

        return platform.SMF_EXIT_ERR_CONFIG
    return e.exit_code


def _quick_status(words: Sequence[str]) -> int | None:
    """``status`` answered from the running daemon's record (verbs/status_fast.py), before
    argparse and the config are loaded; None when it cannot be: then the usual path runs."""
    from join_agent.verbs import status_fast

    form = status_fast.form_of(words)
    if form is None:
        return None
    try:
        answer = status_fast.attempt(form, os.environ, _now())
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - whatever it met, the usual path meets and reports
        return None
    if answer is None:
        return None
    text, code = answer
    sys.stdout.write(text)
    return code


def _fail(message: str, debug: bool, code: int = 1, *, nagios: bool = False) -> int:
    """Print the one sentence; the traceback goes to the log only with --debug. A
    monitoring plugin's UNKNOWN goes to standard output too, where its caller reads."""
    from join_agent import log

    if nagios:
        from join_agent.verbs import status_text

        sys.stdout.write(status_text.nagios_unknown(message))
    if debug:
        log.get_logger("join_agent").exception("failed")
    # Under systemd (ExecStart=, ExecReload=) stderr is journald's stream: the "<3>" files
    # the sentence at priority err, where `journalctl -p err` looks.
    priority = "<3>" if log.to_journal(sys.stderr, os.environ) else ""
    print(f"{priority}join-agent: {message}", file=sys.stderr)
    return code


def _config(args: argparse.Namespace) -> Config:
    from join_agent.config import loading

    return loading.load(loading.config_path(args.config, os.environ))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _join(args: argparse.Namespace) -> int:
    from join_agent.config import loading
    from join_agent.pki import compat, keys
    from join_agent.signers import credentials
    from join_agent.worker import passes

    overrides: dict[str, object] = {}
    if args.server:
        overrides.update({"cluster.server": args.server, "signer.kind": "kubernetes"})
    if args.ca_pin:
        overrides.update({"signer.kubernetes.ca_pins": args.ca_pin, "signer.kind": "kubernetes"})
    if args.discovery_file:
        overrides.update(
            {"signer.kubernetes.discovery_file": args.discovery_file, "signer.kind": "kubernetes"}
        )
    token = None
    if args.token_file:
        overrides["signer.kind"] = "kubernetes"
        token = credentials.bootstrap_token_from(args.token_file, sys.stdin)
    path = loading.config_path(args.config, os.environ)
    # Flags alone may describe the join, but a config file that was asked for must exist.
    cfg = loading.load(path, overrides, missing_ok=bool(overrides) and args.config is None)
    origin = "--token-file" if args.token_file else ""
    done = passes.enroll_once(cfg, os.environ, token=token, token_origin=origin)
    until = compat.not_valid_after(done.certificate)
    names = ", ".join(keys.hosts_for(done.identity)) or "no SANs: a Kubernetes client certificate"
    print(f"joined as system:node:{done.identity.name} ({names})")
    print(f"certificate: {done.version}, valid until {until:%Y-%m-%d %H:%M:%S}Z")
    print(f"kubeconfig:  {cfg.paths.kubeconfig}")
    for c in passes.certificates_once(cfg, os.environ) if cfg.certificates else []:
        print(f"certificate {c['name']}: {c['state']}, until {c.get('not_after')}")
    if cfg.signer_kind == "kubernetes" and cfg.kubernetes.serving:
        served = passes.serving_once(cfg, os.environ)
        print(f"serving:     {served['state']}: {served.get('message') or served.get('not_after')}")
    return 0


def _run(args: argparse.Namespace) -> int:
    gc.enable()  # the daemon lives on (see script)
    from join_agent.daemon import startup

    return startup.main(_config(args), os.environ)


def _renew(args: argparse.Namespace) -> int:
    from join_agent.verbs import renew

    cfg = _config(args)
    ok, message = renew.renew(cfg, os.environ)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _reload(args: argparse.Namespace) -> int:
    from join_agent.config import loading
    from join_agent.verbs import reload

    ok, message = reload.reload(loading.config_path(args.config, os.environ), args.pid)
    if not ok:
        return _fail(message, args.debug)
    print(message)
    return 0


def _wait(args: argparse.Namespace) -> int:
    import time

    from join_agent.core.durations import parse_duration
    from join_agent.verbs import status, wait

    gc.enable()  # it polls for as long as it takes (see script)
    timeout = None
    if args.timeout is not None:
        try:
            timeout = parse_duration(args.timeout)
        except ValueError as e:
            raise JoinAgentError(f"--timeout {e}") from None
    cfg = _config(args)

    def look() -> wait.Look:
        report = status.gather(cfg, _now(), probe=False)
        cert = report.doc["certificate"]  # judge() always fills it
        problem = report.problems[0] if report.problems else ""
        return wait.look_at(report.state, cert.get("node"), cert.get("not_after"), problem)

    joined, message = wait.until_joined(
        look, timeout=timeout, monotonic=time.monotonic, sleep=time.sleep
    )
    if not joined:
        return _fail(message, args.debug)
    print(message)
    return 0


def _reset(args: argparse.Namespace) -> int:
    from join_agent.verbs import reset

    cfg = _config(args)
    if not (args.force or args.for_image):
        if not sys.stdin.isatty():
            return _fail(
                "reset removes this node's credentials and kubeconfig: rerun with --force "
                "to confirm",
                args.debug,
            )
        answer = input(f"Remove the credentials, kubeconfig and CA file of {cfg.source}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 1
    for line in reset.reset(cfg, for_image=args.for_image):
        print(line)
    if args.for_image:
        print(reset.IMAGE_REMINDER)
    return 0


def _check(args: argparse.Namespace) -> int:
    from join_agent.config import loading
    from join_agent.verbs import check

    results = check.run(loading.config_path(args.config, os.environ), os.environ, _now)
    for r in results:
        print(r.line())
    return 1 if any(r.level == "FAIL" for r in results) else 0


def _worker(args: argparse.Namespace) -> int:
    import json

    from join_agent import log

    gc.enable()  # a pass may wait on a watch for many minutes (see script)
    log.tag(worker=args.mode, pid=os.getpid())  # its lines are in the daemon's stream

    if args.mode == "kubelet":  # the kubelet's settings only: no cryptography, no httpx
        from join_agent.kubelet import settings

        sys.stdout.write(json.dumps(settings.facts(_config(args)), sort_keys=True) + "\n")
        return 0
    from join_agent.worker import passes

    sys.stdout.write(passes.dumps(passes.run(_config(args), args.mode, os.environ)))
    return 0


def _status(args: argparse.Namespace) -> int:
    from join_agent.verbs import status, status_text

    report = status.gather(_config(args), _now())
    if args.nagios:
        sys.stdout.write(status_text.render_nagios(report))
    else:
        sys.stdout.write(
            status_text.render_json(report) if args.json else status_text.render_text(report)
        )
    return report.exit_code


def _pin(args: argparse.Namespace) -> int:
    from join_agent.verbs import pin

    source: str = args.source
    if source.lower().startswith(("http://", "https://")):
        certs = pin.certificates_from_cfssl(source)
        print(
            f"join-agent: this pin came over the network from {source}: compare it with the "
            "pin taken from the CA's own ca.pem before you trust it",
            file=sys.stderr,
        )
    else:
        from pathlib import Path

        certs = pin.certificates_from_file(Path(source))
    sys.stdout.write(pin.render(certs))
    return 0


_VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "join": _join,
    "run": _run,
    "renew": _renew,
    "reload": _reload,
    "reset": _reset,
    "check": _check,
    "worker": _worker,
    "status": _status,
    "wait": _wait,
    "pin": _pin,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
