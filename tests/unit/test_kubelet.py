"""The kubelet supervisor's state machine with a recording process table and a hand clock,
and the pure helpers around it (argv, environment, conflicts, backoff).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from join_agent.core import schedule
from join_agent.core.protocol import WorkerResult
from join_agent.kubelet import command, processes, settings, supervisor
from join_agent.kubelet.processes import KubeletError
from join_agent.kubelet.supervisor import KubeletSupervisor
from tests.standins import FakeProcesses

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
BASE = dt.timedelta(seconds=1)
CAP = dt.timedelta(seconds=60)
STABLE = dt.timedelta(seconds=30)
GRACE = dt.timedelta(seconds=10)
ARGV = ["/usr/bin/kubelet", "--kubeconfig=/etc/kubernetes/kubelet.conf"]


def state_of(sup: KubeletSupervisor) -> str:
    return sup.state  # a plain str: mypy would keep the Literal narrowed across calls


def iso(t: dt.datetime) -> str:
    """status.json's time format: UTC, to the second."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def make(
    tmp_path: Path,
    procs: FakeProcesses,
    draw: Callable[[], float] = lambda: 0.5,
    **kw: dt.timedelta,
) -> KubeletSupervisor:
    return KubeletSupervisor(
        ARGV,
        {"PATH": "/usr/bin"},
        tmp_path / "run" / "kubelet.pid",
        kw.pop("stop_grace", GRACE),
        procs=procs,
        draw=draw,
        backoff_base=kw.pop("backoff_base", BASE),
        backoff_cap=kw.pop("backoff_cap", CAP),
        stable_after=kw.pop("stable_after", STABLE),
    )


@pytest.fixture
def procs() -> FakeProcesses:
    return FakeProcesses(dies_on={signal.SIGTERM, signal.SIGKILL})


# --- argv and environment -------------------------------------------------------------------


def test_argv_appends_kubeconfig_and_node_name() -> None:
    argv = command.kubelet_argv(
        ["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"],
        Path("/etc/kubernetes/kubelet.conf"),
        "worker-1",
    )
    assert argv == [
        "/usr/bin/kubelet",
        "--config=/var/lib/kubelet/config.yaml",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--hostname-override=worker-1",
    ]


def test_env_strips_notify_watchdog_credentials_and_socket_activation() -> None:
    environ = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "JOURNAL_STREAM": "8:1234",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "42",
        "CREDENTIALS_DIRECTORY": "/run/credentials/join-agent.service",
        "LISTEN_FDS": "1",
        "LISTEN_PID": "42",
        "LISTEN_FDNAMES": "metrics",
    }
    assert command.kubelet_env(environ) == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "JOURNAL_STREAM": "8:1234",
    }
    assert "NOTIFY_SOCKET" in environ  # the input is not changed


# --- the state machine ----------------------------------------------------------------------


def test_start_spawns_and_writes_the_pidfile(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs)
    assert sup.snapshot()["state"] == "stopped"
    wake = sup.start(at(0))
    assert procs.calls[0] == ("spawn", ARGV, {"PATH": "/usr/bin"})
    assert state_of(sup) == "starting"
    assert sup.pid == 1001
    assert wake == at(30)  # stable_after
    assert sup.pidfile.read_text() == "1001 t1001\n"
    assert sup.snapshot() == {
        "state": "starting",
        "pid": 1001,
        "restarts": 0,
        "consecutive_failures": 0,
        "since": iso(at(0)),
        "last_exit": None,
        "last_error": None,
        "next_start": None,
        "restart_delay": None,
    }
    assert sup.start(at(1)) == at(30)  # idempotent
    assert procs.spawns == 1


def test_starting_becomes_running_after_stable_after(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs)
    sup.start(at(0))
    assert sup.tick(at(29.9)) == at(30)
    assert state_of(sup) == "starting"
    assert sup.tick(at(30)) is None  # running: only the child's exit changes anything
    assert state_of(sup) == "running"
    assert sup.snapshot()["since"] == iso(at(30))
    assert sup.tick(at(3600)) is None
    assert state_of(sup) == "running"


def test_exit_while_starting_backs_off_then_starts_again(
    tmp_path: Path, procs: FakeProcesses
) -> None:
    sup = make(tmp_path, procs)
    sup.start(at(0))
    procs.exit(1001, 2)
    wake = sup.tick(at(0.5))
    assert state_of(sup) == "backoff"
    assert wake == at(1.5)  # first failure: exactly the base delay
    snap = sup.snapshot()
    assert snap["pid"] is None
    assert snap["last_exit"] == 2
    assert snap["consecutive_failures"] == 1
    assert snap["next_start"] == iso(at(1.5))
    assert snap["restart_delay"] == 1.0
    assert snap["last_error"] == "kubelet (pid 1001) exited with status 2"
    assert not sup.pidfile.exists()
    assert sup.tick(at(1.4)) == at(1.5)
    assert procs.spawns == 1
    assert sup.tick(at(1.5)) == at(31.5)
    assert state_of(sup) == "starting"
    assert sup.pid == 1002
    assert sup.snapshot()["restarts"] == 1
    assert sup.pidfile.read_text() == "1002 t1002\n"


def test_exit_by_signal_is_described(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs)
    sup.start(at(0))
    procs.exit(1001, -signal.SIGKILL)
    sup.tick(at(1))
    assert sup.snapshot()["last_exit"] == -9
    assert sup.last_error == "kubelet (pid 1001) exited with signal SIGKILL"


def crash(sup: KubeletSupervisor, procs: FakeProcesses, now: dt.datetime) -> dt.timedelta:
    """Let the current child exit at ``now``; the backoff delay that follows."""
    assert sup.pid is not None
    procs.exit(sup.pid, 1)
    wake = sup.tick(now)
    assert state_of(sup) == "backoff"
    assert wake is not None
    return wake - now


def test_backoff_grows_to_the_cap_and_stays(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs, draw=lambda: 0.999999)
    now = at(0)
    sup.start(now)
    delays = []
    for _ in range(10):
        now += dt.timedelta(seconds=0.2)
        delay = crash(sup, procs, now)
        delays.append(round(delay.total_seconds()))
        now += delay
        sup.tick(now)
        assert state_of(sup) == "starting"
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert sup.snapshot()["consecutive_failures"] == 10
    assert sup.snapshot()["restarts"] == 10


def test_backoff_is_full_jitter_between_base_and_ceiling(
    tmp_path: Path, procs: FakeProcesses
) -> None:
    draws = iter([0.0, 0.5, 0.25])
    sup = make(tmp_path, procs, draw=lambda: next(draws))
    sup.start(at(0))
    assert crash(sup, procs, at(1)) == dt.timedelta(seconds=1)  # n=1: [1, 1]
    sup.tick(at(2))
    assert crash(sup, procs, at(3)) == dt.timedelta(seconds=1.5)  # n=2: [1, 2] at 0.5
    sup.tick(at(5))
    assert crash(sup, procs, at(6)) == dt.timedelta(seconds=1.75)  # n=3: [1, 4] at 0.25


@given(
    failures=st.integers(min_value=1, max_value=10_000),  # the supervisor counts from 1
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_the_restart_backoff_stays_between_base_and_cap(failures: int, draw: float) -> None:
    delay = schedule.restart_delay(failures, BASE, CAP, draw)
    assert BASE <= delay <= CAP
    assert delay.total_seconds() <= BASE.total_seconds() * 2.0 ** min(max(failures - 1, 0), 64)


def test_a_stable_run_resets_the_backoff(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs, draw=lambda: 0.999999)
    now = at(0)
    sup.start(now)
    for _ in range(5):
        now += dt.timedelta(seconds=1)
        now += crash(sup, procs, now)
        sup.tick(now)
    assert sup.snapshot()["consecutive_failures"] == 5
    now += STABLE
    sup.tick(now)
    assert state_of(sup) == "running"
    assert sup.snapshot()["consecutive_failures"] == 0
    assert sup.snapshot()["restarts"] == 5  # the total is kept
    now += dt.timedelta(hours=5)
    assert crash(sup, procs, now) == BASE  # back to the first step


def test_spawn_failure_backs_off_and_never_gives_up(tmp_path: Path, procs: FakeProcesses) -> None:
    procs.spawn_error = FileNotFoundError(2, "No such file or directory")
    sup = make(tmp_path, procs, draw=lambda: 0.999999)
    now = at(0)
    wake = sup.start(now)
    assert state_of(sup) == "backoff"
    assert sup.last_error == "cannot start /usr/bin/kubelet: No such file or directory"
    for _ in range(50):
        assert wake is not None
        now = wake
        wake = sup.tick(now)
        assert state_of(sup) == "backoff"
    assert procs.spawns == 51
    assert wake is not None
    assert wake - now <= CAP
    assert not sup.pidfile.exists()
    procs.spawn_error = None  # the binary was installed
    sup.tick(wake)
    assert state_of(sup) == "starting"
    assert sup.snapshot()["restarts"] == 0  # the first child that ever ran


def test_stop_sends_sigterm_to_the_group_and_reaps(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs)
    sup.start(at(0))
    sup.tick(at(40))
    wake = sup.stop(at(50))
    assert procs.sent == [(1001, signal.SIGTERM)]
    assert state_of(sup) == "stopping"
    assert wake == at(50) + supervisor.STOP_POLL
    assert sup.tick(at(50.1)) is None
    assert state_of(sup) == "stopped"
    snap = sup.snapshot()
    assert snap["last_exit"] == -signal.SIGTERM
    assert snap["consecutive_failures"] == 0  # a requested stop is not a failure
    assert snap["restarts"] == 0
    assert snap["pid"] is None
    assert not sup.pidfile.exists()
    assert procs.spawns == 1


def test_stop_escalates_to_sigkill_after_stop_grace(tmp_path: Path) -> None:
    procs = FakeProcesses(dies_on={signal.SIGKILL})  # ignores SIGTERM
    sup = make(tmp_path, procs)
    sup.start(at(0))
    sup.stop(at(1))
    for t in (1.1, 5, 10.9):
        assert sup.tick(at(t)) == min(at(11), at(t) + supervisor.STOP_POLL)
        assert state_of(sup) == "stopping"
    assert procs.sent == [(1001, signal.SIGTERM)]
    sup.tick(at(11))
    assert procs.sent == [(1001, signal.SIGTERM), (1001, signal.SIGKILL)]
    assert state_of(sup) == "stopping"  # reaped at the next tick
    assert sup.tick(at(11.1)) is None
    assert state_of(sup) == "stopped"
    assert sup.snapshot()["last_exit"] == -signal.SIGKILL
    assert len(procs.sent) == 2


def test_sigkill_is_sent_once(tmp_path: Path) -> None:
    procs = FakeProcesses()  # a child stuck in uninterruptible sleep ignores even SIGKILL
    sup = make(tmp_path, procs)
    sup.start(at(0))
    sup.stop(at(0))
    for t in (10, 11, 12, 60):
        assert sup.tick(at(t)) == at(t) + supervisor.STOP_POLL
    assert procs.sent == [(1001, signal.SIGTERM), (1001, signal.SIGKILL)]
    assert state_of(sup) == "stopping"


def test_stop_is_idempotent_and_cancels_a_backoff(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs)
    assert sup.stop(at(0)) is None
    assert state_of(sup) == "stopped"
    sup.start(at(0))
    crash(sup, procs, at(1))
    assert sup.stop(at(1.5)) is None
    assert state_of(sup) == "stopped"
    assert sup.snapshot()["next_start"] is None
    assert sup.tick(at(100)) is None
    assert procs.spawns == 1
    assert procs.sent == []
    sup.start(at(200))
    procs.dies_on.clear()
    sup.stop(at(201))
    sup.stop(at(202))
    assert procs.sent == [(1002, signal.SIGTERM)]


def test_restart_stops_then_starts_at_once(tmp_path: Path, procs: FakeProcesses) -> None:
    sup = make(tmp_path, procs)
    sup.start(at(0))
    sup.tick(at(40))
    sup.restart(at(100))
    assert procs.sent == [(1001, signal.SIGTERM)]
    assert state_of(sup) == "stopping"
    sup.tick(at(100.1))
    assert state_of(sup) == "starting"
    assert sup.pid == 1002
    snap = sup.snapshot()
    assert snap["restarts"] == 1
    assert snap["consecutive_failures"] == 0
    assert snap["last_exit"] == -signal.SIGTERM
    assert sup.pidfile.read_text() == "1002 t1002\n"


def test_restart_escalates_like_stop(tmp_path: Path) -> None:
    procs = FakeProcesses(dies_on={signal.SIGKILL})
    sup = make(tmp_path, procs)
    sup.start(at(0))
    sup.restart(at(1))
    sup.tick(at(11))
    sup.tick(at(11.1))
    assert procs.sent == [(1001, signal.SIGTERM), (1001, signal.SIGKILL)]
    assert state_of(sup) == "starting"
    assert sup.pid == 1002


def test_restart_cuts_a_backoff_short_and_starts_a_stopped_one(
    tmp_path: Path, procs: FakeProcesses
) -> None:
    sup = make(tmp_path, procs)
    sup.restart(at(0))
    assert state_of(sup) == "starting"
    crash(sup, procs, at(1))
    sup.restart(at(1.1))
    assert state_of(sup) == "starting"
    assert sup.pid == 1002
    assert procs.sent == []


def test_stop_after_restart_cancels_the_start(tmp_path: Path) -> None:
    procs = FakeProcesses(dies_on={signal.SIGKILL})
    sup = make(tmp_path, procs)
    sup.start(at(0))
    sup.restart(at(1))
    sup.stop(at(2))
    sup.tick(at(11))
    sup.tick(at(11.1))
    assert state_of(sup) == "stopped"
    assert procs.spawns == 1


def test_start_while_stopping_starts_after_the_stop(tmp_path: Path) -> None:
    procs = FakeProcesses()
    sup = make(tmp_path, procs)
    sup.start(at(0))
    sup.stop(at(1))
    sup.start(at(2))
    assert state_of(sup) == "stopping"
    procs.exit(1001, 0)
    sup.tick(at(3))
    assert state_of(sup) == "starting"
    assert sup.pid == 1002


def test_a_clock_stepped_back_does_not_lengthen_a_backoff(
    tmp_path: Path, procs: FakeProcesses
) -> None:
    sup = make(tmp_path, procs)
    sup.start(at(1000))
    crash(sup, procs, at(1000))  # next start at 1001
    wake = sup.tick(at(-3600))  # NTP stepped the clock back an hour
    assert wake == at(-3599)
    sup.tick(at(-3599))
    assert state_of(sup) == "starting"


def test_pidfile_write_failure_does_not_stop_the_kubelet(
    tmp_path: Path, procs: FakeProcesses
) -> None:
    (tmp_path / "run").write_text("a file where the directory should be")
    sup = make(tmp_path, procs)
    sup.start(at(0))
    assert state_of(sup) == "starting"


# --- conflicts --------------------------------------------------------------------------


def check(argv: list[str], active: bool = False) -> list[str]:
    return settings.conflicts(argv, read_file=settings.read_text, unit_active=lambda _: active)


def config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


CLEAN_YAML = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
rotateCertificates: false
serverTLSBootstrap: false
"""


def test_a_clean_setup_has_no_conflicts(tmp_path: Path) -> None:
    path = config(tmp_path, CLEAN_YAML)
    assert check(["/usr/bin/kubelet", f"--config={path}"]) == []
    assert check(["/usr/bin/kubelet"]) == []  # no config file: nothing to read


@pytest.mark.parametrize(
    "flags",
    [
        ["--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf"],
        ["--bootstrap-kubeconfig", "/etc/kubernetes/bootstrap-kubelet.conf"],
        ["--v=2", "--bootstrap-kubeconfig"],
    ],
)
def test_bootstrap_kubeconfig_conflicts(flags: list[str]) -> None:
    [found] = check(["/usr/bin/kubelet", *flags])
    assert "--bootstrap-kubeconfig" in found


def test_flags_after_double_dash_are_not_flags() -> None:
    assert check(["/usr/bin/kubelet", "--", "--bootstrap-kubeconfig=x"]) == []


@pytest.mark.parametrize("form", ["equals", "space"])
def test_rotate_certificates_in_yaml_config(tmp_path: Path, form: str) -> None:
    path = config(tmp_path, "kind: KubeletConfiguration\nrotateCertificates: true\n")
    flags = [f"--config={path}"] if form == "equals" else ["--config", str(path)]
    [found] = check(["/usr/bin/kubelet", *flags])
    assert f"rotateCertificates is true in {path}" in found


def test_server_tls_bootstrap_in_json_config(tmp_path: Path) -> None:
    path = config(tmp_path, json.dumps({"serverTLSBootstrap": True}), "config.json")
    [found] = check(["/usr/bin/kubelet", f"--config={path}"])
    assert f"serverTLSBootstrap is true in {path}" in found


def test_both_rotations_and_a_kubelet_service_are_all_reported(tmp_path: Path) -> None:
    path = config(tmp_path, "rotateCertificates: true\nserverTLSBootstrap: yes\n")
    found = check(
        ["/usr/bin/kubelet", f"--config={path}", "--bootstrap-kubeconfig=/x"], active=True
    )
    assert len(found) == 4
    assert "kubelet.service is active" in found[3]


def test_the_command_line_overrides_the_config_file(tmp_path: Path) -> None:
    path = config(tmp_path, "rotateCertificates: true\nserverTLSBootstrap: false\n")
    assert check(["k", f"--config={path}", "--rotate-certificates=false"]) == []
    [found] = check(
        ["k", f"--config={path}", "--rotate-certificates=0", "--rotate-server-certificates"]
    )
    assert "--rotate-server-certificates" in found
    # A boolean flag takes no separate value: "false" is an argument, the flag is set.
    assert len(check(["k", f"--config={path}", "--rotate-certificates", "false"])) == 1


def test_an_unreadable_config_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    [found] = check(["/usr/bin/kubelet", f"--config={missing}"])
    assert f"cannot read the kubelet config file {missing}" in found


@pytest.mark.parametrize(
    ("text", "why"),
    [("rotateCertificates: [true\n", "neither JSON nor YAML"), ("- a\n- b\n", "not a mapping")],
)
def test_an_invalid_config_file_is_reported(tmp_path: Path, text: str, why: str) -> None:
    path = config(tmp_path, text)
    [found] = check(["/usr/bin/kubelet", f"--config={path}"])
    assert f"the kubelet config file {path} is invalid" in found
    assert why in found


def test_an_active_kubelet_service_conflicts() -> None:
    asked: list[str] = []

    def active(unit: str) -> bool:
        asked.append(unit)
        return True

    found = settings.conflicts(
        ["/usr/bin/kubelet"], read_file=settings.read_text, unit_active=active
    )
    assert asked == ["kubelet.service"]
    assert len(found) == 1


def test_serving_cert_file(tmp_path: Path) -> None:
    rel = config(tmp_path, "tlsCertFile: pki/kubelet.crt\n")
    assert settings.serving_cert_file(["k", f"--config={rel}"], settings.read_text) == (
        tmp_path / "pki" / "kubelet.crt"
    )
    absolute = config(tmp_path, "tlsCertFile: /var/lib/kubelet/pki/x.pem\n", "abs.yaml")
    assert settings.serving_cert_file(["k", f"--config={absolute}"], settings.read_text) == Path(
        "/var/lib/kubelet/pki/x.pem"
    )
    flag = ["k", f"--config={absolute}", "--tls-cert-file", "/etc/serving.pem"]
    assert settings.serving_cert_file(flag, settings.read_text) == Path("/etc/serving.pem")
    none = config(tmp_path, CLEAN_YAML, "none.yaml")
    assert settings.serving_cert_file(["k", f"--config={none}"], settings.read_text) is None
    assert settings.serving_cert_file(["k"], settings.read_text) is None
    missing = ["k", f"--config={tmp_path / 'missing'}"]
    assert settings.serving_cert_file(missing, settings.read_text) is None


def test_the_settings_facts_say_whether_the_kubelet_serves_our_certificate(
    tmp_path: Path,
) -> None:
    from join_agent.config import loading

    def facts(*flags: str) -> WorkerResult:
        doc = {
            "cluster": {"server": "https://10.0.0.5:6443"},
            "signer": {
                "cfssl": {"urls": ["http://127.0.0.1:1"], "ca_pins": ["sha256:" + "0" * 64]}
            },
            "paths": {"pki_dir": str(tmp_path / "pki"), "state_dir": str(tmp_path / "s")},
            "kubelet": {"manage": False, "command": ["/usr/bin/kubelet", *flags]},
        }
        return settings.facts(loading.parse(doc, source=tmp_path / "c.toml"))

    ours = tmp_path / "pki" / "kubelet-server-current.pem"
    assert facts(f"--tls-cert-file={ours}") == {
        "schema": 1, "ok": True, "mode": "kubelet", "conflicts": [],
        "serves_our_certificate": True,
    }  # fmt: skip
    assert facts("--tls-cert-file=/etc/other.pem")["serves_our_certificate"] is False
    assert facts()["serves_our_certificate"] is False
    # Not the agent's kubelet to run: what would fight it is not the agent's to refuse.
    assert facts("--bootstrap-kubeconfig=/x")["conflicts"] == []


def test_the_resident_modules_keep_the_daemon_small() -> None:
    code = (
        "import sys, join_agent.kubelet.supervisor, join_agent.kubelet.processes, "
        "join_agent.kubelet.command, join_agent.daemon.loop, join_agent.daemon.startup; "
        "print(sorted(m for m in ('yaml', 'cryptography', 'httpx', 'structlog') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- reap_stale -------------------------------------------------------------------------


class HandClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def reap(pidfile: Path, procs: FakeProcesses, clock: HandClock | None = None) -> str | None:
    clock = clock or HandClock()
    return processes.reap_stale(
        pidfile, stop_grace=GRACE, procs=procs, monotonic=clock.monotonic, sleep=clock.sleep
    )


def test_reap_without_a_pidfile_does_nothing(tmp_path: Path) -> None:
    assert reap(tmp_path / "kubelet.pid", FakeProcesses()) is None


def test_reap_removes_a_pidfile_whose_process_is_gone(tmp_path: Path) -> None:
    pidfile = tmp_path / "kubelet.pid"
    pidfile.write_text("4242 777\n")
    procs = FakeProcesses()
    said = reap(pidfile, procs)
    assert said is not None
    assert "pid 4242" in said
    assert "is gone" in said
    assert not pidfile.exists()
    assert procs.sent == []


@pytest.mark.parametrize("text", ["", "kubelet\n", "1 2\n"])
def test_reap_removes_a_garbled_pidfile(tmp_path: Path, text: str) -> None:
    pidfile = tmp_path / "kubelet.pid"
    pidfile.write_text(text)
    procs = FakeProcesses(foreign={1: "0"})
    said = reap(pidfile, procs)
    assert said is not None
    assert "unreadable" in said
    assert not pidfile.exists()
    assert procs.sent == []


def test_reap_spares_a_recycled_pid(tmp_path: Path) -> None:
    pidfile = tmp_path / "kubelet.pid"
    processes.write_pidfile(pidfile, 4242, "777 boot=b")
    procs = FakeProcesses(foreign={4242: "90210 boot=b"}, dies_on={signal.SIGTERM})
    said = reap(pidfile, procs)
    assert said is not None
    assert "another process" in said
    assert procs.sent == []
    assert procs.alive(4242)
    assert not pidfile.exists()


def test_reap_spares_a_process_it_cannot_identify(tmp_path: Path) -> None:
    pidfile = tmp_path / "kubelet.pid"
    processes.write_pidfile(pidfile, 4242, None)
    assert pidfile.read_text() == "4242\n"
    procs = FakeProcesses(foreign={4242: "777"}, dies_on={signal.SIGTERM})
    said = reap(pidfile, procs)
    assert said is not None
    assert "left it alone" in said
    assert procs.sent == []


def test_reap_stops_the_stale_kubelet_with_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "kubelet.pid"
    processes.write_pidfile(pidfile, 4242, "777 boot=b")
    procs = FakeProcesses(foreign={4242: "777 boot=b"}, dies_on={signal.SIGTERM})
    said = reap(pidfile, procs)
    assert said == "stopped the kubelet left by a previous run (pid 4242) with SIGTERM"
    assert procs.sent == [(4242, signal.SIGTERM)]
    assert not pidfile.exists()


def test_reap_kills_a_stale_kubelet_that_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "kubelet.pid"
    processes.write_pidfile(pidfile, 4242, "stime=10:22:33")
    procs = FakeProcesses(foreign={4242: "stime=10:22:33"}, dies_on={signal.SIGKILL})
    clock = HandClock()
    said = reap(pidfile, procs, clock)
    assert said is not None
    assert "SIGKILL after 10s of SIGTERM" in said
    assert "no /proc/<pid>/stat" in said  # says how coarse the match was
    assert procs.sent == [(4242, signal.SIGTERM), (4242, signal.SIGKILL)]
    assert 10 <= clock.t < 10.1


def test_reap_refuses_to_go_on_when_the_stale_kubelet_survives(tmp_path: Path) -> None:
    pidfile = tmp_path / "kubelet.pid"
    processes.write_pidfile(pidfile, 4242, "777")
    procs = FakeProcesses(foreign={4242: "777"})
    with pytest.raises(KubeletError, match="survives SIGKILL"):
        reap(pidfile, procs)
    assert pidfile.exists()


def test_flag_value() -> None:
    argv = ["k", "--config=a", "--v", "2", "--config", "b", "--x"]
    assert command.flag_value(argv, "config") == "b"  # the last one wins
    assert command.flag_value(argv, "v") == "2"
    assert command.flag_value(argv, "x") == "true"
    assert command.flag_value(argv, "configs") is None


def test_a_recorded_start_time_is_compared_as_it_was_written() -> None:
    from join_agent.host import proc

    now = proc.start_time(os.getpid())
    assert now is not None and proc.same(now, now)
    assert proc.alive(os.getpid(), now)
    assert proc.same(now.split(" ", 1)[0], now)  # a pidfile from before boot ids
    assert not proc.same("1 boot=other", now)
    assert not proc.same("1", now)
    assert proc.same(None, None) and proc.same("-", None)
    assert not proc.same("123", None)  # the process is gone or cannot be read
