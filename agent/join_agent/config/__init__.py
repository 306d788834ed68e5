"""Typed, frozen configuration read from TOML. Every error names the key at fault."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from join_agent.core.durations import parse_duration, seconds_to_timedelta
from join_agent.errors import ConfigError
from join_agent.host import platform

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
KeyType = Literal["ecdsa-p256", "rsa-2048", "rsa-4096"]
KEY_TYPES: tuple[KeyType, ...] = ("ecdsa-p256", "rsa-2048", "rsa-4096")
CONFIG_ENV = "JOIN_AGENT_CONFIG"

DEFAULT_EXCLUDE_INTERFACES = (
    "lo*", "docker*", "cni*", "cilium*", "flannel*", "veth*", "lxc*", "kube-ipvs*",
    "cali*", "tunl*", "vxlan*", "br-*", "virbr*", "weave*",
)  # fmt: skip

PIN_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ClusterConfig:
    server: str
    name: str
    ca_bundle: Path | None


@dataclass(frozen=True)
class NodeConfig:
    name: str  # "" = the hostname, lowercased
    addresses: tuple[IPAddress, ...]  # () = discovered
    exclude_interfaces: tuple[str, ...]
    key: KeyType


@dataclass(frozen=True)
class CfsslConfig:
    urls: tuple[str, ...]
    profile: str
    label: str
    auth_key_file: Path
    ca_pins: tuple[str, ...]
    insecure_skip_ca_pin: bool


@dataclass(frozen=True)
class KubernetesSignerConfig:
    bootstrap_token_file: Path
    ca_pins: tuple[str, ...]
    discovery_file: str
    serving: bool
    csr_timeout: dt.timedelta


@dataclass(frozen=True)
class PathsConfig:
    pki_dir: Path
    kubeconfig: Path
    ca_file: Path
    state_dir: Path


@dataclass(frozen=True)
class RenewalConfig:
    retry_min: dt.timedelta
    retry_max: dt.timedelta
    splay: dt.timedelta
    clock_skew: dt.timedelta


@dataclass(frozen=True)
class KubeletConfig:
    manage: bool
    command: tuple[str, ...]
    stop_grace: dt.timedelta
    restart_min: dt.timedelta  # jittered floor of the restart backoff
    restart_max: dt.timedelta  # its cap
    stable_after: dt.timedelta  # a run this long resets the backoff
    healthz_url: str  # probed by `status`; "" = do not probe
    # Restart the kubelet after a rotation when it serves our certificate from a file
    # (kubelets before 1.31 do not reload a serving certificate by themselves).
    restart_on_serving_rotation: bool


ACTION_KINDS = ("command", "smf_restart", "smf_refresh", "systemd_reload", "signal")
USAGES = ("client auth", "server auth")


@dataclass(frozen=True)
class Action:
    """What runs once after each rotation of an extra certificate."""

    kind: str  # one of ACTION_KINDS, or "" for none
    argv: tuple[str, ...] = ()  # command: the argv; smf_*/systemd_reload: the FMRI / unit
    shell: bool = False  # command only: argv[0] is a script for /bin/sh -c
    pidfile: Path | None = None  # signal only
    signal: str = ""  # signal only: "HUP", "USR1"…
    timeout: dt.timedelta = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class CertificateSpec:
    """One ``[[certificate]]`` table: a certificate kept besides the node's own."""

    name: str
    profile: str
    common_name: str
    organization: tuple[str, ...]
    organizational_unit: tuple[str, ...]
    hosts: tuple[str, ...]  # DNS names and IP addresses, as given
    node_addresses: bool  # also the node's own addresses
    key: KeyType
    usages: tuple[str, ...]
    cert_file: Path
    key_file: Path
    ca_file: Path | None
    cert_mode: int
    key_mode: int
    owner: str  # "" = root (the agent's own user)
    group: str
    action: Action


@dataclass(frozen=True)
class Config:
    source: Path
    cluster: ClusterConfig
    node: NodeConfig
    signer_kind: Literal["cfssl", "kubernetes"]
    cfssl: CfsslConfig
    kubernetes: KubernetesSignerConfig
    paths: PathsConfig
    renewal: RenewalConfig
    kubelet: KubeletConfig
    metrics_listen: str
    certificates: tuple[CertificateSpec, ...] = ()


# A node's client certificate says CN=system:node:<name>, and X.509 allows a CN of at most
# 64 characters (RFC 5280's ub-common-name): the name itself may have 52.
NODE_CN_PREFIX = "system:node:"
MAX_CN = 64
MAX_NODE_NAME = MAX_CN - len(NODE_CN_PREFIX)
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def node_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a node's name, or None (pure). Every limit that applies: a
    DNS-1123 subdomain (Kubernetes' rule for node names: 253 characters, 63 per label)
    and the 64-character CN that carries it."""
    if not _DNS1123_SUBDOMAIN.match(name):
        return (
            "it is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
            "each label starting and ending with a letter or digit), as Kubernetes requires "
            "of a node name"
        )
    long_label = next((label for label in name.split(".") if len(label) > 63), None)
    if long_label is not None:
        return f"its label {long_label[:16]}... has {len(long_label)} characters (DNS allows 63)"
    if len(name) > 253:
        return f"it has {len(name)} characters (a DNS-1123 subdomain has at most 253)"
    if len(name) > MAX_NODE_NAME:
        return (
            f"it has {len(name)} characters: the certificate's CN {NODE_CN_PREFIX}<name> "
            f"may have at most {MAX_CN} (X.509), so a node name at most {MAX_NODE_NAME}"
        )
    return None


NOT_AN_ADDRESS = "which is not an IP address"


def address_problem(text: str) -> str | None:
    """Why ``text`` cannot be an IP SAN of this node's certificate, or None (pure)."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return NOT_AN_ADDRESS
    if isinstance(a, ipaddress.IPv6Address) and a.scope_id:
        return "a scoped address: a certificate carries no zone (%...); give the address alone"
    if a.is_link_local:
        return "a link-local address, which other hosts cannot reach without a zone"
    if a.is_unspecified or a.is_multicast:
        return "which is not the address of one host"
    return None


def config_path(flag: str | None, environ: Mapping[str, str]) -> Path:
    """--config wins, then $JOIN_AGENT_CONFIG, then the platform default."""
    # Absolute from here on: the daemon's children start in "/", not where we were started.
    if flag:
        return Path(flag).absolute()
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).absolute()
    return platform.current().config_file


def load(
    path: Path, overrides: Mapping[str, Any] | None = None, *, missing_ok: bool = False
) -> Config:
    """Read and validate the config file at ``path``.

    ``overrides`` (from command-line flags) are ``"table.sub.key": value`` pairs laid over
    the file; with ``missing_ok`` an absent file counts as empty, so that flags alone
    (``join --server … --token-file … --ca-pin …``) can describe a join.
    """
    from join_agent.errors import StoreError
    from join_agent.storage import guard

    try:
        # It decides what runs as root: root's alone (guard's rule), and of a sane size.
        raw = guard.read(path, "config file", cap=guard.CONFIG_CAP)
    except StoreError as e:
        raise ConfigError(str(e)) from None
    except FileNotFoundError:
        if missing_ok:
            return parse(with_overrides({}, overrides or {}), source=path)
        raise ConfigError(
            f"config file {path} does not exist: write one (examples: "
            f"{platform.current().examples}) "
            f"or point --config or ${CONFIG_ENV} at it"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return parse(with_overrides(doc, overrides or {}), source=path)


def with_overrides(doc: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with dotted keys set (tables created as needed); pure."""
    out: dict[str, Any] = dict(doc)
    for dotted, value in overrides.items():
        *tables, key = dotted.split(".")
        node = out
        for name in tables:
            inner = node.get(name)
            node[name] = dict(inner) if isinstance(inner, Mapping) else {}
            node = node[name]
        node[key] = value
    return out


def parse(doc: Mapping[str, Any], source: Path = Path("<config>")) -> Config:
    """Build a Config from a parsed TOML document (pure: no I/O)."""
    defaults = platform.current()
    r = _Reader(doc, source)
    r.only_tables(
        "cluster", "node", "signer", "paths", "renewal", "kubelet", "metrics", "certificate"
    )

    cluster = r.table("cluster", {"server", "name", "ca_bundle"})
    node = r.table("node", {"name", "addresses", "exclude_interfaces", "key"})
    signer = r.table("signer", {"kind", "cfssl", "kubernetes"})
    kind = r.choice(signer, "signer.kind", ("cfssl", "kubernetes"), "cfssl")
    cf = r.table("signer.cfssl", {
        "urls", "profile", "label", "auth_key_file", "ca_pins", "insecure_skip_ca_pin",
    }, parent=signer, key="cfssl")  # fmt: skip
    kb = r.table("signer.kubernetes", {
        "bootstrap_token_file", "ca_pins", "discovery_file", "serving", "csr_timeout",
    }, parent=signer, key="kubernetes")  # fmt: skip
    paths = r.table("paths", {"pki_dir", "kubeconfig", "ca_file", "state_dir"})
    discovery_file = r.discovery_source(kb, "signer.kubernetes.discovery_file")
    # With a discovery file, the file names the API server; otherwise it is required.
    from_file = kind == "kubernetes" and bool(discovery_file)
    server = r.url(cluster, "cluster.server", required=not from_file, schemes=("https",))
    renewal = r.table("renewal", {"retry_min", "retry_max", "splay", "clock_skew"})
    kubelet = r.table(
        "kubelet",
        {
            "manage",
            "command",
            "stop_grace",
            "restart_min",
            "restart_max",
            "stable_after",
            "healthz_url",
            "restart_on_serving_rotation",
        },
    )
    metrics = r.table("metrics", {"listen"})

    cfssl = CfsslConfig(
        urls=tuple(r.url_list(cf, "signer.cfssl.urls", required=(kind == "cfssl"))),
        profile=r.string(cf, "signer.cfssl.profile", "kubelet"),
        label=r.string(cf, "signer.cfssl.label", ""),
        auth_key_file=r.path(
            cf, "signer.cfssl.auth_key_file", Path("/etc/join-agent/cfssl-auth-key")
        ),
        ca_pins=r.pins(cf, "signer.cfssl.ca_pins"),
        insecure_skip_ca_pin=r.boolean(cf, "signer.cfssl.insecure_skip_ca_pin", False),
    )
    if kind == "cfssl" and not cfssl.ca_pins and not cfssl.insecure_skip_ca_pin:
        raise ConfigError(
            f"{source}: signer.cfssl.ca_pins is empty: add the CA's pin "
            "(`join-agent pin ca.pem` prints it) or set insecure_skip_ca_pin = true "
            "to trust the first CA that answers"
        )
    if kind == "cfssl" and not cfssl.profile:
        raise ConfigError(
            f"{source}: signer.cfssl.profile is empty: CFSSL would silently use its default "
            "profile; name the profile that issues kubelet client certificates"
        )
    kubernetes = KubernetesSignerConfig(
        bootstrap_token_file=r.path(
            kb, "signer.kubernetes.bootstrap_token_file", Path("/etc/join-agent/bootstrap-token")
        ),
        ca_pins=r.pins(kb, "signer.kubernetes.ca_pins"),
        discovery_file=discovery_file,
        serving=r.boolean(kb, "signer.kubernetes.serving", False),
        csr_timeout=r.duration(kb, "signer.kubernetes.csr_timeout", "15m"),
    )
    if kind == "kubernetes" and not from_file and not kubernetes.ca_pins:
        raise ConfigError(
            f"{source}: signer.kubernetes.ca_pins is empty: token discovery trusts the "
            "cluster CA only by its pin (kubeadm's --discovery-token-ca-cert-hash; "
            "`join-agent pin /etc/kubernetes/pki/ca.crt` on a control-plane host prints it), "
            "or set signer.kubernetes.discovery_file"
        )
    if kubernetes.csr_timeout <= dt.timedelta(0):
        raise ConfigError(f"{source}: signer.kubernetes.csr_timeout must be more than 0")
    clock_skew = r.duration(renewal, "renewal.clock_skew", "2m")
    if clock_skew > dt.timedelta(hours=1):
        raise ConfigError(
            f"{source}: renewal.clock_skew must be at most 1h: a larger tolerance would "
            "accept certificates that are not valid yet; fix the clocks instead (NTP)"
        )
    retry_min = r.duration(renewal, "renewal.retry_min", "10s")
    retry_max = r.duration(renewal, "renewal.retry_max", "5m")
    if retry_min <= dt.timedelta(0):
        raise ConfigError(
            f"{source}: renewal.retry_min must be more than 0: it is the floor that keeps "
            "a failing renewal from retrying in a tight loop"
        )
    if retry_max < retry_min:
        raise ConfigError(f"{source}: renewal.retry_max must not be smaller than retry_min")
    command = r.string_list(kubelet, "kubelet.command", list(defaults.kubelet_command))
    manage = r.boolean(kubelet, "kubelet.manage", defaults.manage_kubelet)
    if manage and not command:
        raise ConfigError(f"{source}: kubelet.command is empty while kubelet.manage is true")
    if command and not command[0].startswith("/"):
        raise r.fail(
            "kubelet.command",
            f"starts with {command[0]!r}: give the kubelet as an absolute path (a bare name "
            "would be looked up in PATH, and whoever can write there would choose what runs "
            "as root)",
        )
    node_paths = {
        "paths.pki_dir": r.path(paths, "paths.pki_dir", defaults.pki_dir),
        "paths.kubeconfig": r.path(paths, "paths.kubeconfig", defaults.kubeconfig),
        "paths.ca_file": r.path(paths, "paths.ca_file", defaults.ca_file),
        "paths.state_dir": r.path(paths, "paths.state_dir", defaults.state_dir),
    }
    _distinct_paths(source, node_paths)
    return Config(
        source=source,
        cluster=ClusterConfig(
            server=server,
            name=r.string(cluster, "cluster.name", "kubernetes") or "kubernetes",
            ca_bundle=r.optional_path(cluster, "cluster.ca_bundle"),
        ),
        node=NodeConfig(
            name=r.node_name(node, "node.name"),
            addresses=r.addresses(node, "node.addresses"),
            exclude_interfaces=tuple(
                r.string_list(node, "node.exclude_interfaces", list(DEFAULT_EXCLUDE_INTERFACES))
            ),
            key=r.choice(node, "node.key", KEY_TYPES, "ecdsa-p256"),
        ),
        signer_kind=kind,
        cfssl=cfssl,
        kubernetes=kubernetes,
        paths=PathsConfig(
            pki_dir=r.path(paths, "paths.pki_dir", defaults.pki_dir),
            kubeconfig=r.path(paths, "paths.kubeconfig", defaults.kubeconfig),
            ca_file=r.path(paths, "paths.ca_file", defaults.ca_file),
            state_dir=r.path(paths, "paths.state_dir", defaults.state_dir),
        ),
        renewal=RenewalConfig(
            retry_min=retry_min,
            retry_max=retry_max,
            splay=r.duration(renewal, "renewal.splay", "0s"),
            clock_skew=clock_skew,
        ),
        kubelet=KubeletConfig(
            manage=manage,
            command=tuple(command),
            stop_grace=r.duration(kubelet, "kubelet.stop_grace", "30s"),
            restart_min=r.duration(kubelet, "kubelet.restart_min", "1s"),
            restart_max=r.duration(kubelet, "kubelet.restart_max", "1m"),
            stable_after=r.duration(kubelet, "kubelet.stable_after", "30s"),
            healthz_url=r.url(kubelet, "kubelet.healthz_url", required=False, schemes=("http",))
            if "healthz_url" in kubelet
            else "http://127.0.0.1:10248/healthz",
            restart_on_serving_rotation=r.boolean(
                kubelet, "kubelet.restart_on_serving_rotation", True
            ),
        ),
        metrics_listen=r.string(metrics, "metrics.listen", ""),
        certificates=_certificates(r, kind, node_paths),
    )


_CERT_KEYS = {
    "name", "profile", "common_name", "organization", "organizational_unit", "hosts",
    "node_addresses", "key", "usages", "cert_file", "key_file", "ca_file", "cert_mode",
    "key_mode", "owner", "group", "action",
}  # fmt: skip
_ACTION_KEYS = {"command", "shell", "smf_restart", "smf_refresh", "systemd_reload", "signal",
                "pidfile", "timeout"}  # fmt: skip
_HOST = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
_CERT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _certificates(
    r: _Reader, kind: str, node_paths: dict[str, Path]
) -> tuple[CertificateSpec, ...]:
    raw = r.doc.get("certificate", [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise r.fail("certificate", "must be an array of tables ([[certificate]])")
    if raw and kind != "cfssl":
        raise r.fail("certificate", 'tables need signer.kind = "cfssl" (profiles are CFSSL\'s)')
    specs: list[CertificateSpec] = []
    # The node's own files, and everything in its pki and state folders, are off limits.
    seen_files = {node_paths[k]: k for k in ("paths.kubeconfig", "paths.ca_file")}
    folders = {k: node_paths[k] for k in ("paths.pki_dir", "paths.state_dir")}
    for i, t in enumerate(raw):
        where = f"certificate[{i}]"
        for k in t:
            if k not in _CERT_KEYS:
                hint = (
                    f"; did you mean {_closest(k, _CERT_KEYS)}?" if _closest(k, _CERT_KEYS) else ""
                )
                raise r.fail(f"{where}.{k}", f"is not a known key{hint}")
        name = r.string(t, f"{where}.name", "")
        if not _CERT_NAME.match(name):
            raise r.fail(f"{where}.name", "is required: lowercase letters, digits and '-'")
        if any(s.name == name for s in specs):
            raise r.fail(f"{where}.name", f"{name!r} is used by another [[certificate]]")
        spec = _certificate(r, t, f"certificate.{name}", name)
        _check_certificate(r, spec, f"certificate.{name}", seen_files)
        _check_outputs(r, spec, f"certificate.{name}", seen_files, folders)
        specs.append(spec)
    return tuple(specs)


def _certificate(r: _Reader, t: Mapping[str, Any], where: str, name: str) -> CertificateSpec:
    return CertificateSpec(
        name=name,
        profile=r.string(t, f"{where}.profile", ""),
        common_name=r.string(t, f"{where}.common_name", ""),
        organization=tuple(r.string_list(t, f"{where}.organization", [])),
        organizational_unit=tuple(r.string_list(t, f"{where}.organizational_unit", [])),
        hosts=tuple(
            dict.fromkeys(h.strip().lower() for h in r.string_list(t, f"{where}.hosts", []))
        ),
        node_addresses=r.boolean(t, f"{where}.node_addresses", False),
        key=r.choice(t, f"{where}.key", KEY_TYPES, "ecdsa-p256"),
        usages=_usages(r, t, f"{where}.usages"),
        cert_file=r.path(t, f"{where}.cert_file", Path()),
        key_file=r.path(t, f"{where}.key_file", Path()),
        ca_file=r.optional_path(t, f"{where}.ca_file"),
        cert_mode=_mode(r, t, f"{where}.cert_mode", 0o644),
        key_mode=_mode(r, t, f"{where}.key_mode", 0o600),
        owner=r.string(t, f"{where}.owner", ""),
        group=r.string(t, f"{where}.group", ""),
        action=_action(r, t, f"{where}.action"),
    )


def _check_certificate(
    r: _Reader, spec: CertificateSpec, where: str, seen_files: dict[Path, str]
) -> None:
    for key in ("profile", "common_name"):
        if not getattr(spec, key):
            raise r.fail(f"{where}.{key}", "is required")
    # X.509's upper bound for a CN, and hosts a certificate can carry (IPs or A-label names).
    if len(spec.common_name) > MAX_CN:
        raise r.fail(
            f"{where}.common_name", f"is longer than the {MAX_CN} characters a CN may have"
        )
    for host in spec.hosts:
        if _HOST.match(host):
            continue
        problem = address_problem(host)
        if problem == NOT_AN_ADDRESS:
            raise r.fail(
                f"{where}.hosts",
                f"has {host!r}, which is neither an IP address nor a DNS name "
                "(internationalized names go in their xn-- form)",
            )
        if problem is not None:
            raise r.fail(f"{where}.hosts", f"has {host!r}, {problem}")
    for key in ("cert_file", "key_file"):
        if getattr(spec, key) == Path():
            raise r.fail(f"{where}.{key}", "is required (an absolute path)")
    if spec.key_mode & 0o007:
        raise r.fail(f"{where}.key_mode", "must not let everyone read the key")
    if spec.key_mode & 0o077 and not spec.group:
        raise r.fail(f"{where}.key_mode", "lets others read the key: give a group, or 0600")


def _check_outputs(
    r: _Reader,
    spec: CertificateSpec,
    where: str,
    seen_files: dict[Path, str],
    folders: dict[str, Path],
) -> None:
    """A table's files are its own: never the node's, never another table's certificate or
    key (tables may share one CA file: it holds the same CA)."""
    for key in ("cert_file", "key_file", "ca_file"):
        path = getattr(spec, key)
        if path is None:
            continue
        owner = seen_files.get(path)
        shared_ca = key == "ca_file" and owner is not None and owner.endswith(".ca_file")
        if owner is not None and not shared_ca:
            raise r.fail(f"{where}.{key}", f"is also {owner} ({path})")
        for folder_key, folder in folders.items():
            if path.is_relative_to(folder):
                raise r.fail(f"{where}.{key}", f"is inside {folder_key} ({folder}), the node's")
        seen_files[path] = f"{where}.{key}"


def _usages(r: _Reader, t: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = r.string_list(t, key, ["client auth"])
    for v in values:
        if v not in USAGES:
            raise r.fail(key, f"has {v!r}; known: {', '.join(USAGES)}")
    if not values:
        raise r.fail(key, "must name at least one usage")
    return tuple(dict.fromkeys(values))


def _mode(r: _Reader, t: Mapping[str, Any], key: str, default: int) -> int:
    value = r.string(t, key, "")
    if not value:
        return default
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise r.fail(key, f'has {value!r}; write an octal mode as a string, e.g. "0640"')
    return int(value, 8)


def _action(r: _Reader, t: Mapping[str, Any], key: str) -> Action:
    a = r.table(key, _ACTION_KEYS, parent=t, key="action")
    given = [k for k in ACTION_KINDS if k in a]
    if len(given) > 1:
        raise r.fail(key, f"names {' and '.join(given)}: give one action")
    timeout = r.duration(a, f"{key}.timeout", "1m")
    if not dt.timedelta(0) < timeout <= dt.timedelta(minutes=10):
        # The pass that runs it is itself bounded; a longer one would be killed unfinished.
        raise r.fail(f"{key}.timeout", "must be more than 0 and at most 10m")
    if not given:
        return Action(kind="", timeout=timeout)
    kind = given[0]
    if kind == "command":
        shell = r.boolean(a, f"{key}.shell", False)
        if shell:
            script = r.string(a, f"{key}.command", "")
            if not script:
                raise r.fail(f"{key}.command", "is empty")
            # The operator wrote shell = true: a script for /bin/sh, run as asked.
            return Action(kind, (script,), shell=True, timeout=timeout)  # noqa: S604
        argv = r.string_list(a, f"{key}.command", [])
        if not argv or not argv[0].startswith("/"):
            raise r.fail(
                f"{key}.command",
                "must be a list whose first item is an absolute path (no shell is used "
                "unless shell = true, and then command is one string)",
            )
        return Action(kind, tuple(argv), timeout=timeout)
    if kind == "signal":
        pidfile = r.optional_path(a, f"{key}.pidfile")
        if pidfile is None:
            raise r.fail(f"{key}.pidfile", "is required with signal")
        sig = r.string(a, f"{key}.signal", "").upper().removeprefix("SIG")
        if sig not in ("HUP", "USR1", "USR2", "TERM", "INT"):
            raise r.fail(f"{key}.signal", "must be one of HUP, USR1, USR2, TERM, INT")
        return Action(kind, (), pidfile=pidfile, signal=sig, timeout=timeout)
    target = r.string(a, f"{key}.{kind}", "")
    if not target:
        raise r.fail(f"{key}.{kind}", "is empty")
    return Action(kind, (target,), timeout=timeout)


def _distinct_paths(source: Path, paths: dict[str, Path]) -> None:
    """Each path must be its own: one file written as two things would lose one of them."""
    seen: dict[Path, str] = {}
    for key, path in paths.items():
        if path in seen:
            raise ConfigError(f"{source}: {key} and {seen[path]} are the same path ({path})")
        seen[path] = key


class _Reader:
    """Typed getters that turn any mistake into a ConfigError naming the key."""

    def __init__(self, doc: Mapping[str, Any], source: Path) -> None:
        self.doc = doc
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        # A quoted TOML key may hold anything, newlines included: one line, always.
        shown = key if key.isprintable() else repr(key)
        return ConfigError(f"{self.source}: {shown} {problem}".replace("\n", "\\n"))

    def only_tables(self, *names: str) -> None:
        for name in self.doc:
            if name not in names:
                raise self.fail(name, f"is not a known section (known: {', '.join(names)})")

    def table(
        self,
        name: str,
        keys: set[str],
        parent: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Mapping[str, Any]:
        container = self.doc if parent is None else parent
        value = container.get(key or name, {})
        if not isinstance(value, dict):
            raise self.fail(name, "must be a table ([" + name + "])")
        for k in value:
            if k not in keys:
                hint = f"; did you mean {_closest(k, keys)}?" if _closest(k, keys) else ""
                raise self.fail(f"{name}.{k}", f"is not a known key{hint}")
        return value

    def _get(self, t: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
        value = t.get(key.rsplit(".", 1)[1])
        if value is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        ):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            want = _toml_name(names)
            article = "an" if want[0] in "aeiou" else "a"
            raise self.fail(
                key, f"must be {article} {want}, not {_toml_name(type(value).__name__)}"
            )
        return value

    def string(self, t: Mapping[str, Any], key: str, default: str) -> str:
        value = self._get(t, key, str)
        return default if value is None else str(value)

    def boolean(self, t: Mapping[str, Any], key: str, default: bool) -> bool:
        value = self._get(t, key, bool)
        return default if value is None else bool(value)

    def choice(self, t: Mapping[str, Any], key: str, choices: tuple[Any, ...], default: str) -> Any:
        value = self.string(t, key, default)
        if value not in choices:
            raise self.fail(key, f"is {value!r}; it must be one of: {', '.join(choices)}")
        return value

    def string_list(self, t: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
        value = self._get(t, key, list)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return list(value)

    def path(self, t: Mapping[str, Any], key: str, default: Path) -> Path:
        value = self.string(t, key, "")
        if not value:
            return default
        if not value.startswith("/"):
            raise self.fail(key, f"must be an absolute path, not {value!r}")
        return Path(value)

    def optional_path(self, t: Mapping[str, Any], key: str) -> Path | None:
        value = self.string(t, key, "")
        return self.path(t, key, Path("/")) if value else None

    def duration(self, t: Mapping[str, Any], key: str, default: str) -> dt.timedelta:
        value = self._get(t, key, (str, int, float))
        if value is None:
            value = default
        try:
            if isinstance(value, int | float):
                if value < 0:
                    raise self.fail(key, "must not be negative")
                return seconds_to_timedelta(float(value), value)
            return parse_duration(value)
        except ValueError as e:
            raise self.fail(key, str(e)) from None

    def url(
        self, t: Mapping[str, Any], key: str, *, required: bool, schemes: tuple[str, ...]
    ) -> str:
        value = self.string(t, key, "")
        if not value:
            if required:
                raise self.fail(key, 'is required (e.g. "https://10.0.0.5:6443")')
            return ""
        return self._check_url(key, value, schemes)

    def _check_url(self, key: str, value: str, schemes: tuple[str, ...]) -> str:
        # Credentials in a URL are checked first so that no later message can echo them.
        if "@" in urlsplit(value).netloc:
            raise self.fail(key, "must not carry credentials in the URL")
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            raise self.fail(key, f"has an invalid URL {value!r}") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes or not parts.hostname:
            want = " or ".join(schemes)
            article = "an" if want[0] in "aeiouh" else "a"
            raise self.fail(key, f"has {value!r}; it must be {article} {want} URL with a host")
        if parts.query or parts.fragment:
            raise self.fail(key, f"has {value!r}; a base URL takes no query or fragment")
        # One spelling from here on: HTTPS://Host is https://host for every later decision.
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host if port is None else f"{host}:{port}"
        return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))

    def discovery_source(self, t: Mapping[str, Any], key: str) -> str:
        """A kubeconfig path or an https URL (never http: it would carry the cluster CA)."""
        value = self.string(t, key, "").strip()
        if "://" in value:
            return self._check_url(key, value, ("https",)).rstrip("/") or value
        if value and not value.startswith("/"):
            raise self.fail(key, f"has {value!r}; give an absolute path or an https URL")
        return value

    def url_list(self, t: Mapping[str, Any], key: str, *, required: bool) -> list[str]:
        values = self.string_list(t, key, [])
        if not values and required:
            raise self.fail(
                key, 'is required: list the CFSSL servers, e.g. ["http://10.0.0.5:8888"]'
            )
        return [self._check_url(key, v, ("http", "https")) for v in values]

    def pins(self, t: Mapping[str, Any], key: str) -> tuple[str, ...]:
        values = self.string_list(t, key, [])
        pins = []
        for v in values:
            pin = v.strip().lower()
            if not PIN_PATTERN.match(pin):
                raise self.fail(
                    key,
                    f'has {v!r}; a pin is "sha256:" and 64 hex digits '
                    "(`join-agent pin ca.pem` prints it)",
                )
            pins.append(pin)
        return tuple(pins)

    def addresses(self, t: Mapping[str, Any], key: str) -> tuple[IPAddress, ...]:
        out: list[IPAddress] = []
        for v in self.string_list(t, key, []):
            problem = address_problem(v.strip())
            if problem is not None:
                raise self.fail(key, f"has {v!r}, {problem}")
            out.append(ipaddress.ip_address(v.strip()))
        return tuple(dict.fromkeys(out))

    def node_name(self, t: Mapping[str, Any], key: str) -> str:
        name = self.string(t, key, "").strip().lower()
        if name:
            problem = node_name_problem(name)
            if problem is not None:
                raise self.fail(key, f"is {name!r}: {problem}")
        return name


def _toml_name(python_name: str) -> str:
    return (
        python_name.replace("str", "string")
        .replace("bool", "boolean")
        .replace("list", "array")
        .replace("dict", "table")
        .replace("int", "integer")
    )


def _closest(word: str, candidates: set[str]) -> str | None:
    import difflib  # only on this error path: it costs start-up time

    found = difflib.get_close_matches(word, sorted(candidates), n=1)
    return found[0] if found else None


def environ() -> Mapping[str, str]:
    """The process environment (an edge; decisions take the mapping as a parameter)."""
    return os.environ
