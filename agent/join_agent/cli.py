"""Command line: verbs, exit codes, errors as one sentence. No logic lives here."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import JoinAgentError

if TYPE_CHECKING:
    from .config import Config


def _common(defaults: bool) -> argparse.ArgumentParser:
    # The same options before and after the verb; after it, they must not reset what was
    # given before it, so the verbs' copies default to "absent".
    common = argparse.ArgumentParser(add_help=False)
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


def _parser() -> argparse.ArgumentParser:
    common = _common(defaults=False)
    p = argparse.ArgumentParser(
        prog="join-agent",
        description="Join this node to a Kubernetes cluster and keep its credentials valid.",
        parents=[_common(defaults=True)],
    )
    p.add_argument("--version", action="version", version=f"join-agent {__version__}")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser(
        "join",
        parents=[common],
        help="enroll once now: write key, certificate, CA and kubeconfig, then exit",
    )
    st = verbs.add_parser(
        "status", parents=[common], help="show the node's credentials (exit 0 valid, 2 not)"
    )
    st.add_argument("--json", action="store_true", help="machine-readable output (stable keys)")
    pn = verbs.add_parser(
        "pin", parents=[common], help="print the sha256:<hex> SPKI pin of a CA certificate"
    )
    pn.add_argument(
        "source",
        metavar="FILE_OR_URL",
        help="a PEM/DER certificate, a kubeconfig, or a CFSSL server URL (http[s]://host:port)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import log

    log.setup(debug=args.debug, quiet=args.verb != "run")
    try:
        return _VERBS[args.verb](args)
    except JoinAgentError as e:
        return _fail(str(e), args.debug, e.exit_code)
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        return _fail(f"cannot access{where}: {e.strerror or e}", args.debug)
    except Exception as e:  # noqa: BLE001 - last resort: a sentence, never a traceback
        return _fail(
            f"unexpected error ({type(e).__name__}: {log.scrub(str(e))[:200]}); please report it",
            args.debug,
        )


def _fail(message: str, debug: bool, code: int = 1) -> int:
    """Print the one sentence; the traceback goes to the log only with --debug."""
    from . import log

    if debug:
        log.get_logger("join_agent").exception("failed")
    print(f"join-agent: {message}", file=sys.stderr)
    return code


def _config(args: argparse.Namespace) -> Config:
    from . import config

    return config.load(config.config_path(args.config, os.environ))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _join(args: argparse.Namespace) -> int:
    from . import enroll, identity, signers, store, transport

    cfg = _config(args)
    node = identity.resolve(cfg.node)
    https = any(u.startswith("https:") for u in cfg.cfssl.urls)
    limits = transport.Limits()
    with transport.make_client(
        verify=transport.system_trust() if https else False, limits=limits
    ) as client:
        setup = signers.build(cfg, os.environ, client, limits)
        with store.state_lock(cfg.paths.state_dir):
            enroll.client_store(cfg).recover()
            done = enroll.enroll(
                cfg, setup.signer, node, now=_now, record_tofu_pin=setup.record_tofu_pin
            )
    from . import compat, pki

    print(f"joined as system:node:{node.name} ({', '.join(pki.hosts_for(node))})")
    until = compat.not_valid_after(done.certificate)
    print(f"certificate: {done.version}, valid until {until:%Y-%m-%d %H:%M:%S}Z")
    print(f"kubeconfig:  {cfg.paths.kubeconfig}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from . import enroll, status

    cfg = _config(args)
    report = status.assess(
        status.snapshot(cfg, enroll.client_store(cfg).current),
        server=cfg.cluster.server,
        now=_now(),
    )
    sys.stdout.write(status.render_json(report) if args.json else status.render_text(report))
    return report.exit_code


def _pin(args: argparse.Namespace) -> int:
    from . import pin

    source: str = args.source
    if source.startswith(("http://", "https://")):
        certs = pin.certificates_from_cfssl(source)
        print(
            f"join-agent: this pin came over the network from {source}: compare it with the "
            "pin taken from the CA's own ca.pem before you trust it",
            file=sys.stderr,
        )
    else:
        certs = pin.certificates_from_file(Path(source))
    sys.stdout.write(pin.render(certs))
    return 0


_VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "join": _join,
    "status": _status,
    "pin": _pin,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
