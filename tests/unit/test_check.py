"""check.py's judgements, pure: the clock against an HTTP Date, the kernel's settings."""

from __future__ import annotations

import datetime as dt

import pytest

from join_agent.verbs import check

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
SKEW = dt.timedelta(minutes=2)


@pytest.mark.parametrize(
    ("date", "level", "text"),
    [
        ("Sun, 22 Nov 2026 12:00:01 GMT", "PASS", "within 1s of the CA's clock"),
        ("Sun, 22 Nov 2026 11:55:00 GMT", "FAIL", "this node's clock is 5m 0s ahead of the CA's"),
        ("Sun, 22 Nov 2026 12:03:30 GMT", "FAIL", "this node's clock is 3m 30s behind the CA's"),
        (None, "WARN", "no Date header"),
        ("yesterday-ish", "WARN", "unreadable Date header"),
    ],
)
def test_clock_against_the_cas_date(date: str | None, level: str, text: str) -> None:
    r = check.clock("clock", date, NOW, SKEW)
    assert r.level == level
    assert text in r.message


def test_kernel_all_good() -> None:
    results = check.kernel(
        {
            "/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n",
            "/proc/sys/net/ipv4/ip_forward": "1\n",
            "/proc/sys/net/bridge/bridge-nf-call-iptables": "1\n",
        }.get
    )
    assert [(r.name, r.level) for r in results] == [
        ("swap", "PASS"),
        ("ip_forward", "PASS"),
        ("br_netfilter", "PASS"),
    ]


def test_kernel_what_kubeadm_would_refuse() -> None:
    results = check.kernel(
        {
            "/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1024 0 -2\n",
            "/proc/sys/net/ipv4/ip_forward": "0\n",
        }.get
    )
    by_name = {r.name: r for r in results}
    assert by_name["swap"].level == "FAIL" and "swapoff -a" in by_name["swap"].message
    assert by_name["ip_forward"].level == "FAIL" and "= 0" in by_name["ip_forward"].message
    assert by_name["br_netfilter"].level == "FAIL"
    assert "modprobe br_netfilter" in by_name["br_netfilter"].message


def test_newcert_probe_classification() -> None:
    assert check._newcert("http://ca:8888", 405).level == "WARN"
    assert check._newcert("http://ca:8888", 404).level == "PASS"
    assert check._newcert("http://ca:8888", 403).level == "PASS"
    assert check.Result("PASS", "x", "y").line() == "PASS  x: y"
