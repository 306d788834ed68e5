"""[[certificate]] tables: config validation and the pure per-certificate decision."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from join_agent.config import loading, model
from join_agent.core import tables
from join_agent.errors import ConfigError
from join_agent.worker import actions, certificates

if TYPE_CHECKING:
    from join_agent.core.records import TableRecord

PIN = "sha256:" + "ab" * 32
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
MIN, MAX = dt.timedelta(seconds=10), dt.timedelta(minutes=5)


def _doc(**table: Any) -> dict[str, Any]:
    t = {
        "name": "front-proxy",
        "profile": "front-proxy",
        "common_name": "front-proxy-client",
        "cert_file": "/etc/k/fp.crt",
        "key_file": "/etc/k/fp.key",
        **table,
    }
    return {
        "cluster": {"server": "https://10.0.0.5:6443"},
        "signer": {"cfssl": {"urls": ["http://10.0.0.5:8888"], "ca_pins": [PIN]}},
        "certificate": [t],
    }


def _error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        loading.parse(doc, Path("/c.toml"))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_table_with_defaults() -> None:
    (spec,) = loading.parse(_doc(), Path("/c.toml")).certificates
    assert spec.usages == ("client auth",)
    assert (spec.key_mode, spec.cert_mode) == (0o600, 0o644)
    assert spec.action.kind == ""
    assert spec.key == "ecdsa-p256"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"name": "Front_Proxy"}, "certificate[0].name is required: lowercase"),
        ({"profile": ""}, "certificate.front-proxy.profile is required"),
        ({"cert_file": "relative.crt"}, "must be an absolute path"),
        ({"key_file": "/etc/k/fp.crt"}, "key_file is also certificate.front-proxy.cert_file"),
        ({"usages": ["code signing"]}, "known: client auth, server auth"),
        ({"key_mode": "0644"}, "must not let everyone read the key"),
        ({"key_mode": "0640"}, "lets others read the key: give a group"),
        ({"key_mode": "640x"}, "write an octal mode as a string"),
        ({"colour": "blue"}, "certificate[0].colour is not a known key"),
        ({"action": {"command": ["svcadm", "restart", "x"]}}, "first item is an absolute path"),
        ({"action": {"command": ["/bin/true"], "signal": "HUP"}}, "give one action"),
        ({"action": {"signal": "HUP"}}, "pidfile is required"),
        ({"action": {"signal": "KILL", "pidfile": "/run/x.pid"}}, "must be one of HUP"),
        ({"common_name": "x" * 65}, "longer than the 64 characters"),
        ({"hosts": ["a b"]}, "neither an IP address nor a DNS name"),
        ({"hosts": ["bücher.de"]}, "xn-- form"),
        ({"cert_file": "/etc/kubernetes/pki/ca.crt"}, "is also paths.ca_file"),
        ({"key_file": "/var/lib/kubelet/pki/x.key"}, "is inside paths.pki_dir"),
        ({"ca_file": "/var/lib/join-agent/status.json"}, "is inside paths.state_dir"),
    ],
)
def test_table_mistakes_name_the_key(table: dict[str, Any], problem: str) -> None:
    assert problem in _error(_doc(**table))


def test_two_tables_with_one_name_and_the_kubernetes_signer_are_refused() -> None:
    doc = _doc()
    doc["certificate"].append(copy.deepcopy(doc["certificate"][0]))
    assert "is used by another [[certificate]]" in _error(doc)
    doc = _doc()
    doc["signer"] = {"kind": "kubernetes", "kubernetes": {"ca_pins": [PIN]}}
    assert 'need signer.kind = "cfssl"' in _error(doc)


def test_actions_become_argv_without_a_shell_unless_asked() -> None:
    def action(**a: Any) -> model.Action:
        return loading.parse(_doc(action=a), Path("/c.toml")).certificates[0].action

    assert actions.argv_for(action(command=["/bin/echo", "a; rm -rf /"])) == [
        "/bin/echo", "a; rm -rf /",
    ]  # fmt: skip
    script = action(command="kill -HUP $(cat /run/a.pid)", shell=True)  # noqa: S604
    assert actions.argv_for(script) == [
        "/bin/sh", "-c", "kill -HUP $(cat /run/a.pid)",
    ]  # fmt: skip
    assert actions.argv_for(action(smf_restart="svc:/k8s/apiserver:default")) == [
        "/usr/sbin/svcadm", "restart", "svc:/k8s/apiserver:default",
    ]  # fmt: skip
    assert actions.argv_for(action(systemd_reload="kube-apiserver.service")) == [
        "/usr/bin/systemctl", "reload-or-restart", "kube-apiserver.service",
    ]  # fmt: skip
    spec = loading.parse(_doc(), Path("/c.toml")).certificates[0]
    env = actions.environment(spec)
    assert set(env) == {
        "PATH", "LANG", "JOIN_AGENT_CERTIFICATE", "JOIN_AGENT_CERT_FILE", "JOIN_AGENT_KEY_FILE",
    }  # fmt: skip


def test_hosts_split_into_names_and_addresses() -> None:
    spec = loading.parse(
        _doc(hosts=["CP-1.example.org", "10.0.0.5", "fd00::5"], node_addresses=True),
        Path("/c.toml"),
    ).certificates[0]
    import ipaddress

    req = certificates.request_for(spec, [ipaddress.ip_address("192.0.2.7")])
    assert req.dns_names == ("cp-1.example.org",)
    assert [str(a) for a in req.addresses] == ["10.0.0.5", "fd00::5", "192.0.2.7"]


def _record(**r: Any) -> TableRecord:
    record = {
        "not_before": "2026-11-22T00:00:00Z",
        "not_after": "2026-11-23T00:00:00Z",
        "failures": 0,
        **r,
    }
    return cast("TableRecord", record)


def test_decide_issues_at_once_without_a_certificate() -> None:
    plan = tables.decide({}, "", now=NOW, retry_min=MIN, retry_max=MAX, draw=0.5)
    assert plan.issue == "no certificate yet"


def test_decide_waits_for_the_deadline_then_renews() -> None:
    # 70-90 % of a 24 h lifetime: with draw 0.5, 80 % = 19:12.
    plan = tables.decide(_record(), "", now=NOW, retry_min=MIN, retry_max=MAX, draw=0.5)
    assert plan.issue == ""
    assert plan.next_attempt == dt.datetime(2026, 11, 22, 19, 12, tzinfo=dt.timezone.utc)
    later = NOW.replace(hour=20)
    plan = tables.decide(_record(), "", now=later, retry_min=MIN, retry_max=MAX, draw=0.5)
    assert plan.issue == "renewal deadline"


def test_decide_renews_a_certificate_that_no_longer_matches_its_table() -> None:
    plan = tables.decide(
        _record(), "it no longer matches its table", now=NOW, retry_min=MIN, retry_max=MAX,
        draw=0.5,
    )  # fmt: skip
    assert plan.issue == "it no longer matches its table"


def test_decide_backs_off_after_failures_and_retries_a_failed_action() -> None:
    failing = _record(failures=3, last_attempt="2026-11-22T11:59:59Z")
    plan = tables.decide(failing, "", now=NOW, retry_min=MIN, retry_max=MAX, draw=0.5)
    assert plan.issue == ""  # still valid: backoff first
    assert NOW < plan.next_attempt <= NOW + MAX
    pending = _record(action={"pending": True, "failures": 1, "at": "2026-11-22T11:59:00Z"})
    plan = tables.decide(pending, "", now=NOW, retry_min=MIN, retry_max=MAX, draw=0.5)
    assert plan.run_action is True
    assert plan.issue == ""


def test_tables_may_share_a_ca_file_but_nothing_else() -> None:
    doc = _doc(ca_file="/etc/k/ca.crt")
    second = dict(doc["certificate"][0], name="other", cert_file="/etc/k/o.crt",
                  key_file="/etc/k/o.key")  # fmt: skip
    doc["certificate"].append(second)
    assert len(loading.parse(doc, Path("/c.toml")).certificates) == 2
    doc["certificate"][1]["cert_file"] = "/etc/k/ca.crt"
    assert "is also certificate.front-proxy.ca_file" in _error(doc)


def test_a_signal_goes_only_to_the_pid_a_root_owned_pidfile_names(tmp_path: Path) -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "x.pid"
        pidfile.write_text(f"{child.pid}\n")
        pidfile.chmod(0o666)
        spec = loading.parse(
            _doc(action={"signal": "TERM", "pidfile": str(pidfile)}), Path("/c.toml")
        ).certificates[0]
        refused = actions.run(spec)
        assert refused is not None and not refused.ok
        assert "writable by group and others" in refused.output
        assert child.poll() is None
        pidfile.chmod(0o644)
        sent = actions.run(spec)
        assert sent is not None and sent.ok, sent
        assert child.wait(timeout=5) == -15
    finally:
        child.kill()
        child.wait()


def test_a_scoped_or_link_local_host_is_refused() -> None:
    for host, said in (("fe80::1%eth0", "a scoped address"), ("fe80::1", "a link-local address")):
        with pytest.raises(ConfigError, match=f"has '{host}', {said}"):
            loading.parse(_doc(hosts=[host]), Path("/c.toml"))


def test_an_action_script_others_can_write_is_not_run(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    script = tmp_path / "reload.sh"
    script.write_text(f"#!/bin/sh\ntouch {ran}\n")
    script.chmod(0o777)
    spec = loading.parse(_doc(action={"command": [str(script)]}), Path("/c.toml")).certificates[0]
    refused = actions.run(spec)
    assert refused is not None and not refused.ok and refused.exit is None
    assert refused.output == (
        f"not run: the action of [[certificate]] {spec.name} {script} is writable by group "
        f"and others (mode 0777): run `chmod go-w {script}`"
    )
    assert not ran.exists()
    script.chmod(0o755)
    done = actions.run(spec)
    assert done is not None and done.ok and ran.exists()


def test_a_table_rotates_within_a_second_of_its_drawn_point() -> None:
    """The next pass is due at the drawn renewal point, which has a fraction of a second.
    Written down to the second it came a fraction early: that pass found nothing due, and
    the rotation waited for the next, retry_min later. Rounded up, the pass the daemon
    starts at the time the report says finds it due."""
    from join_agent.core import wire
    from join_agent.worker import certificate_files

    (spec,) = loading.parse(_doc(), Path("/c.toml")).certificates
    record: TableRecord = {
        "serial": "ab", "not_before": "2026-11-22T00:00:00Z", "not_after": "2026-11-23T00:00:00Z",
        "failures": 0, "last_success": "2026-11-22T00:00:00Z",
    }  # fmt: skip
    draw = 0.123456789
    plan = tables.decide(record, "", now=NOW, retry_min=MIN, retry_max=MAX, draw=draw)
    assert plan.issue == "" and plan.next_attempt.microsecond  # the drawn point, exact
    said = certificate_files.report(spec, record, plan.next_attempt, NOW)["next_attempt"]
    woken = wire.parse_iso(said)  # when the daemon starts the next pass
    assert dt.timedelta(0) <= woken - plan.next_attempt < dt.timedelta(seconds=1)
    then = tables.decide(record, "", now=woken, retry_min=MIN, retry_max=MAX, draw=draw)
    assert then.issue == "renewal deadline"
