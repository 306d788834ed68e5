"""The configuration as the rest of the agent sees it: immutable records, and the rules a
node's name and addresses must follow (pure; config/loading.py builds a Config).

The records are NamedTuples, not frozen dataclasses: every verb and every worker child
loads this module, and a frozen dataclass costs ~0.4 ms to define against ~0.06 ms for a
NamedTuple (ten of them were 3.5 ms of a 55 ms `status`; docs/benchmarks.md)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from join_agent.core.records import ConfigStamp

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
KeyType = Literal["ecdsa-p256", "rsa-2048", "rsa-4096"]
KEY_TYPES: tuple[KeyType, ...] = ("ecdsa-p256", "rsa-2048", "rsa-4096")

DEFAULT_EXCLUDE_INTERFACES = (
    "lo*", "docker*", "cni*", "cilium*", "flannel*", "veth*", "lxc*", "kube-ipvs*",
    "cali*", "tunl*", "vxlan*", "br-*", "virbr*", "weave*",
)  # fmt: skip

PIN_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


class ClusterConfig(NamedTuple):
    server: str
    name: str
    ca_bundle: Path | None


class NodeConfig(NamedTuple):
    name: str  # "" = the hostname, lowercased
    addresses: tuple[IPAddress, ...]  # () = discovered
    exclude_interfaces: tuple[str, ...]
    key: KeyType
    fingerprint_files: tuple[Path, ...]  # what says which machine this is (host/machine.py)


class CfsslConfig(NamedTuple):
    urls: tuple[str, ...]
    profile: str
    label: str
    auth_key_file: Path
    ca_pins: tuple[str, ...]
    insecure_skip_ca_pin: bool


class KubernetesSignerConfig(NamedTuple):
    bootstrap_token_file: Path
    ca_pins: tuple[str, ...]
    discovery_file: str
    serving: bool
    csr_timeout: dt.timedelta


class PathsConfig(NamedTuple):
    pki_dir: Path
    kubeconfig: Path
    ca_file: Path
    state_dir: Path


class RenewalConfig(NamedTuple):
    retry_min: dt.timedelta
    retry_max: dt.timedelta
    join_retry_max: dt.timedelta  # the cap while the node holds no certificate of its own
    splay: dt.timedelta
    clock_skew: dt.timedelta


class KubeletConfig(NamedTuple):
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


class Action(NamedTuple):
    """What runs once after each rotation of an extra certificate."""

    kind: str  # one of ACTION_KINDS, or "" for none
    argv: tuple[str, ...] = ()  # command: the argv; smf_*/systemd_reload: the FMRI / unit
    shell: bool = False  # command only: argv[0] is a script for /bin/sh -c
    pidfile: Path | None = None  # signal only
    signal: str = ""  # signal only: "HUP", "USR1"…
    timeout: dt.timedelta = dt.timedelta(minutes=1)


class CertificateSpec(NamedTuple):
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


class Config(NamedTuple):
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
    metrics_textfile: Path | None  # node_exporter's textfile collector: a .prom file
    certificates: tuple[CertificateSpec, ...] = ()
    stamp: ConfigStamp | None = None  # the file's as it was read (storage/runtime.py)


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
