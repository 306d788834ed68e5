"""Read the config file (``--config``, ``$JOIN_AGENT_CONFIG`` or the platform's default)
and build a Config from it; every error is a sentence that names the key at fault."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from join_agent.config.model import (
    DEFAULT_EXCLUDE_INTERFACES,
    KEY_TYPES,
    CfsslConfig,
    ClusterConfig,
    Config,
    KubeletConfig,
    KubernetesSignerConfig,
    NodeConfig,
    PathsConfig,
    RenewalConfig,
)
from join_agent.config.reader import Reader
from join_agent.config.tables import certificates, distinct_paths
from join_agent.errors import ConfigError
from join_agent.host import platform
from join_agent.host.platform import CONFIG_ENV

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def config_path(flag: str | None, environ: Mapping[str, str]) -> Path:
    """--config wins, then $JOIN_AGENT_CONFIG, then the platform default."""
    # Absolute from here on: the daemon's children start in "/", not where we were started.
    if flag:
        return Path(flag).absolute()
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).absolute()
    return Path(platform.current().config_file)


def load(
    path: Path, overrides: Mapping[str, Any] | None = None, *, missing_ok: bool = False
) -> Config:
    """Read and validate the config file at ``path``.

    ``overrides`` (from command-line flags) are ``"table.sub.key": value`` pairs laid over
    the file; with ``missing_ok`` an absent file counts as empty, so that flags alone
    (``join --server … --token-file … --ca-pin …``) can describe a join.
    """
    from join_agent.errors import StoreError
    from join_agent.storage import guard, runtime

    # Taken before the read: an edit after it leaves a stamp that no longer matches.
    stamp = runtime.stamp(path)
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
    return parse(with_overrides(doc, overrides or {}), source=path)._replace(
        stamp=None if overrides else stamp
    )


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


class _Tables(NamedTuple):
    """The document's tables, read (and their keys checked) in one fixed order."""

    cluster: Mapping[str, Any]
    node: Mapping[str, Any]
    signer: Mapping[str, Any]
    cfssl: Mapping[str, Any]
    kubernetes: Mapping[str, Any]
    paths: Mapping[str, Any]
    renewal: Mapping[str, Any]
    kubelet: Mapping[str, Any]
    metrics: Mapping[str, Any]
    kind: str
    discovery_file: str
    server: str

    @property
    def from_file(self) -> bool:
        """A discovery file names the API server: cluster.server is then optional."""
        return self.kind == "kubernetes" and bool(self.discovery_file)


def parse(doc: Mapping[str, Any], source: Path = Path("<config>")) -> Config:
    """Build a Config from a parsed TOML document (pure: no I/O)."""
    defaults = platform.current()
    r = Reader(doc, source)
    t = _tables(r)
    cfssl = _cfssl(r, t, source)
    kubernetes = _kubernetes(r, t, source)
    renewal = _renewal(r, t.renewal, source)
    kubelet = _kubelet(r, t.kubelet, source, defaults)
    node_paths = {
        "paths.pki_dir": r.path(t.paths, "paths.pki_dir", defaults.pki_dir),
        "paths.kubeconfig": r.path(t.paths, "paths.kubeconfig", defaults.kubeconfig),
        "paths.ca_file": r.path(t.paths, "paths.ca_file", defaults.ca_file),
        "paths.state_dir": r.path(t.paths, "paths.state_dir", defaults.state_dir),
    }
    distinct_paths(source, node_paths)
    return Config(
        source=source,
        cluster=ClusterConfig(
            server=t.server,
            name=r.string(t.cluster, "cluster.name", "kubernetes") or "kubernetes",
            ca_bundle=r.optional_path(t.cluster, "cluster.ca_bundle"),
        ),
        node=_node(r, t.node),
        signer_kind="kubernetes" if t.kind == "kubernetes" else "cfssl",
        cfssl=cfssl,
        kubernetes=kubernetes,
        paths=PathsConfig(
            pki_dir=node_paths["paths.pki_dir"],
            kubeconfig=node_paths["paths.kubeconfig"],
            ca_file=node_paths["paths.ca_file"],
            state_dir=node_paths["paths.state_dir"],
        ),
        renewal=renewal,
        kubelet=kubelet,
        metrics_listen=r.string(t.metrics, "metrics.listen", ""),
        metrics_textfile=_textfile(r, t.metrics),
        certificates=certificates(r, t.kind, node_paths),
    )


def _tables(r: Reader) -> _Tables:
    r.only_tables(
        "cluster", "node", "signer", "paths", "renewal", "kubelet", "metrics", "certificate"
    )
    cluster = r.table("cluster", {"server", "name", "ca_bundle"})
    node = r.table("node", {"name", "addresses", "exclude_interfaces", "key", "fingerprint_files"})
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
    from_file = kind == "kubernetes" and bool(discovery_file)
    server = r.url(cluster, "cluster.server", required=not from_file, schemes=("https",))
    renewal = r.table(
        "renewal", {"retry_min", "retry_max", "join_retry_max", "splay", "clock_skew"}
    )
    kubelet = r.table("kubelet", {
        "manage", "command", "stop_grace", "restart_min", "restart_max", "stable_after",
        "healthz_url", "restart_on_serving_rotation",
    })  # fmt: skip
    metrics = r.table("metrics", {"listen", "textfile"})
    return _Tables(
        cluster=cluster, node=node, signer=signer, cfssl=cf, kubernetes=kb, paths=paths,
        renewal=renewal, kubelet=kubelet, metrics=metrics, kind=kind,
        discovery_file=discovery_file, server=server,
    )  # fmt: skip


def _cfssl(r: Reader, t: _Tables, source: Path) -> CfsslConfig:
    cf = t.cfssl
    cfssl = CfsslConfig(
        urls=tuple(r.url_list(cf, "signer.cfssl.urls", required=(t.kind == "cfssl"))),
        profile=r.string(cf, "signer.cfssl.profile", "kubelet"),
        label=r.string(cf, "signer.cfssl.label", ""),
        auth_key_file=r.path(
            cf, "signer.cfssl.auth_key_file", f"{platform.current().secrets_dir}/cfssl-auth-key"
        ),
        ca_pins=r.pins(cf, "signer.cfssl.ca_pins"),
        insecure_skip_ca_pin=r.boolean(cf, "signer.cfssl.insecure_skip_ca_pin", False),
    )
    if t.kind == "cfssl" and not cfssl.ca_pins and not cfssl.insecure_skip_ca_pin:
        raise ConfigError(
            f"{source}: signer.cfssl.ca_pins is empty: add the CA's pin "
            "(`join-agent pin ca.pem` prints it) or set insecure_skip_ca_pin = true "
            "to trust the first CA that answers"
        )
    if t.kind == "cfssl" and not cfssl.profile:
        raise ConfigError(
            f"{source}: signer.cfssl.profile is empty: CFSSL would silently use its default "
            "profile; name the profile that issues kubelet client certificates"
        )
    return cfssl


def _kubernetes(r: Reader, t: _Tables, source: Path) -> KubernetesSignerConfig:
    kb = t.kubernetes
    kubernetes = KubernetesSignerConfig(
        bootstrap_token_file=r.path(
            kb,
            "signer.kubernetes.bootstrap_token_file",
            f"{platform.current().secrets_dir}/bootstrap-token",
        ),
        ca_pins=r.pins(kb, "signer.kubernetes.ca_pins"),
        discovery_file=t.discovery_file,
        serving=r.boolean(kb, "signer.kubernetes.serving", False),
        csr_timeout=r.duration(kb, "signer.kubernetes.csr_timeout", "15m"),
    )
    if t.kind == "kubernetes" and not t.from_file and not kubernetes.ca_pins:
        raise ConfigError(
            f"{source}: signer.kubernetes.ca_pins is empty: token discovery trusts the "
            "cluster CA only by its pin (kubeadm's --discovery-token-ca-cert-hash; "
            "`join-agent pin /etc/kubernetes/pki/ca.crt` on a control-plane host prints it), "
            "or set signer.kubernetes.discovery_file"
        )
    if kubernetes.csr_timeout <= dt.timedelta(0):
        raise ConfigError(f"{source}: signer.kubernetes.csr_timeout must be more than 0")
    return kubernetes


def _renewal(r: Reader, renewal: Mapping[str, Any], source: Path) -> RenewalConfig:
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
    join_retry_max = r.duration(renewal, "renewal.join_retry_max", "1m")
    if "join_retry_max" not in renewal:  # a minute, within the bounds an older config set
        join_retry_max = min(max(join_retry_max, retry_min), retry_max)
    if join_retry_max < retry_min:
        raise ConfigError(f"{source}: renewal.join_retry_max must not be smaller than retry_min")
    return RenewalConfig(
        retry_min=retry_min,
        retry_max=retry_max,
        join_retry_max=join_retry_max,
        splay=r.duration(renewal, "renewal.splay", "0s"),
        clock_skew=clock_skew,
    )


def _kubelet(
    r: Reader, kubelet: Mapping[str, Any], source: Path, defaults: platform.PlatformDefaults
) -> KubeletConfig:
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
    healthz = "http://127.0.0.1:10248/healthz"
    if "healthz_url" in kubelet:
        healthz = r.url(kubelet, "kubelet.healthz_url", required=False, schemes=("http",))
    return KubeletConfig(
        manage=manage,
        command=tuple(command),
        stop_grace=r.duration(kubelet, "kubelet.stop_grace", "30s"),
        restart_min=r.duration(kubelet, "kubelet.restart_min", "1s"),
        restart_max=r.duration(kubelet, "kubelet.restart_max", "1m"),
        stable_after=r.duration(kubelet, "kubelet.stable_after", "30s"),
        healthz_url=healthz,
        restart_on_serving_rotation=r.boolean(kubelet, "kubelet.restart_on_serving_rotation", True),
    )


def _node(r: Reader, node: Mapping[str, Any]) -> NodeConfig:
    return NodeConfig(
        name=r.node_name(node, "node.name"),
        addresses=r.addresses(node, "node.addresses"),
        exclude_interfaces=tuple(
            r.string_list(node, "node.exclude_interfaces", list(DEFAULT_EXCLUDE_INTERFACES))
        ),
        key=r.choice(node, "node.key", KEY_TYPES, "ecdsa-p256"),
        fingerprint_files=r.path_list(
            node, "node.fingerprint_files", platform.current().fingerprint_files
        ),
    )


def _textfile(r: Reader, metrics: Mapping[str, Any]) -> Path | None:
    path = r.optional_path(metrics, "metrics.textfile")
    if path is not None and path.suffix != ".prom":
        raise r.fail(
            "metrics.textfile",
            f"must end in .prom (node_exporter reads only those), not {path.name!r}",
        )
    return path


def environ() -> Mapping[str, str]:
    """The process environment (an edge; decisions take the mapping as a parameter)."""
    return os.environ
