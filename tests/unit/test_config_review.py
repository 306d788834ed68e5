"""loading.parse: the rules the security review added.

URLs have one spelling (a lower-case scheme and host, no trailing slash) and no query or
fragment; clock_skew is at most 1h; retry_min is more than 0; the four paths are distinct.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from join_agent.config import loading
from join_agent.errors import ConfigError

PIN = "sha256:" + "ab" * 32
SOURCE = Path("/etc/join-agent/config.toml")


def doc(**tables: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "cluster": {"server": "https://10.0.0.5:6443"},
        "signer": {"cfssl": {"urls": ["http://10.0.0.5:8888"], "ca_pins": [PIN]}},
    }
    for name, values in tables.items():
        if name == "cfssl":
            d["signer"]["cfssl"].update(values)
        else:
            d.setdefault(name, {}).update(values)
    return copy.deepcopy(d)


def error_of(d: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        loading.parse(d, source=SOURCE)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("HTTPS://CA.Example:8888/", "https://ca.example:8888"),
        ("Http://CA.example:8888", "http://ca.example:8888"),
        ("http://10.0.0.5:8888///", "http://10.0.0.5:8888"),
        ("HTTP://[FD00::5]:8888/", "http://[fd00::5]:8888"),
        ("https://ca.example", "https://ca.example"),
    ],
)
def test_cfssl_urls_have_one_spelling(given: str, normalised: str) -> None:
    cfg = loading.parse(doc(cfssl={"urls": [given]}), source=SOURCE)
    assert list(cfg.cfssl.urls) == [normalised]


@pytest.mark.parametrize(
    "url", ["http://ca:8888?x=1", "http://ca:8888/?x=1", "http://ca:8888#frag", "HTTP://ca/#f"]
)
def test_a_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    message = error_of(doc(cfssl={"urls": [url]}))
    assert message.startswith(f"{SOURCE}: signer.cfssl.urls ")
    assert "a base URL takes no query or fragment" in message


def test_the_cluster_server_is_normalised_too() -> None:
    cfg = loading.parse(doc(cluster={"server": "HTTPS://API.Example:6443/"}), source=SOURCE)
    assert cfg.cluster.server == "https://api.example:6443"


# -- durations -------------------------------------------------------------------------


@pytest.mark.parametrize("skew", ["2h", "61m", "3601s"])
def test_clock_skew_over_an_hour_is_refused(skew: str) -> None:
    message = error_of(doc(renewal={"clock_skew": skew}))
    assert "renewal.clock_skew must be at most 1h" in message


@pytest.mark.parametrize("skew", ["1h", "0s", "2m"])
def test_clock_skew_up_to_an_hour_is_fine(skew: str) -> None:
    loading.parse(doc(renewal={"clock_skew": skew}), source=SOURCE)


@pytest.mark.parametrize("retry_min", ["0s", "0"])
def test_retry_min_of_zero_is_refused(retry_min: str) -> None:
    message = error_of(doc(renewal={"retry_min": retry_min}))
    assert "renewal.retry_min must be more than 0" in message


# -- paths -----------------------------------------------------------------------------


def test_kubeconfig_and_ca_file_on_the_same_path_are_refused() -> None:
    message = error_of(
        doc(paths={"kubeconfig": "/etc/kubernetes/x.conf", "ca_file": "/etc/kubernetes/x.conf"})
    )
    assert "paths.ca_file and paths.kubeconfig are the same path (/etc/kubernetes/x.conf)" in (
        message
    )


def test_a_path_equal_to_a_default_of_another_is_refused() -> None:
    defaults = loading.parse(doc(), source=SOURCE).paths
    message = error_of(doc(paths={"ca_file": str(defaults.kubeconfig)}))
    assert "are the same path" in message


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("pki_dir", "state_dir"),
        ("pki_dir", "kubeconfig"),
        ("ca_file", "state_dir"),
    ],
)
def test_any_two_of_the_four_paths_must_differ(a: str, b: str) -> None:
    message = error_of(doc(paths={a: "/srv/same", b: "/srv/same"}))
    assert f"paths.{a}" in message
    assert f"paths.{b}" in message


def test_the_same_path_spelled_with_a_double_slash_is_still_the_same() -> None:
    message = error_of(doc(paths={"kubeconfig": "/etc/k//x.conf", "ca_file": "/etc/k/x.conf"}))
    assert "are the same path" in message
