"""The stock kubernetes-mixin kubelet certificate alerts against a real `join-agent run`
(docs/monitoring.md): a real CFSSL CA, the daemon's metrics endpoint scraped over HTTP,
`promtool check metrics` on the scrape and `promtool test rules` (Debian's prometheus
2.42) with the mixin's expressions (tests/data/kubernetes-mixin-kubelet-certificates.yaml).

promtool evaluates rules over a series given sample by sample. The samples here are the
real scrapes, taken a fraction of a second apart and replayed one a minute, so that the
renewal-error alert's `for: 15m` is reached by a daemon that retries every second or two
(retry_max 2s) instead of every few minutes.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Node, need, stop
from tests.lab.cfssl_ca import CfsslCA, free_port

PROMTOOL = Path("/var/cache/join-agent-ci/prometheus/usr/bin/promtool")
RULES = Path(__file__).resolve().parents[1] / "data" / "kubernetes-mixin-kubelet-certificates.yaml"
SERIES = (
    "kubelet_certificate_manager_client_ttl_seconds",
    "kubelet_certificate_manager_client_expiration_renew_errors",
)
LABELS = '{job="join-agent",instance="worker-1:9464"}'


@pytest.fixture
def promtool() -> str:
    if not PROMTOOL.is_file():
        need("promtool", "bash .ci/install-tools unpacks Debian's prometheus package")
    return str(PROMTOOL)


class Watched:
    """A node running `join-agent run` with its metrics endpoint, against its own CA."""

    def __init__(self, root: Path, expiry: str) -> None:
        self.ca = CfsslCA(root / "ca", expiry=expiry)
        self.ca.start()
        self.node = Node(root=root / "node", ca=self.ca)
        self.node.root.mkdir()
        self.ca.write_auth_key(self.node.auth_key)
        self.port = free_port()
        self.node.write_config(
            renewal={"retry_min": "1s", "retry_max": "2s"},
            kubelet={"manage": False},
            metrics={"listen": f"127.0.0.1:{self.port}"},
        )
        self.agent = self.node.start()
        self.node.wait_status(lambda d: d["state"] == "valid")

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
        return text

    def close(self) -> None:
        stop(self.agent)
        self.ca.stop()


@pytest.fixture
def watched(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Watched]:
    w = Watched(tmp_path, getattr(request, "param", "8760h"))
    try:
        yield w
    finally:
        w.close()


def values(text: str) -> dict[str, str]:
    """The samples of the kubelet's series in one scrape (they carry no labels)."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in SERIES:
            out[name] = value
    return out


def samples(w: Watched, n: int, every: float) -> list[dict[str, str]]:
    taken = []
    for _ in range(n):
        taken.append(values(w.scrape()))
        time.sleep(every)
    return taken


def assert_alerts(
    promtool: str, tmp: Path, taken: list[dict[str, str]], expected: dict[str, list[str]]
) -> None:
    """promtool's verdict: at the last replayed sample, exactly ``expected`` fire (alert ->
    its severities), each with the scrape's labels."""
    series = [
        {"series": name + LABELS, "values": " ".join(s[name] for s in taken)} for name in SERIES
    ]
    labels = {"job": "join-agent", "instance": "worker-1:9464"}
    cases = [
        {
            "eval_time": f"{len(taken) - 1}m",
            "alertname": alert,
            "exp_alerts": [{"exp_labels": {**labels, "severity": s}} for s in severities],
        }
        for alert, severities in expected.items()
    ]
    spec = tmp / "alerts-test.yaml"
    spec.write_text(
        json.dumps({
            "rule_files": [str(RULES)],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": cases}],
        })
    )  # fmt: skip
    r = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


def check_metrics(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )


def test_a_healthy_node_raises_none_and_its_scrape_is_lint_clean(
    watched: Watched, promtool: str, tmp_path: Path
) -> None:
    text = watched.scrape()
    linted = check_metrics(promtool, text)
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")
    taken = samples(watched, 6, 0.1)
    assert set(taken[0]) == set(SERIES), text
    assert_alerts(promtool, tmp_path, taken, {
        "KubeletClientCertificateExpiration": [],
        "KubeletClientCertificateRenewalErrors": [],
    })  # fmt: skip


@pytest.mark.parametrize(
    ("watched", "severities"),
    [("72h", ["warning"]), ("12h", ["critical", "warning"])],
    indirect=["watched"],
)
def test_a_certificate_about_to_expire_raises_the_expiration_alert(
    watched: Watched, promtool: str, tmp_path: Path, severities: list[str]
) -> None:
    taken = samples(watched, 6, 0.1)
    assert_alerts(promtool, tmp_path, taken, {
        "KubeletClientCertificateExpiration": severities,
        "KubeletClientCertificateRenewalErrors": [],
    })  # fmt: skip


def test_renewals_that_keep_failing_raise_the_renewal_errors_alert(
    watched: Watched, promtool: str, tmp_path: Path
) -> None:
    watched.ca.stop()
    asked = watched.node.run("renew")  # the daemon tries at once, and fails: the CA is gone
    assert asked.returncode != 0, asked.stdout
    taken = samples(watched, 24, 0.5)
    errors = [float(s[SERIES[1]]) for s in taken]
    assert errors[-1] > errors[0] >= 1, errors  # still failing, still counted
    assert_alerts(promtool, tmp_path, taken, {
        "KubeletClientCertificateExpiration": [],
        "KubeletClientCertificateRenewalErrors": ["warning"],
    })  # fmt: skip


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_healthz_and_readyz_on_the_metrics_listener(watched: Watched, tmp_path: Path) -> None:
    """A joined node: alive and ready. A node whose CA is away at start: alive, not ready,
    saying why; both answer while the metrics still do."""
    assert get(watched.port, "/healthz") == (200, "ok\n")
    assert get(watched.port, "/readyz") == (200, "ok\n")
    assert get(watched.port, "/metrics")[0] == 200
    ca = CfsslCA(tmp_path / "other-ca")
    ca.start()
    ca.stop()  # its URL and pin are known; nothing answers there
    lonely = Node(root=tmp_path / "lonely", ca=ca)
    lonely.root.mkdir()
    ca.write_auth_key(lonely.auth_key)
    port = free_port()
    lonely.write_config(kubelet={"manage": False}, metrics={"listen": f"127.0.0.1:{port}"})
    agent = lonely.start()
    try:
        lonely.wait_status(lambda d: d["agent"]["running"] and d["renewal"]["failures"])
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (503, "not joined yet\n")
    finally:
        stop(agent)


def test_status_nagios_from_the_real_cli(watched: Watched, tmp_path: Path) -> None:
    """The plugin line and its exit code, and UNKNOWN (exit 3) on standard output when
    status cannot look at all."""
    r = watched.node.run("status", "--nagios")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("JOIN-AGENT OK: valid, expires in 364 days | 'seconds_left'=")
    assert r.stdout.endswith("s;;;; 'renewal_failures'=0;;;0;\n") and r.stdout.count("\n") == 1
    missing = watched.node.run("--config", str(tmp_path / "nowhere.toml"), "status", "--nagios")
    assert missing.returncode == 3
    assert missing.stdout.startswith("JOIN-AGENT UNKNOWN: ") and "nowhere.toml" in missing.stdout


def test_the_textfile_for_node_exporter(tmp_path: Path, promtool: str) -> None:
    """[metrics] textfile: the same series in a .prom file node_exporter's textfile
    collector reads, written atomically by the daemon (no port opened); a directory that
    someone else could write is refused, like every directory the agent writes into."""
    ca = CfsslCA(tmp_path / "ca")
    ca.start()
    node = Node(root=tmp_path / "node", ca=ca)
    node.root.mkdir()
    ca.write_auth_key(node.auth_key)
    textfile = tmp_path / "node-exporter" / "join-agent.prom"
    textfile.parent.mkdir()
    node.write_config(kubelet={"manage": False}, metrics={"textfile": str(textfile)})
    agent = node.start()
    try:
        node.wait_status(lambda d: d["state"] == "valid")
        deadline = time.monotonic() + 20
        while "kubelet_certificate_manager_client_ttl_seconds 3" not in (
            textfile.read_text() if textfile.exists() else ""
        ):
            assert time.monotonic() < deadline, "the textfile never showed the certificate"
            time.sleep(0.2)
    finally:
        stop(agent)
        ca.stop()
    assert textfile.stat().st_mode & 0o777 == 0o644
    assert list(textfile.parent.iterdir()) == [textfile]  # nothing staged left behind
    linted = check_metrics(promtool, textfile.read_text())
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")
    textfile.parent.chmod(0o777)
    r = node.run("check")
    assert r.returncode == 1
    assert any(
        line.startswith("FAIL  trust: the directory of metrics.textfile")
        for line in r.stdout.splitlines()
    ), r.stdout
