"""loading.parse / load / config_path: the documented defaults (join-agent(8)), and errors
that name the key."""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import math
from pathlib import Path
from typing import Any

import pytest

from join_agent.config import loading, model
from join_agent.errors import ConfigError
from join_agent.host import platform

PIN = "sha256:" + "ab" * 32
SOURCE = Path("/etc/join-agent/config.toml")
REPO = Path(__file__).resolve().parents[2]
_DELETE = object()
DESIGN_EXCLUDE_INTERFACES = (
    "lo*", "docker*", "cni*", "cilium*", "flannel*", "veth*", "lxc*", "kube-ipvs*",
    "cali*", "tunl*", "vxlan*", "br-*", "virbr*", "weave*",
)  # fmt: skip


def minimal() -> dict[str, Any]:
    """The smallest valid document: server, one CFSSL URL and one pin."""
    return {
        "cluster": {"server": "https://10.0.0.5:6443"},
        "signer": {"cfssl": {"urls": ["http://10.0.0.5:8888"], "ca_pins": [PIN]}},
    }


def doc_with(dotted: str, value: object) -> dict[str, Any]:
    """``minimal()`` with one (possibly nested) key set, or removed for ``_DELETE``."""
    doc = copy.deepcopy(minimal())
    *tables, last = dotted.split(".")
    t = doc
    for name in tables:
        t = t.setdefault(name, {})
    if value is _DELETE:
        del t[last]
    else:
        t[last] = value
    return doc


def error_of(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        loading.parse(doc, source=SOURCE)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_those_of_the_design() -> None:
    """Every default of the man page's CONFIGURATION section, spelled out here rather
    than imported."""
    cfg = loading.parse(minimal(), source=SOURCE)
    s = dt.timedelta(seconds=1)
    assert cfg.source == SOURCE
    assert cfg.cluster == model.ClusterConfig(
        server="https://10.0.0.5:6443", name="kubernetes", ca_bundle=None
    )
    assert cfg.node == model.NodeConfig(
        name="",
        addresses=(),
        exclude_interfaces=DESIGN_EXCLUDE_INTERFACES,
        key="ecdsa-p256",
        fingerprint_files=(Path("/etc/machine-id"), Path("/sys/class/dmi/id/product_uuid")),
    )
    assert cfg.signer_kind == "cfssl"
    assert cfg.cfssl == model.CfsslConfig(
        urls=("http://10.0.0.5:8888",),
        profile="kubelet",
        label="",
        auth_key_file=Path("/etc/join-agent/cfssl-auth-key"),
        ca_pins=(PIN,),
        insecure_skip_ca_pin=False,
    )
    assert cfg.kubernetes == model.KubernetesSignerConfig(
        bootstrap_token_file=Path("/etc/join-agent/bootstrap-token"),
        ca_pins=(),
        discovery_file="",
        serving=False,
        csr_timeout=15 * 60 * s,
    )
    assert cfg.paths == model.PathsConfig(
        pki_dir=Path("/var/lib/kubelet/pki"),
        kubeconfig=Path("/etc/kubernetes/kubelet.conf"),
        ca_file=Path("/etc/kubernetes/pki/ca.crt"),
        state_dir=Path("/var/lib/join-agent"),
    )
    assert cfg.renewal == model.RenewalConfig(
        retry_min=10 * s,
        retry_max=5 * 60 * s,
        join_retry_max=60 * s,
        splay=0 * s,
        clock_skew=2 * 60 * s,
    )
    assert cfg.kubelet == model.KubeletConfig(
        manage=True,
        command=("/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"),
        stop_grace=30 * s,
        restart_min=1 * s,
        restart_max=60 * s,
        stable_after=30 * s,
        healthz_url="http://127.0.0.1:10248/healthz",
        restart_on_serving_rotation=True,
    )
    assert cfg.metrics_listen == ""
    assert cfg.node.exclude_interfaces == model.DEFAULT_EXCLUDE_INTERFACES


def test_config_is_frozen() -> None:
    cfg = loading.parse(minimal())
    with pytest.raises(AttributeError):  # read-only records (NamedTuple)
        cfg.cluster.server = "https://evil.example:6443"  # type: ignore[misc]


def test_values_are_normalised() -> None:
    doc = minimal()
    doc["cluster"].update(server="https://api.example:6443/", name="", ca_bundle="/etc/ca.pem")
    doc["node"] = {
        "name": "  Worker-1.Example ",
        "addresses": ["10.0.0.7", " fd00::7", "10.0.0.7"],
        "key": "rsa-4096",
    }
    doc["signer"]["cfssl"].update(
        urls=["https://ca-1.example:8888/", "http://10.0.0.6:8888"],
        ca_pins=[PIN.upper().replace("SHA256", "sha256"), " " + PIN + " "],
    )
    doc["renewal"] = {"retry_min": 5, "retry_max": 7.5, "splay": "1m30s"}
    cfg = loading.parse(doc)
    assert cfg.cluster.server == "https://api.example:6443"
    assert cfg.cluster.name == "kubernetes"
    assert cfg.cluster.ca_bundle == Path("/etc/ca.pem")
    assert cfg.node.name == "worker-1.example"
    assert cfg.node.addresses == (
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("fd00::7"),
    )
    assert cfg.node.key == "rsa-4096"
    assert cfg.cfssl.urls == ("https://ca-1.example:8888", "http://10.0.0.6:8888")
    assert cfg.cfssl.ca_pins == (PIN, PIN)
    assert cfg.renewal.retry_min == dt.timedelta(seconds=5)
    assert cfg.renewal.retry_max == dt.timedelta(seconds=7.5)
    assert cfg.renewal.splay == dt.timedelta(seconds=90)


def test_kubernetes_signer_needs_no_cfssl_settings() -> None:
    doc = {
        "cluster": {"server": "https://10.0.0.5:6443"},
        "signer": {"kind": "kubernetes", "kubernetes": {"ca_pins": [PIN], "serving": True}},
    }
    cfg = loading.parse(doc)
    assert cfg.signer_kind == "kubernetes"
    assert cfg.cfssl.urls == ()
    assert cfg.kubernetes.ca_pins == (PIN,)
    assert cfg.kubernetes.serving is True


def test_insecure_skip_ca_pin_allows_empty_pins() -> None:
    doc = doc_with("signer.cfssl.ca_pins", _DELETE)
    doc["signer"]["cfssl"]["insecure_skip_ca_pin"] = True
    cfg = loading.parse(doc)
    assert cfg.cfssl.ca_pins == ()
    assert cfg.cfssl.insecure_skip_ca_pin is True


def test_unmanaged_kubelet_may_have_no_command() -> None:
    doc = doc_with("kubelet.manage", False)
    doc["kubelet"]["command"] = []
    cfg = loading.parse(doc)
    assert cfg.kubelet == model.KubeletConfig(
        manage=False,
        command=(),
        stop_grace=dt.timedelta(seconds=30),
        restart_min=dt.timedelta(seconds=1),
        restart_max=dt.timedelta(minutes=1),
        stable_after=dt.timedelta(seconds=30),
        healthz_url="http://127.0.0.1:10248/healthz",
        restart_on_serving_rotation=True,
    )


@pytest.mark.parametrize(
    ("dotted", "value", "key", "fragment"),
    [
        # unknown sections and keys
        ("clster", {}, "clster", "is not a known section"),
        ("cluster.sever", "x", "cluster.sever", "did you mean server?"),
        ("signer.cfssl.ca_pin", [PIN], "signer.cfssl.ca_pin", "did you mean ca_pins?"),
        ("renewal.retry_mn", "1s", "renewal.retry_mn", "did you mean retry_min?"),
        ("node.zzz", "x", "node.zzz", "is not a known key"),
        # wrong types, including bool vs int both ways
        ("cluster", "https://10.0.0.5:6443", "cluster", "must be a table"),
        ("signer.cfssl", "http://10.0.0.5:8888", "signer.cfssl", "must be a table"),
        ("cluster.server", 6443, "cluster.server", "must be a string, not integer"),
        ("cluster.name", True, "cluster.name", "must be a string, not boolean"),
        ("signer.cfssl.insecure_skip_ca_pin", 1, "signer.cfssl.insecure_skip_ca_pin", "boolean"),
        ("signer.kubernetes.serving", "yes", "signer.kubernetes.serving", "boolean"),
        ("kubelet.manage", 0, "kubelet.manage", "must be a boolean, not integer"),
        ("renewal.retry_min", True, "renewal.retry_min", "not boolean"),
        ("kubelet.stop_grace", False, "kubelet.stop_grace", "not boolean"),
        ("node.exclude_interfaces", ["eth*", 1], "node.exclude_interfaces", "list of strings"),
        ("kubelet.command", ["/usr/bin/kubelet", True], "kubelet.command", "list of strings"),
        ("node.addresses", "10.0.0.7", "node.addresses", "not string"),
        # pins
        ("signer.cfssl.ca_pins", ["sha256:abc"], "signer.cfssl.ca_pins", "64 hex digits"),
        ("signer.cfssl.ca_pins", ["ab" * 32], "signer.cfssl.ca_pins", "64 hex digits"),
        ("signer.cfssl.ca_pins", ["sha1:" + "ab" * 20], "signer.cfssl.ca_pins", "64 hex"),
        ("signer.cfssl.ca_pins", ["sha256:" + "g" * 64], "signer.cfssl.ca_pins", "64 hex"),
        ("signer.kubernetes.ca_pins", [PIN + "00"], "signer.kubernetes.ca_pins", "64 hex"),
        # the API server URL
        ("cluster.server", _DELETE, "cluster.server", "is required"),
        ("cluster.server", "", "cluster.server", "is required"),
        ("cluster.server", "http://10.0.0.5:6443", "cluster.server", "must be an https URL"),
        ("cluster.server", "10.0.0.5:6443", "cluster.server", "must be an https URL"),
        ("cluster.server", "https://", "cluster.server", "with a host"),
        ("cluster.server", "https://10.0.0.5:99999", "cluster.server", "invalid URL"),
        (
            "cluster.server",
            "https://admin:pw@10.0.0.5:6443",
            "cluster.server",
            "must not carry credentials",
        ),
        # CFSSL URLs
        ("signer.cfssl.urls", [], "signer.cfssl.urls", "is required"),
        ("signer.cfssl.urls", _DELETE, "signer.cfssl.urls", "is required"),
        ("signer.cfssl.urls", "http://10.0.0.5:8888", "signer.cfssl.urls", "not string"),
        ("signer.cfssl.urls", ["ftp://10.0.0.5:8888"], "signer.cfssl.urls", "http or https"),
        ("signer.cfssl.urls", ["10.0.0.5:8888"], "signer.cfssl.urls", "http or https"),
        (
            "signer.cfssl.urls",
            ["http://10.0.0.5:8888", "http://user:pw@10.0.0.6:8888"],
            "signer.cfssl.urls",
            "must not carry credentials",
        ),
        (
            "signer.cfssl.urls",
            ["http://deadbeef@10.0.0.6:8888"],
            "signer.cfssl.urls",
            "must not carry credentials",
        ),
        # CFSSL settings
        ("signer.cfssl.ca_pins", [], "signer.cfssl.ca_pins", "insecure_skip_ca_pin"),
        ("signer.cfssl.ca_pins", _DELETE, "signer.cfssl.ca_pins", "is empty"),
        ("signer.cfssl.profile", "", "signer.cfssl.profile", "is empty"),
        ("signer.kind", "vault", "signer.kind", "one of: cfssl, kubernetes"),
        # renewal
        ("renewal.retry_min", "10m", "renewal.retry_max", "retry_min"),
        ("renewal.join_retry_max", "5s", "renewal.join_retry_max", "smaller than retry_min"),
        ("metrics.textfile", "/var/lib/ne/join.txt", "metrics.textfile", "must end in .prom"),
        ("metrics.textfile", "join.prom", "metrics.textfile", "absolute path"),
        ("renewal.splay", "5", "renewal.splay", "not a duration"),
        ("renewal.clock_skew", -1, "renewal.clock_skew", "must not be negative"),
        ("renewal.clock_skew", "-2m", "renewal.clock_skew", "not a duration"),
        ("kubelet.stop_grace", "1y", "kubelet.stop_grace", "not a duration"),
        ("signer.kubernetes.csr_timeout", "", "signer.kubernetes.csr_timeout", "is empty"),
        # paths must be absolute
        ("paths.pki_dir", "var/lib/kubelet/pki", "paths.pki_dir", "absolute path"),
        ("paths.kubeconfig", "kubelet.conf", "paths.kubeconfig", "absolute path"),
        ("paths.ca_file", "./ca.crt", "paths.ca_file", "absolute path"),
        ("paths.state_dir", "~/join-agent", "paths.state_dir", "absolute path"),
        ("cluster.ca_bundle", "ca.pem", "cluster.ca_bundle", "absolute path"),
        ("signer.cfssl.auth_key_file", "key", "signer.cfssl.auth_key_file", "absolute path"),
        (
            "signer.kubernetes.bootstrap_token_file",
            "token",
            "signer.kubernetes.bootstrap_token_file",
            "absolute path",
        ),
        # addresses
        ("node.addresses", ["10.0.0.300"], "node.addresses", "not an IP address"),
        ("node.addresses", ["eth0"], "node.addresses", "not an IP address"),
        ("node.addresses", ["10.0.0.0/24"], "node.addresses", "not an IP address"),
        ("node.addresses", ["10.0.0.7", "fd00::gg"], "node.addresses", "'fd00::gg'"),
        # key type
        ("node.key", "rsa-1024", "node.key", "one of: ecdsa-p256, rsa-2048, rsa-4096"),
        ("node.key", "ed25519", "node.key", "'ed25519'"),
        ("node.key", 256, "node.key", "must be a string"),
        # kubelet
        ("kubelet.command", [], "kubelet.command", "is empty while kubelet.manage is true"),
    ],
)
def test_every_error_names_the_key(dotted: str, value: object, key: str, fragment: str) -> None:
    message = error_of(doc_with(dotted, value))
    assert message.startswith(f"{SOURCE}: {key} "), message
    assert fragment in message


def test_url_credentials_are_not_echoed_in_the_error() -> None:
    message = error_of(doc_with("signer.cfssl.urls", ["http://user:hunter2@10.0.0.6:8888"]))
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("cluster.server", "http://admin:hunter2@10.0.0.5:6443"),
        ("signer.cfssl.urls", ["ftp://admin:hunter2@10.0.0.5:8888"]),
    ],
)
def test_url_credentials_are_not_echoed_even_with_a_wrong_scheme(
    dotted: str, value: object
) -> None:
    message = error_of(doc_with(dotted, value))
    assert "hunter2" not in message


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e300, "99999999999999h"])
def test_unrepresentable_durations_name_the_key(value: object) -> None:
    message = error_of(doc_with("renewal.splay", value))
    assert message.startswith(f"{SOURCE}: renewal.splay ")


def test_type_errors_read_as_english() -> None:
    message = error_of(doc_with("node.addresses", "10.0.0.7"))
    assert "must be an array, not string" in message


def test_retry_max_equal_to_retry_min_is_fine() -> None:
    doc = doc_with("renewal.retry_min", "1m")
    doc["renewal"]["retry_max"] = 60
    cfg = loading.parse(doc)
    assert cfg.renewal.retry_min == cfg.renewal.retry_max == dt.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("retry_min", "retry_max", "join_retry_max"),
    [("10s", "5m", 60), ("2m", "5m", 120), ("1s", "30s", 30)],
)
def test_join_retry_max_defaults_to_a_minute_within_the_retry_bounds(
    retry_min: str, retry_max: str, join_retry_max: int
) -> None:
    """An older config with retry_min above a minute (or retry_max below) stays valid."""
    doc = doc_with("renewal.retry_min", retry_min)
    doc["renewal"]["retry_max"] = retry_max
    cfg = loading.parse(doc)
    assert cfg.renewal.join_retry_max == dt.timedelta(seconds=join_retry_max)


# -- load ------------------------------------------------------------------------------


def test_load_reads_toml_with_go_durations(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[cluster]\n"
        'server = "https://10.0.0.5:6443"\n'
        "[signer.cfssl]\n"
        'urls = ["http://10.0.0.5:8888"]\n'
        f'ca_pins = ["{PIN}"]\n'
        "[renewal]\n"
        'retry_min = "250ms"\n'
        'retry_max = "1h30m"\n'
        "clock_skew = 30\n",
        encoding="utf-8",
    )
    cfg = loading.load(path)
    assert cfg.source == path
    assert cfg.renewal.retry_min == dt.timedelta(milliseconds=250)
    assert cfg.renewal.retry_max == dt.timedelta(hours=1, minutes=30)
    assert cfg.renewal.clock_skew == dt.timedelta(seconds=30)


def test_load_names_the_file_in_its_errors(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[cluster]\nserver = "http://10.0.0.5:6443"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^" + str(bad) + r": cluster\.server "):
        loading.load(bad)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        loading.load(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value)
    assert "JOIN_AGENT_CONFIG" in str(info.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a regular file"):
        loading.load(tmp_path)


def test_load_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[cluster\nserver = "https://10.0.0.5:6443"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        loading.load(path)
    assert str(info.value).startswith(f"config file {path} is not valid TOML")


def test_load_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[cluster]\nname = "k\xe4se"\n')
    with pytest.raises(ConfigError, match=r"is not UTF-8 text"):
        loading.load(path)


def test_shipped_example_config_loads() -> None:
    cfg = loading.load(REPO / "examples" / "config.toml")
    assert cfg.cluster.server == "https://10.0.0.5:6443"
    assert cfg.signer_kind == "cfssl"


# -- config_path -----------------------------------------------------------------------


def test_config_path_flag_wins_over_environment() -> None:
    env = {"JOIN_AGENT_CONFIG": "/srv/env.toml"}
    assert loading.config_path("/srv/flag.toml", env) == Path("/srv/flag.toml")


def test_config_path_environment_wins_over_default() -> None:
    env = {"JOIN_AGENT_CONFIG": "/srv/env.toml"}
    assert loading.config_path(None, env) == Path("/srv/env.toml")


@pytest.mark.parametrize("env", [{}, {"JOIN_AGENT_CONFIG": ""}])
def test_config_path_default(env: dict[str, str]) -> None:
    assert loading.config_path(None, env) == Path("/etc/join-agent/config.toml")


def _kubernetes(**signer: object) -> dict[str, Any]:
    return {
        "cluster": {"server": "https://10.0.0.5:6443"},
        "signer": {"kind": "kubernetes", "kubernetes": {"ca_pins": [PIN], **signer}},
    }


def test_kubernetes_token_discovery_needs_a_pin() -> None:
    cfg = loading.parse(_kubernetes(), source=SOURCE)
    assert cfg.signer_kind == "kubernetes"
    assert cfg.kubernetes.ca_pins == (PIN,)
    assert cfg.kubernetes.csr_timeout == dt.timedelta(minutes=15)
    doc = _kubernetes()
    doc["signer"]["kubernetes"]["ca_pins"] = []
    assert "signer.kubernetes.ca_pins is empty" in error_of(doc)


def test_kubernetes_discovery_file_names_the_server() -> None:
    doc = _kubernetes(discovery_file="/etc/join-agent/discovery.conf")
    del doc["cluster"]
    doc["signer"]["kubernetes"]["ca_pins"] = []
    cfg = loading.parse(doc, source=SOURCE)
    assert cfg.cluster.server == ""
    assert cfg.kubernetes.discovery_file == "/etc/join-agent/discovery.conf"
    assert (
        loading.parse(
            _kubernetes(discovery_file="HTTPS://Example.org/k"), source=SOURCE
        ).kubernetes.discovery_file
        == "https://example.org/k"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [("http://example.org/k", "https URL"), ("relative/path", "absolute path")],
)
def test_kubernetes_discovery_file_must_be_a_path_or_https(value: str, problem: str) -> None:
    assert problem in error_of(_kubernetes(discovery_file=value))


def test_overrides_lay_flags_over_the_file(tmp_path: Path) -> None:
    flags = {
        "cluster.server": "https://10.0.0.9:6443",
        "signer.kind": "kubernetes",
        "signer.kubernetes.ca_pins": [PIN],
    }
    cfg = loading.load(tmp_path / "absent.toml", flags, missing_ok=True)
    assert (cfg.cluster.server, cfg.signer_kind) == ("https://10.0.0.9:6443", "kubernetes")
    with pytest.raises(ConfigError, match="does not exist"):
        loading.load(tmp_path / "absent.toml", flags)
    merged = loading.with_overrides(minimal(), {"signer.cfssl.profile": "p"})
    assert merged["signer"]["cfssl"] == {**minimal()["signer"]["cfssl"], "profile": "p"}
    assert "profile" not in minimal()["signer"]["cfssl"]  # the input is not changed


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("fe80::1%eth0", "'fe80::1%eth0', a scoped address: a certificate carries no zone"),
        ("fe80::1", "'fe80::1', a link-local address"),
        ("169.254.1.1", "'169.254.1.1', a link-local address"),
        ("0.0.0.0", "'0.0.0.0', which is not the address of one host"),  # noqa: S104
        ("ff02::1", "'ff02::1', which is not the address of one host"),
        ("10.0.0.300", "'10.0.0.300', which is not an IP address"),
    ],
)
def test_node_addresses_a_certificate_cannot_carry_are_refused(value: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        loading.parse(doc_with("node.addresses", [value]), SOURCE)
    assert f"{SOURCE}: node.addresses has {said}" in str(info.value)


def test_loopback_and_private_node_addresses_are_kept() -> None:
    cfg = loading.parse(doc_with("node.addresses", ["127.0.0.1", "::1", "fd00::7"]), SOURCE)
    assert [str(a) for a in cfg.node.addresses] == ["127.0.0.1", "::1", "fd00::7"]


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("a" * 53, "is 'aaaa"),
        ("a" * 53, "it has 53 characters: the certificate's CN system:node:<name> may have at most "
         "64 (X.509), so a node name at most 52"),
        ("a" * 64 + ".b", "its label aaaaaaaaaaaaaaaa... has 64 characters (DNS allows 63)"),
        ("node_1", "it is not a DNS-1123 subdomain"),
    ],
)  # fmt: skip
def test_node_names_past_a_limit_are_refused_with_the_limit(name: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        loading.parse(doc_with("node.name", name), SOURCE)
    assert said in str(info.value)
    assert str(info.value).startswith(f"{SOURCE}: node.name is ")


def test_a_node_name_at_the_cn_limit_is_accepted() -> None:
    name = "a" * model.MAX_NODE_NAME
    assert len(model.NODE_CN_PREFIX + name) == 64
    assert loading.parse(doc_with("node.name", name), SOURCE).node.name == name


def test_the_kubelet_command_must_be_an_absolute_path() -> None:
    with pytest.raises(
        ConfigError, match=r"kubelet\.command starts with 'kubelet': give the kubelet"
    ):
        loading.parse(doc_with("kubelet.command", ["kubelet", "--v=2"]), SOURCE)


def test_a_relative_config_path_becomes_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/tmp")
    assert loading.config_path("c.toml", {}) == Path("/tmp/c.toml")
    assert loading.config_path(None, {platform.CONFIG_ENV: "x/c.toml"}) == Path("/tmp/x/c.toml")
