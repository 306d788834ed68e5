"""Extra certificates (``[[certificate]]`` tables) against the real CFSSL CA.

Rotation timing is driven in-process with an injected clock (the certificates are real,
from `cfssl serve`; only "now" moves), so hours of lifetime pass in a second. The daemon
tests run the real `join-agent run` for what a process must show: tables issued at start,
a failing action retried and reported, a reload that adds and removes tables.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from join_agent.config import loading, model
from join_agent.host import platform
from join_agent.net import transport
from join_agent.pki import compat
from join_agent.signers import credentials
from join_agent.signers.cfssl import CfsslSigner
from join_agent.storage import trust
from join_agent.worker import certificates, passes
from tests.conftest import Node, need
from tests.lab import status_keys, toml
from tests.lab.cfssl_ca import CfsslCA, seed_config


def _profiles(auth_key_hex: str) -> dict[str, Any]:
    doc = seed_config(auth_key_hex)

    def profile(expiry: str, usages: list[str]) -> dict[str, Any]:
        return {"auth_key": "node-key", "expiry": expiry, "usages": usages, "backdate": "1s"}

    doc["signing"]["profiles"].update({
        "front-proxy": profile("1h", ["signing", "key encipherment", "client auth"]),
        "apiserver-kubelet-client": profile("1h", ["signing", "key encipherment", "client auth"]),
        "etcd-peer": profile("2h", ["signing", "key encipherment", "client auth", "server auth"]),
        "server-only": profile("1h", ["signing", "key encipherment", "server auth"]),
    })  # fmt: skip
    return doc


@pytest.fixture(scope="module")
def cp_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CfsslCA]:
    import shutil

    if not shutil.which("cfssl"):
        need("cfssl", "apt-get install golang-cfssl")
    ca = CfsslCA(tmp_path_factory.mktemp("cp-ca"))
    ca.write_config(_profiles(ca.auth_key_hex))
    ca.start()
    yield ca
    ca.stop()


@pytest.fixture
def host(tmp_path: Path, cp_ca: CfsslCA) -> Node:
    n = Node(root=tmp_path / "host", ca=cp_ca)
    n.root.mkdir()
    cp_ca.write_auth_key(n.auth_key)
    n.write_config(kubelet={"manage": False})
    return n


def _recorder(root: Path) -> Path:
    """An action that appends one line per run (its name, argv and whole environment)."""
    script = root / "record.sh"
    script.write_text(
        "#!/bin/sh\n"
        "echo \"$JOIN_AGENT_CERTIFICATE $* $(env | sort | tr '\\n' ' ')\" >> \"$0.log\"\n"
        'exit "${FAIL:-0}"\n'
    )
    script.chmod(0o755)
    return script


def _tables(
    root: Path,
    script: Path,
    actions: Mapping[str, Mapping[str, Any]] | None = None,
    /,
    **extra: dict[str, Any],
) -> str:
    """The two control-plane tables (and ``extra`` ones), each with a recorder command as
    its action unless ``actions`` names another."""
    out = root / "out"
    tables = {
        **extra,  # first: a broken extra table must not stop the ones after it
        "front-proxy": {
            "profile": "front-proxy",
            "common_name": "front-proxy-client",
            "cert_file": str(out / "front-proxy-client.crt"),
            "key_file": str(out / "front-proxy-client.key"),
            "ca_file": str(out / "front-proxy-ca.crt"),
            "action": {"command": [str(script), "front-proxy"]},
        },
        "etcd-peer": {
            "profile": "etcd-peer",
            "common_name": "etcd-peer",
            "organization": ["etcd"],
            "organizational_unit": ["control-plane"],
            "hosts": ["cp-1.example.org", "10.0.0.5"],
            "usages": ["client auth", "server auth"],
            "key": "rsa-2048",
            "cert_file": str(out / "etcd-peer.crt"),
            "key_file": str(out / "etcd-peer.key"),
            "key_mode": "0640",
            "group": "root",
            "action": {"command": [str(script), "etcd"]},
        },
    }
    text = ""
    for name, t in tables.items():
        action = (actions or {}).get(name, t.pop("action", None))
        t.pop("action", None)
        text += toml.table("[certificate]", {"name": name, **t}).replace(
            "[[[certificate]]]", "[[certificate]]"
        )
        if action:
            text += toml.table("certificate.action", action)
    return text


def _write(host: Node, text: str) -> model.Config:
    base = host.config.read_text().split("[[certificate]]")[0]
    host.config.write_text(base + text)
    return loading.load(host.config)


class Clock:
    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset


def _pass(cfg: model.Config, clock: Clock) -> dict[str, dict[str, Any]]:
    key = credentials.cfssl_auth_key(cfg.cfssl.auth_key_file, {})
    pins = trust.effective_pins(cfg.cfssl.ca_pins, False, cfg.paths.state_dir)
    with transport.client_for(cfg.cfssl.urls) as client:
        signer = CfsslSigner(cfg.cfssl, key, client, pins=pins, now=clock)
        reports = certificates.run_due(cfg, signer, (), now=clock)
    return {r["name"]: dict(r) for r in reports}  # looked into freely below


def _runs(script: Path) -> list[str]:
    log = Path(f"{script}.log")
    return log.read_text().splitlines() if log.exists() else []


def _cert(path: Path) -> x509.Certificate:
    return compat.load_pem_certificates(path.read_bytes())[0]


def test_tables_issue_rotate_independently_and_act_once_per_rotation(host: Node) -> None:
    script = _recorder(host.root)
    cfg = _write(host, _tables(host.root, script))
    clock = Clock()
    first = _pass(cfg, clock)
    assert {r["state"] for r in first.values()} == {"valid"}
    runs = _runs(script)
    assert sorted(r.split()[0] for r in runs) == ["etcd-peer", "front-proxy"]
    out = host.root / "out"
    fp = _cert(out / "front-proxy-client.crt")
    assert fp.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "front-proxy-client"
    eku = fp.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert compat.signed_by(fp, _cert(out / "front-proxy-ca.crt"))
    etcd = _cert(out / "etcd-peer.crt")
    sans = etcd.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["cp-1.example.org"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert stat.S_IMODE((out / "etcd-peer.key").stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "front-proxy-client.key").stat().st_mode) == 0o600
    # The key file and the certificate file are one pair.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((out / "etcd-peer.key").read_bytes(), None)
    assert key.public_key().public_numbers() == etcd.public_key().public_numbers()  # type: ignore[union-attr]

    # A pass with nothing due does nothing: no new certificate, no action.
    assert _pass(cfg, clock)["front-proxy"]["serial"] == first["front-proxy"]["serial"]
    assert len(_runs(script)) == 2
    # 55 minutes later the 1 h certificate is past 70-90 % of its life; the 2 h one is not.
    clock.offset = dt.timedelta(minutes=55)
    later = _pass(cfg, clock)
    assert later["front-proxy"]["serial"] != first["front-proxy"]["serial"]
    assert later["etcd-peer"]["serial"] == first["etcd-peer"]["serial"]
    assert [r.split()[0] for r in _runs(script)][2:] == ["front-proxy"]
    assert _cert(out / "front-proxy-client.crt").serial_number != fp.serial_number
    # The action's environment carries no secret, and nothing of ours.
    for line in _runs(script):
        assert host.ca.auth_key_hex not in line
        assert "CREDENTIALS_DIRECTORY" not in line and "NOTIFY_SOCKET" not in line


def test_a_service_several_tables_feed_is_acted_on_once_after_all_of_them(host: Node) -> None:
    """Both tables restart kube-apiserver, which reads both: one restart a pass, once both
    are installed (svc.startd counts every start; a second one right after the first only
    brings the service nearer maintenance)."""
    restart = {"smf_restart": "svc:/system/kubernetes/kube-apiserver:default"}
    script = _recorder(host.root)
    cfg = _write(host, _tables(host.root, script, {"front-proxy": restart, "etcd-peer": restart}))
    out = host.root / "out"
    calls: list[tuple[str, set[str]]] = []

    def run_action(spec: model.CertificateSpec) -> None:
        calls.append((spec.action.argv[0], {p.name for p in out.iterdir()}))

    clock = Clock()
    with transport.client_for(cfg.cfssl.urls) as client:
        key = credentials.cfssl_auth_key(cfg.cfssl.auth_key_file, {})
        pins = trust.effective_pins(cfg.cfssl.ca_pins, False, cfg.paths.state_dir)
        signer = CfsslSigner(cfg.cfssl, key, client, pins=pins, now=clock)
        reports = certificates.run_due(cfg, signer, (), now=clock, run_action=run_action)
        assert [c[0] for c in calls] == [restart["smf_restart"]]  # once, for both
        assert {"front-proxy-client.crt", "etcd-peer.crt"} <= calls[0][1]  # after both
        assert {r["name"]: r["action"]["ok"] for r in reports} == {
            "front-proxy": True, "etcd-peer": True
        }  # fmt: skip
        # Nothing due in the next pass: no restart at all. (A command is the table's own:
        # test_tables_issue_rotate_independently_… has one run per table.)
        certificates.run_due(cfg, signer, (), now=clock, run_action=run_action)
        assert len(calls) == 1


def test_a_failing_action_is_retried_and_reported(host: Node) -> None:
    script = _recorder(host.root)
    failing = host.root / "fail.sh"
    failing.write_text('#!/bin/sh\necho "apiserver did not reload" >&2\nexit 3\n')
    failing.chmod(0o755)
    text = _tables(host.root, script).replace(
        f'command = ["{script}", "front-proxy"]', f'command = ["{failing}"]'
    )
    cfg = _write(host, text)
    clock = Clock()
    report = _pass(cfg, clock)["front-proxy"]
    assert report["action"]["pending"] is True
    assert report["action"]["exit"] == 3
    assert "apiserver did not reload" in report["action"]["output"]
    serial = report["serial"]
    # Retried after the backoff, without a new certificate; still reported.
    clock.offset = dt.timedelta(minutes=10)
    again = _pass(cfg, clock)["front-proxy"]
    assert again["serial"] == serial
    assert again["action"]["failures"] == 2
    r = host.run("status", "--json")
    doc = json.loads(r.stdout)
    assert any("front-proxy: its command action failed" in p for p in doc["problems"])
    # Fixed: the next retry succeeds and the problem is gone.
    failing.write_text("#!/bin/sh\nexit 0\n")
    clock.offset = dt.timedelta(minutes=30)
    fixed = _pass(cfg, clock)["front-proxy"]
    assert fixed["action"]["pending"] is False
    assert fixed["serial"] == serial


def test_a_profile_that_does_not_grant_the_usage_is_refused(host: Node) -> None:
    script = _recorder(host.root)
    text = _tables(host.root, script).replace('profile = "front-proxy"', 'profile = "server-only"')
    cfg = _write(host, text)
    report = _pass(cfg, Clock())["front-proxy"]
    assert report["state"] == "none"
    assert "lacks the client-auth extended key usage" in report["last_error"]["message"]
    assert not (host.root / "out" / "front-proxy-client.crt").exists()
    assert [r.split()[0] for r in _runs(script)] == ["etcd-peer"]  # no action for a refusal


def test_action_runs_without_a_shell_unless_asked(host: Node) -> None:
    script = _recorder(host.root)
    marker = host.root / "injected"
    text = _tables(host.root, script).replace(
        f'command = ["{script}", "front-proxy"]',
        f'command = ["{script}", "; touch {marker}"]',
    )
    _pass(_write(host, text), Clock())
    assert not marker.exists()  # the argument stayed an argument
    assert any(f"; touch {marker}" in r for r in _runs(script))


# ---------------------------------------------------------------- the daemon


def _named(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc.get("certificates") or []}


def test_the_daemon_keeps_the_tables_and_reloads_them(host: Node) -> None:
    script = _recorder(host.root)
    text = _tables(host.root, script)
    _write(host, text)
    daemon = host.start()
    try:
        doc = host.wait_status(lambda d: len(_named(d)) == 2 and all(
            c["state"] == "valid" for c in _named(d).values()))  # fmt: skip
        assert doc["agent"]["running"] is True
        text_out = host.run("status").stdout
        assert "Certificate:  front-proxy: valid" in text_out
        # Reload: etcd-peer's table removed, a new one added.
        new = _tables(host.root, script, **{"kubelet-client": {
            "profile": "front-proxy", "common_name": "kube-apiserver-kubelet-client",
            "organization": ["system:masters"],
            "cert_file": str(host.root / "out" / "apiserver-kubelet-client.crt"),
            "key_file": str(host.root / "out" / "apiserver-kubelet-client.key"),
        }})  # fmt: skip
        start = new.index('[[certificate]]\nname = "etcd-peer"')
        end = new.find("[[certificate]]", start + 5) % (len(new) + 1)  # -1: to the end
        _write(host, new[:start] + new[end:])
        daemon.send_signal(signal.SIGHUP)
        doc = host.wait_status(lambda d: _named(d).get("kubelet-client", {}).get("state") == "valid"
            and _named(d).get("etcd-peer", {}).get("state") == "removed",
        )  # fmt: skip
        assert (host.root / "out" / "etcd-peer.crt").exists()  # left on disk
        assert "removed" in _named(doc)["etcd-peer"]["message"]
        assert status_keys.undocumented(doc) == set()  # docs/status.md lists every key
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
    assert sorted(r.split()[0] for r in _runs(script)) == ["etcd-peer", "front-proxy"]
    # The worker child's lines are in the daemon's log, each rotation and action, tagged.
    assert daemon.stderr is not None
    lines = [json.loads(ln) for ln in daemon.stderr.read().splitlines() if ln.startswith("{")]
    by_worker = [ln for ln in lines if ln.get("worker") == "certificates"]
    for event in ("certificate_rotated", "certificate_action_ran"):
        assert {ln["name"] for ln in by_worker if ln["event"] == event} >= {
            "front-proxy", "etcd-peer"
        }, event  # fmt: skip
    assert all(ln["pid"] != daemon.pid for ln in by_worker)


def test_a_rotation_whose_record_was_lost_is_finished_not_repeated(host: Node) -> None:
    """A pass killed between installing a pair and recording it: the next pass exports that
    pair and runs the action, without asking the CA for another certificate."""
    script = _recorder(host.root)
    cfg = _write(host, _tables(host.root, script))
    clock = Clock()
    first = _pass(cfg, clock)["front-proxy"]
    record_path = host.state / "certificates" / "front-proxy.json"
    record = json.loads(record_path.read_text())
    record.update(serial="0", action={"pending": False})  # as before the rotation
    record_path.write_text(json.dumps(record))
    (host.root / "out" / "front-proxy-client.crt").unlink()
    again = _pass(cfg, clock)["front-proxy"]
    assert again["serial"] == first["serial"]
    assert (host.root / "out" / "front-proxy-client.crt").exists()
    assert [r.split()[0] for r in _runs(script)].count("front-proxy") == 2


def test_one_broken_table_does_not_stop_the_others(host: Node) -> None:
    script = _recorder(host.root)
    text = _tables(host.root, script, **{"broken": {
        "profile": "front-proxy", "common_name": "broken", "owner": "no-such-user-here",
        "cert_file": str(host.root / "out" / "b.crt"), "key_file": str(host.root / "out" / "b.key"),
    }})  # fmt: skip
    reports = _pass(_write(host, text), Clock())
    assert reports["broken"]["state"] in ("none", "failing")
    assert "no-such-user-here" in reports["broken"]["last_error"]["message"]
    assert reports["front-proxy"]["state"] == reports["etcd-peer"]["state"] == "valid"


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "control-plane.toml"
SHOW_ADDR = Path(__file__).resolve().parents[1] / "data" / "ipadm-show-addr.txt"


def _on_illumos(
    host: Node, monkeypatch: pytest.MonkeyPatch, ipadm: str
) -> tuple[model.Config, Path, Path]:
    """examples/control-plane.toml on a host forced to be illumos, with stand-ins for
    ipadm (``ipadm``: its script), svcadm (logging) and svcs (online); (config, out, bin)."""
    out, bin_dir = host.root / "out", host.root / "bin"
    bin_dir.mkdir()
    fakes = {
        "ipadm": ipadm,
        "svcadm": '#!/bin/sh\necho "$*" >>$0.log\n',
        "svcs": "#!/bin/sh\necho online\n",  # each service came back (actions._came_back)
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    tables = EXAMPLE.read_text().split("[[certificate]]", 1)[1]
    tables = tables.replace("/etc/opt/ooce/", f"{out}/").replace('group = "etcd"', 'group = "root"')
    doc = host.base_config()
    doc["node"] = {"name": "cp-1"}  # no [node] addresses: discovered
    host.config.write_text(toml.document(doc) + "[[certificate]]" + tables)
    real_tool = platform.tool
    monkeypatch.setattr(platform, "current", lambda: platform.ILLUMOS)
    monkeypatch.setattr(
        platform, "tool", lambda n: str(bin_dir / n) if n in fakes else real_tool(n)
    )
    cfg = loading.load(host.config)
    assert [t.name for t in cfg.certificates] == [
        "front-proxy-client", "apiserver-kubelet-client", "etcd-peer"
    ]  # fmt: skip

    return cfg, out, bin_dir


def test_the_control_plane_example_on_illumos_acts_once_a_pass(
    host: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/control-plane.toml with the platform forced to illumos: all three tables
    are issued, the etcd peer certificate carries the addresses ipadm reports (a stand-in
    ipadm printing tests/data/ipadm-show-addr.txt; no netlink is asked), and each service
    is acted on once a pass, after all its certificates are in place: kube-apiserver
    restarted once for two tables, etcd refreshed once. Its paths are moved into this
    test's directory, its CA is the lab's, and its group is root (no etcd user here)."""
    ipadm = f"#!/bin/sh\ncat {SHOW_ADDR}\n"  # what OmniOS prints (test_ipadm.py)
    cfg, out, bin_dir = _on_illumos(host, monkeypatch, ipadm)
    reports = passes.certificates_once(cfg, {})

    assert {r["name"]: r["state"] for r in reports} == dict.fromkeys(
        ("front-proxy-client", "apiserver-kubelet-client", "etcd-peer"), "valid"
    )
    svcadm_log = bin_dir / "svcadm.log"
    assert svcadm_log.read_text().splitlines() == [
        "restart svc:/system/kubernetes/kube-apiserver:default",
        "refresh svc:/database/etcd:default",
    ]
    peer = _cert(out / "etcd" / "pki" / "peer.crt")
    sans = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(str(a) for a in sans.get_values_for_type(x509.IPAddress)) == [
        "10.0.2.15", "172.16.111.5", "192.168.1.20", "2001:db8:1:2::20"
    ]  # fmt: skip
    assert sans.get_values_for_type(x509.DNSName) == ["cp-1", "cp-1.example.org"]
    # The next pass has nothing due: no restart, no refresh.
    passes.certificates_once(cfg, {})
    assert len(svcadm_log.read_text().splitlines()) == 2


def test_addresses_that_cannot_be_found_fail_only_the_table_that_wants_them(
    host: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ipadm fails: the etcd peer table (node_addresses = true) fails with ipadm's own
    sentence; the apiserver's two are issued all the same (one pass used to resolve the
    addresses for all, and fail them all)."""
    ipadm = '#!/bin/sh\necho "ipadm: cannot connect to ipmgmtd" >&2\nexit 1\n'
    cfg, _out, bin_dir = _on_illumos(host, monkeypatch, ipadm)
    reports = {r["name"]: r for r in passes.certificates_once(cfg, {})}
    assert reports["front-proxy-client"]["state"] == "valid"
    assert reports["apiserver-kubelet-client"]["state"] == "valid"
    assert reports["etcd-peer"]["state"] == "failing"
    error = reports["etcd-peer"].get("last_error")
    said = error["message"] if error else ""
    assert said.startswith("[[certificate]] etcd-peer wants the node's addresses: cannot list")
    assert "ipadm: cannot connect to ipmgmtd" in said and "set [node] addresses" in said
    assert (bin_dir / "svcadm.log").read_text().splitlines() == [
        "restart svc:/system/kubernetes/kube-apiserver:default"
    ]
