"""``join-agent check``: preflight, one line per check, exit 0 when none fails.

Each check is a function that returns Results; the ones that judge (clock, kernel) are
pure over what was read, and the runner does the reading.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from join_agent.config.model import Config
from join_agent.core.durations import format_duration
from join_agent.errors import JoinAgentError
from join_agent.verbs import check_node
from join_agent.verbs.check_result import Level, Result

__all__ = ["Level", "Result", "run"]


def clock(name: str, date_header: str | None, now: dt.datetime, skew: dt.timedelta) -> Result:
    """Compare our clock with a peer's HTTP Date (second resolution) (pure)."""
    if not date_header:
        return Result("WARN", name, "the CA sent no Date header, so the clock cannot be compared")
    try:
        theirs = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return Result("WARN", name, f"the CA sent an unreadable Date header {date_header[:40]!r}")
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=dt.timezone.utc)
    offset = now - theirs
    size = format_duration(abs(offset))
    direction = "ahead of" if offset.total_seconds() > 0 else "behind"
    if abs(offset) > skew:
        return Result(
            "FAIL",
            name,
            f"this node's clock is {size} {direction} the CA's (tolerance "
            f"{format_duration(skew)}): certificates will look not yet valid or expired; "
            "fix the time (NTP)",
        )
    return Result(
        "PASS", name, f"within {size} of the CA's clock (tolerance {format_duration(skew)})"
    )


def kernel(read: Callable[[str], str | None]) -> list[Result]:
    """What the kubelet and most CNIs need from a Linux kernel, as kubeadm checks it (pure
    over ``read``, which returns a /proc or /sys file's text or None)."""
    out = []
    swaps = read("/proc/swaps")
    active = [line for line in (swaps or "").splitlines()[1:] if line.strip()]
    if swaps is None:
        out.append(Result("WARN", "swap", "cannot read /proc/swaps"))
    elif active:
        out.append(
            Result(
                "FAIL",
                "swap",
                f"{len(active)} swap area(s) active: the kubelet refuses to start with swap "
                "on by default; run `swapoff -a` and remove them from /etc/fstab",
            )
        )
    else:
        out.append(Result("PASS", "swap", "off"))
    forward = (read("/proc/sys/net/ipv4/ip_forward") or "").strip()
    if forward == "1":
        out.append(Result("PASS", "ip_forward", "net.ipv4.ip_forward = 1"))
    else:
        out.append(
            Result(
                "FAIL",
                "ip_forward",
                f"net.ipv4.ip_forward = {forward or '?'}: pods cannot be routed; set it to 1 "
                "(sysctl -w net.ipv4.ip_forward=1, and in /etc/sysctl.d/)",
            )
        )
    bridge = (read("/proc/sys/net/bridge/bridge-nf-call-iptables") or "").strip()
    if bridge == "1":
        out.append(Result("PASS", "br_netfilter", "bridge-nf-call-iptables = 1"))
    elif bridge == "":
        out.append(
            Result(
                "FAIL",
                "br_netfilter",
                "the br_netfilter module is not loaded: `modprobe br_netfilter` and list it "
                "in /etc/modules-load.d/",
            )
        )
    else:
        out.append(
            Result(
                "FAIL",
                "br_netfilter",
                f"net.bridge.bridge-nf-call-iptables = {bridge}: set it to 1",
            )
        )
    return out


def run(
    config_path: Path, environ: Mapping[str, str], now: Callable[[], dt.datetime]
) -> list[Result]:
    """Every check, in order; a config that does not load stops the rest."""
    from join_agent.config import loading

    try:
        cfg = loading.load(config_path)
    except JoinAgentError as e:
        return [Result("FAIL", "config", str(e))]
    results = [Result("PASS", "config", f"{config_path} is valid")]
    results += _trust(cfg)
    results += _secrets(cfg, environ)
    results += _ca(cfg, now) if cfg.signer_kind == "cfssl" else _cluster(cfg, environ, now)
    results += _apiserver(cfg)
    if sys.platform.startswith("linux"):
        results += kernel(_read_text)
    else:
        results.append(Result("SKIP", "kernel", f"no kernel checks for {sys.platform} yet"))
    results += _kubelet(cfg)
    results += check_node.identity(cfg)
    results += check_node.made_here(cfg)
    if cfg.signer_kind == "kubernetes":
        results += check_node.registered(cfg, environ)
    return results


def _trust(cfg: Config) -> list[Result]:
    """guard's rule over what this config has root trust and run (preflight.problems)."""
    from join_agent.host import preflight

    found = preflight.problems(cfg)
    if found:
        return [Result("FAIL", "trust", p) for p in found]
    return [
        Result(
            "PASS",
            "trust",
            "the node's directories and what runs as root are writable by root alone",
        )
    ]


def _secrets(cfg: Config, environ: Mapping[str, str]) -> list[Result]:
    from join_agent.signers import credentials

    if cfg.signer_kind == "kubernetes":
        return _token(cfg, environ)
    try:
        credentials.cfssl_auth_key(cfg.cfssl.auth_key_file, environ)
    except JoinAgentError as e:
        return [Result("FAIL", "auth key", str(e))]
    path = credentials.secret_path(credentials.CFSSL_AUTH_KEY, cfg.cfssl.auth_key_file, environ)
    return [Result("PASS", "auth key", f"{path}: readable by its owner only, a hex key")]


def _token(cfg: Config, environ: Mapping[str, str]) -> list[Result]:
    from join_agent.signers import credentials

    k = cfg.kubernetes
    path = credentials.secret_path(credentials.BOOTSTRAP_TOKEN, k.bootstrap_token_file, environ)
    if not path.exists():
        return [
            Result(
                "WARN",
                "bootstrap token",
                f"{path} does not exist: fine while the node's certificate is valid, but "
                "joining (or rejoining after it expired) needs one (`kubeadm token create`)",
            )
        ]
    try:
        token = credentials.bootstrap_token(k.bootstrap_token_file, environ)
    except JoinAgentError as e:
        return [Result("FAIL", "bootstrap token", str(e))]
    return [Result("PASS", "bootstrap token", f"{path}: owner-only, token id {token.id!r}")]


def _cluster(
    cfg: Config, environ: Mapping[str, str], now: Callable[[], dt.datetime]
) -> list[Result]:
    """Discovery as a join would do it (JWS, pin, verified second read), asking for nothing,
    and the clock against the API server's."""
    from join_agent.net import transport
    from join_agent.signers import credentials
    from join_agent.signers.kubernetes import discovery

    k = cfg.kubernetes
    limits = transport.Limits(deadline=10.0)
    name = "discovery " + ("file" if k.discovery_file else "token")
    try:
        if k.discovery_file:
            found = discovery.file_discovery(
                k.discovery_file, k.ca_pins or None, limits, now=now(),
                clock_skew=cfg.renewal.clock_skew,
            )  # fmt: skip
        else:
            token = credentials.bootstrap_token(k.bootstrap_token_file, environ)
            found = discovery.token_discovery(
                cfg.cluster.server, token, k.ca_pins, limits, now=now(),
                clock_skew=cfg.renewal.clock_skew, token_origin=str(k.bootstrap_token_file),
            )  # fmt: skip
    except JoinAgentError as e:
        return [Result("FAIL", name, str(e))]
    server = cfg.cluster.server or found.server
    out = [
        Result(
            "PASS",
            name,
            f"{found.source}: CA {found.cas[0].subject.rfc4514_string()} "
            + ("matches a pin" if k.ca_pins else "(no pin: trusted as the file's)"),
        )
    ]
    try:
        with transport.make_client(
            verify=discovery.trust_context(found.cas), limits=limits
        ) as client:
            probe = transport.get(
                client,
                server + discovery.CLUSTER_INFO_PATH,
                limits,
                what=f"the API server {server}",
            )
    except JoinAgentError as e:
        return [*out, Result("WARN", f"clock vs {server}", str(e))]
    out.append(
        clock(f"clock vs {server}", probe.headers.get("date"), now(), cfg.renewal.clock_skew)
    )
    return out


def _ca(cfg: Config, now: Callable[[], dt.datetime]) -> list[Result]:
    from join_agent.net import transport
    from join_agent.pki import pinning
    from join_agent.signers.cfssl import fetch_info
    from join_agent.storage import trust

    if cfg.signer_kind != "cfssl":
        return [Result("SKIP", "CA", f"signer.kind = {cfg.signer_kind!r}")]
    pins = trust.effective_pins(
        cfg.cfssl.ca_pins, cfg.cfssl.insecure_skip_ca_pin, cfg.paths.state_dir
    )
    limits = transport.Limits(deadline=10.0)
    out: list[Result] = []
    with transport.client_for(cfg.cfssl.urls, limits) as client:
        for url in cfg.cfssl.urls:
            name = f"CA {url}"
            try:
                bundle = fetch_info(client, url, limits, cfg.cfssl.profile, cfg.cfssl.label)
                path = pinning.trusted_path(
                    bundle[0], bundle, pins, now=now(), clock_skew=cfg.renewal.clock_skew
                )
            except JoinAgentError as e:
                out.append(Result("FAIL", name, str(e)))
                continue
            pinned = "no pin (trust on first use)" if pins is None else "matches a pin"
            out.append(
                Result("PASS", name, f"answers; {path[-1].subject.rfc4514_string()} {pinned}")
            )
            try:
                probe = transport.get(client, url + INFO_PATH, limits, what=f"the CA at {url}")
                out.append(
                    clock(
                        f"clock vs {url}", probe.headers.get("date"), now(), cfg.renewal.clock_skew
                    )
                )
                newcert = transport.get(client, url + NEWCERT_PATH, limits, what=f"the CA at {url}")
            except JoinAgentError as e:
                out.append(Result("WARN", f"clock vs {url}", str(e)))
                continue
            out.append(_newcert(url, newcert.status))
    return out


INFO_PATH = "/api/v1/cfssl/info"
NEWCERT_PATH = "/api/v1/cfssl/newcert"


def _newcert(url: str, status: int) -> Result:
    # A GET asks for nothing: a 405 says the endpoint is there, and CFSSL's /newcert
    # signs any request without checking an auth key (cloudflare/cfssl#250, #788).
    name = f"/newcert at {url}"
    if status == 405:
        return Result(
            "WARN",
            name,
            "reachable from this node, and CFSSL's /newcert issues any certificate without "
            "an auth key (O=system:masters included): expose only /info and /authsign to "
            "nodes (firewall or reverse proxy)",
        )
    return Result("PASS", name, f"not reachable from this node (HTTP {status})")


def _apiserver(cfg: Config) -> list[Result]:
    """A TLS handshake with the API server, verified with the CA the kubeconfig will embed."""
    name = f"API server {cfg.cluster.server}"
    if not cfg.cluster.server:
        return [Result("SKIP", "API server", "the discovery file names it")]
    bundle = cfg.cluster.ca_bundle or cfg.paths.ca_file
    if not bundle.exists():
        return [
            Result("SKIP", name, f"no CA to verify it with yet ({bundle}): run `join-agent join`")
        ]
    parts = urlsplit(cfg.cluster.server)
    host, port = parts.hostname or "", parts.port or 443
    try:
        context = ssl.create_default_context(cafile=str(bundle))
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as e:
        return [
            Result(
                "FAIL", name, f"its certificate does not verify with {bundle}: {e.verify_message}"
            )
        ]
    except (OSError, ssl.SSLError) as e:
        return [Result("FAIL", name, f"no TLS connection: {e.strerror or e}")]
    return [Result("PASS", name, f"TLS verified with {bundle}")]


def _kubelet(cfg: Config) -> list[Result]:
    from join_agent.kubelet import settings

    if not cfg.kubelet.manage:
        return [Result("SKIP", "kubelet", "not managed ([kubelet] manage = false)")]
    problems = settings.conflicts(
        list(cfg.kubelet.command),
        read_file=settings.read_text,
        unit_active=settings.systemd_unit_active,
    )
    if problems:
        return [Result("FAIL", "kubelet", p) for p in problems]
    return [Result("PASS", "kubelet", "nothing would fight join-agent for its certificates")]


def _read_text(path: str) -> str | None:
    from join_agent.kubelet import settings

    return settings.read_text(Path(path))
