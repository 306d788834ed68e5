"""The service-manager files: systemd/join-agent.service and its kubelet drop-in, the SMF
manifest smf/join-agent.xml and its method script smf/join-agent.

Each file goes through the checker its service manager trusts (systemd-analyze verify,
xmllint against illumos' own DTD, shellcheck), and each check is shown to fail on a broken
copy, so that a pass means something. The values that matter are then read back from the
files and compared with what the agent itself uses (platform defaults, credential names),
and the method script's refresh runs for real against live processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from join_agent.host import platform
from join_agent.signers import credentials
from join_agent.storage import runtime
from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "join-agent.service"
DROPIN = REPO / "systemd" / "kubelet-unmanaged.conf"
WAIT_UNIT = REPO / "systemd" / "join-agent-wait.service"
MANIFEST = REPO / "smf" / "join-agent.xml"
METHOD = REPO / "smf" / "join-agent"
DTD = REPO.parent / "shared" / "ref" / "service_bundle.dtd.1"
FMRI = "svc:/system/kubernetes/join-agent"

# What smf_include.sh defines on illumos (usr/src/cmd/svc/shell/smf_include.sh).
SMF_EXIT = {"OK": 0, "ERR_FATAL": 95, "ERR_CONFIG": 96, "ERR_NOSMF": 99}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        need(name, f"apt-get install {package} (or run `bash .ci/install-tools`)")
        raise AssertionError  # need() does not return
    return path


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)


# --- systemd ---------------------------------------------------------------------------


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (keys may repeat)."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"continuation lines are not expected: {raw!r}"
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def values(entries: list[tuple[str, str, str]], section: str, key: str) -> list[str]:
    return [v for s, k, v in entries if s == section and k == key]


def one(entries: list[tuple[str, str, str]], section: str, key: str) -> str:
    found = values(entries, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


_SPAN = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def seconds(span: str) -> float:
    """A systemd time span ("90s", "2min", "1min 30s") in seconds."""
    parts = re.findall(r"(\d+)\s*([a-z]+)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), span
    return sum(int(n) * _SPAN[u] for n, u in parts)


@dataclass
class Root:
    """A throwaway --root for systemd-analyze: our units plus stubs of what they execute."""

    path: Path

    def put(self, rel: str, text: str, mode: int = 0o644) -> Path:
        target = self.path / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
        return target

    def verify(self, unit: str) -> subprocess.CompletedProcess[str]:
        # --recursive-errors=no: exit 1 on a problem in our unit, ignore the units it names
        # (network-online.target, containerd.service are not in this root).
        # --man=no: join-agent(8) is not installed here.
        return run(
            [
                tool("systemd-analyze", "systemd"),
                "verify",
                "--recursive-errors=no",
                "--man=no",
                f"--root={self.path}",
                unit,
            ]
        )


@pytest.fixture
def root(tmp_path: Path) -> Root:
    r = Root(tmp_path / "root")
    # The unit's ExecStart=/ExecReload= must exist and be executable inside the root.
    for exe in ("/usr/bin/join-agent", "/bin/kill", "/usr/bin/kubelet"):
        r.put(exe, "#!/bin/sh\nexit 0\n", 0o755)
    r.put("/usr/lib/systemd/system/kubelet.service", KUBELET_UNIT)
    return r


KUBELET_UNIT = "[Unit]\nDescription=kubelet stand-in\n[Service]\nExecStart=/usr/bin/kubelet\n"
DROPIN_PATH = "/etc/systemd/system/kubelet.service.d/10-join-agent.conf"


def test_unit_passes_systemd_analyze_verify(root: Root) -> None:
    root.put("/usr/lib/systemd/system/join-agent.service", UNIT.read_text())
    r = root.verify("join-agent.service")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    root.put("/usr/lib/systemd/system/join-agent-wait.service", WAIT_UNIT.read_text())
    r = root.verify("join-agent-wait.service")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (("Type=", "Type=notifyy"), "Failed to parse service type"),
        (("KillMode=", "KilMode=mixed"), "Unknown key"),
        (("WatchdogSec=", "WatchdogSec=2fortnights"), "Failed to parse sec value"),
        (("LoadCredential=", "LoadCredential=../x"), "not valid"),
        (("ExecStart=", "ExecStart=/usr/bin/join-agnt run"), "not executable"),
    ],
)
def test_verify_fails_on_a_broken_unit(root: Root, broken: tuple[str, str], why: str) -> None:
    """The check above can fail: each of these copies must be refused."""
    key, line = broken
    text, n = re.subn(rf"^{re.escape(key)}.*$", line, UNIT.read_text(), count=1, flags=re.M)
    assert n == 1
    root.put("/usr/lib/systemd/system/join-agent.service", text)
    r = root.verify("join-agent.service")
    assert r.returncode != 0, f"systemd-analyze accepted {line!r}"
    assert why in r.stderr


def test_kubelet_dropin_passes_verify_and_a_broken_one_fails(root: Root) -> None:
    root.put("/usr/lib/systemd/system/join-agent.service", UNIT.read_text())
    root.put("/usr/lib/systemd/system/join-agent-wait.service", WAIT_UNIT.read_text())
    root.put(DROPIN_PATH, DROPIN.read_text())
    r = root.verify("kubelet.service")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    root.put(DROPIN_PATH, DROPIN.read_text().replace("\nAfter=", "\nAfterr=", 1))
    r = root.verify("kubelet.service")
    assert r.returncode != 0
    assert "10-join-agent.conf" in r.stderr


def test_unit_says_what_the_agent_relies_on() -> None:
    u = parse_unit(UNIT.read_text())
    svc = {k: one(u, "Service", k) for s, k, _ in u if s == "Service" and k != "LoadCredential"}
    # READY=1 once the agent runs (tests/system: a node that cannot join still boots).
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"  # the kubelet child cannot speak for us
    # A bound for a stuck machine, not for a join: the start never waits for the CA.
    assert 60 <= seconds(svc["TimeoutStartSec"]) <= 3600
    assert 60 <= seconds(svc["WatchdogSec"]) <= 600
    assert svc["Restart"] == "on-failure"
    assert seconds(svc["RestartSec"]) >= 1
    assert svc["KillMode"] == "mixed"  # SIGTERM to the agent alone: it stops its kubelet
    assert svc["Delegate"] == "yes"
    # The agent stops its kubelet within [kubelet] stop_grace (30 s by default).
    assert seconds(svc["TimeoutStopSec"]) > 30 + 10
    assert svc["ExecStart"] == "/usr/bin/join-agent run"
    # The verb waits for the verdict: `systemctl reload` fails on a refused config.
    assert svc["ExecReload"] == "/usr/bin/join-agent reload --pid $MAINPID"
    assert svc["StateDirectory"] == Path(platform.LINUX.state_dir).name == "join-agent"
    assert Path(platform.LINUX.state_dir) == Path("/var/lib") / svc["StateDirectory"]
    assert svc["StateDirectoryMode"] == "0700"
    # The start condition is checked before ConfigurationDirectory= would act: the
    # package creates the directory instead.
    assert "ConfigurationDirectory" not in svc
    dirs = (REPO / "packaging/deb/debian/join-agent.dirs").read_text().split()
    assert Path("/") / dirs[0] == Path(platform.LINUX.config_file).parent
    # A board without a real-time clock that pulls time-sync.target in starts us after it.
    assert "time-sync.target" in " ".join(values(u, "Unit", "After")).split()
    # ID-only: the ID:PATH form fails the unit when the file is missing, and every node
    # lacks one of the two. The names are the ones the agent reads.
    creds = values(u, "Service", "LoadCredential")
    assert sorted(creds) == sorted([credentials.CFSSL_AUTH_KEY, credentials.BOOTSTRAP_TOKEN])
    assert not any(":" in c for c in creds)
    assert not values(u, "Service", "SetCredential")  # never a secret in the unit

    assert one(u, "Unit", "ConditionPathExists") == str(platform.LINUX.config_file)
    after = " ".join(values(u, "Unit", "After")).split()
    assert {"network-online.target", "containerd.service"} <= set(after)
    assert "network-online.target" in " ".join(values(u, "Unit", "Wants")).split()
    assert any(d.startswith("man:join-agent(8)") for d in values(u, "Unit", "Documentation"))
    assert one(u, "Install", "WantedBy") == "multi-user.target"


def test_dropin_orders_the_kubelet_after_the_join() -> None:
    d = parse_unit(DROPIN.read_text())
    assert {s for s, _, _ in d} == {"Unit"}
    assert one(d, "Unit", "After") == "join-agent-wait.service"
    assert one(d, "Unit", "Requires") == "join-agent-wait.service"
    # A restart of the agent must not take a separately run kubelet down.
    for key in ("PartOf", "BindsTo"):
        assert not values(d, "Unit", key)
    assert "join-agent.service" not in " ".join(v for _, _, v in d)
    assert "manage = false" in DROPIN.read_text()


def test_the_wait_unit_is_a_gate_that_nothing_enables() -> None:
    w = parse_unit(WAIT_UNIT.read_text())
    assert one(w, "Service", "Type") == "oneshot"
    assert one(w, "Service", "RemainAfterExit") == "yes"  # joined once: stays active
    assert one(w, "Service", "TimeoutStartSec") == "infinity"  # as long as the join takes
    assert one(w, "Service", "ExecStart") == "/usr/bin/join-agent wait"
    assert one(w, "Unit", "Wants") == one(w, "Unit", "After") == "join-agent.service"
    assert not values(w, "Unit", "Requires")  # stopping the agent leaves it active
    assert not [s for s, _, _ in w if s == "Install"]  # pulled in, never enabled
    install = (REPO / "packaging/deb/debian/join-agent.install").read_text()
    assert "systemd/join-agent-wait.service lib/systemd/system/" in install


# --- SMF manifest ----------------------------------------------------------------------


def xmllint_dtd(path: Path) -> subprocess.CompletedProcess[str]:
    if not DTD.is_file():
        pytest.skip(f"{DTD} absent (../shared is not next to this checkout)")
    xmllint = tool("xmllint", "libxml2-utils")
    return run([xmllint, "--noout", "--nowarning", "--dtdvalid", str(DTD), str(path)])


def test_manifest_is_valid_against_illumos_dtd() -> None:
    r = xmllint_dtd(MANIFEST)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (' timeout_seconds="60"/>', "/>"),  # a required attribute
        ("<single_instance/>", "<single_instance/><bogus/>"),  # an unknown element
        ('grouping="require_any"', 'grouping="require_some"'),  # an enumerated value
    ],
)
def test_xmllint_fails_on_a_broken_manifest(tmp_path: Path, old: str, new: str) -> None:
    text = MANIFEST.read_text()
    assert old in text
    broken = tmp_path / "join-agent.xml"
    broken.write_text(text.replace(old, new, 1))
    assert xmllint_dtd(broken).returncode != 0


def test_manifest_says_what_the_agent_relies_on() -> None:
    bundle = ET.parse(MANIFEST).getroot()  # noqa: S314 - our own file
    assert bundle.tag == "service_bundle"
    assert bundle.get("type") == "manifest"
    (svc,) = bundle.findall("service")
    assert f"svc:/{svc.get('name')}" == FMRI
    assert svc.get("version") == "1"
    default = svc.find("create_default_instance")
    assert default is not None
    assert default.get("enabled") == "false"

    deps = {
        d.get("name"): (d.get("grouping"), [f.get("value") for f in d.findall("service_fmri")])
        for d in svc.findall("dependency")
    }
    assert ("require_all", ["svc:/system/filesystem/local"]) in deps.values()
    assert ("require_any", ["svc:/network/loopback"]) in deps.values()
    assert ("require_all", ["svc:/milestone/network"]) in deps.values()

    methods = {m.get("name"): m for m in svc.findall("exec_method")}
    assert methods["start"].get("exec") == "/lib/svc/method/join-agent %m"
    assert methods["start"].get("timeout_seconds") == "60"
    assert methods["stop"].get("exec") == ":kill"
    # :kill -HUP would signal the whole contract, a kubelet child too.
    refresh = methods["refresh"].get("exec") or ""
    assert not refresh.startswith(":kill")
    assert refresh == "/lib/svc/method/join-agent %m"

    cred = svc.find("method_context/method_credential")
    assert cred is not None
    assert cred.get("user") == "root"
    assert cred.get("privileges") == cred.get("limit_privileges")  # children get no more
    context = svc.find("method_context")
    assert context is not None
    assert {"aslr", "forbidnullmap"} <= set((context.get("security_flags") or "").split(","))

    groups = {g.get("name"): g for g in svc.findall("property_group")}
    assert groups["config"].get("type") == "application"
    props = {p.get("name"): p.get("value") for p in groups["config"].findall("propval")}
    assert props["file"] == str(platform.ILLUMOS.config_file)
    assert props["state_dir"] == str(platform.ILLUMOS.state_dir)
    startd = {p.get("name"): p.get("value") for p in groups["startd"].findall("propval")}
    assert startd["duration"] == "child"
    # A worker's or an action's crash is not the service failing (smf_method(7)).
    assert set((startd["ignore_error"] or "").split(",")) == {"core", "signal"}

    assert svc.find("stability") is not None
    assert (svc.findtext("template/common_name/loctext") or "").strip()
    man = svc.find("template/documentation/manpage")
    assert man is not None
    assert (man.get("title"), man.get("section")) == ("join-agent", "8")
    assert svc.find("template/documentation/doc_link") is not None


# What the agent's code does that basic privileges do not allow, by the os call that does
# it (privileges(7)): a call added without its privilege would fail on illumos alone.
PRIVILEGED_CALLS = {
    "chown": "file_chown", "fchown": "file_chown", "lchown": "file_chown",
    "kill": "proc_owner", "killpg": "proc_owner",
}  # fmt: skip


def test_the_manifest_grants_the_privileges_the_code_uses() -> None:
    import ast

    used: dict[str, set[str]] = {}
    for path in sorted((REPO / "agent" / "join_agent").rglob("*.py")):
        if path.name == "faults.py":
            continue  # the crash points kill the process itself, in tests only
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "os"
                and node.func.attr in PRIVILEGED_CALLS
            ):
                used.setdefault(PRIVILEGED_CALLS[node.func.attr], set()).add(path.name)
    assert set(used) == {"file_chown", "proc_owner"}, used  # the list must see them
    cred = ET.parse(MANIFEST).getroot().find("service/method_context/method_credential")  # noqa: S314
    assert cred is not None
    granted = set((cred.get("privileges") or "").split(","))
    assert "basic" in granted
    assert set(used) <= granted, f"the code needs {set(used) - granted}: {used}"
    # and nothing it does not use: no file_dac_*, no "all"
    assert granted == {"basic", *used}


# --- shell scripts ---------------------------------------------------------------------


def shellcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return run([tool("shellcheck", "shellcheck"), "--format=gcc", *args])


def test_method_script_is_shellcheck_clean_posix_sh() -> None:
    # Every severity (style included): it runs under illumos' /bin/sh (ksh93), so POSIX sh.
    assert METHOD.read_text().startswith("#!/bin/sh\n")
    assert os.access(METHOD, os.X_OK)
    r = shellcheck("-s", "sh", str(METHOD))
    assert r.returncode == 0, r.stdout + r.stderr


def test_shellcheck_fails_on_a_broken_method_script(tmp_path: Path) -> None:
    broken = tmp_path / "join-agent"
    broken.write_text(METHOD.read_text().replace('kill -HUP "$pid"', "kill -HUP $pid", 1))
    r = shellcheck("-s", "sh", str(broken))
    assert r.returncode != 0
    assert "SC2086" in r.stdout


def our_shell_scripts() -> list[Path]:
    """The repository's other shell scripts (bash): scripts/ and .ci/."""
    found = []
    for folder in ("scripts", ".ci"):
        for p in sorted((REPO / folder).iterdir()):
            first = p.read_bytes()[:64].split(b"\n", 1)[0] if p.is_file() else b""
            if first.startswith(b"#!") and first.rstrip().endswith((b"sh", b"bash")):
                found.append(p)
    return found


@pytest.mark.parametrize("script", our_shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_repository_scripts_are_shellcheck_clean(script: Path) -> None:
    r = shellcheck(str(script))
    assert r.returncode == 0, r.stdout + r.stderr


# --- the method script, run for real ---------------------------------------------------


@dataclass
class Smf:
    """What svc.startd gives a method: $SMF_FMRI, smf_include.sh, svcprop (stubs here)."""

    tmp: Path
    state_dir: Path
    config_file: Path
    calls: Path

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "agent.pid"

    @property
    def start_pid(self) -> Path:
        """What the stub svcprop answers for restarter/start_pid (none while missing)."""
        return self.tmp / "start_pid"

    @property
    def runtime_dir(self) -> Path:
        return self.tmp / "run"

    def records(self, config: Path, pid: int) -> None:
        """The agent ``pid`` runs with ``config``: its record, as storage/runtime.py writes it."""
        path = runtime.record_path(str(self.runtime_dir), str(config))
        assert path is not None
        Path(path).write_text(json.dumps({"config": str(config), "pid": pid}, sort_keys=True))

    def method(self, verb: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{self.tmp / 'bin'}:/usr/bin:/bin",
            "SMF_FMRI": f"{FMRI}:default",
            "JOIN_AGENT_SMF_INCLUDE": str(self.tmp / "smf_include.sh"),
            "JOIN_AGENT_SMF_RUNTIME_DIR": str(self.runtime_dir),
            "LC_ALL": "C",
        }
        # sh is dash on Debian: a strict POSIX shell, as illumos' ksh93 is a superset of it.
        return run(["sh", str(METHOD), verb], env=env)


@pytest.fixture
def smf(tmp_path: Path) -> Smf:
    s = Smf(tmp_path, tmp_path / "state", tmp_path / "config.toml", tmp_path / "svcprop.calls")
    s.state_dir.mkdir()
    s.runtime_dir.mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "smf_include.sh").write_text(
        "".join(f"SMF_EXIT_{k}={v}\n" for k, v in SMF_EXIT.items())
    )
    svcprop = tmp_path / "bin" / "svcprop"
    svcprop.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >>{s.calls}\n'
        f'if [ "$*" = "-p restarter/start_pid {FMRI}:default" ]; then\n'
        f"  cat {s.start_pid} 2>/dev/null && exit 0\n"
        '  echo "svcprop: Couldn\'t find property" >&2; exit 1\n'
        "fi\n"
        f'[ "$1 $2 $4" = "-c -p {FMRI}:default" ] || {{ echo "svcprop: usage" >&2; exit 2; }}\n'
        'case "$3" in\n'
        f"config/file) echo {s.config_file} ;;\n"
        f"config/state_dir) echo {s.state_dir} ;;\n"
        '*) echo "svcprop: Couldn\'t find property $3" >&2; exit 1 ;;\n'
        "esac\n"
    )
    svcprop.chmod(0o755)
    svcadm = tmp_path / "bin" / "svcadm"
    svcadm.write_text(f'#!/bin/sh\necho "svcadm $*" >>{s.calls}\n')
    svcadm.chmod(0o755)
    return s


# A process that records each SIGHUP it gets; "join-agent run" in its argv, as ps shows it.
_RECORDER = (
    "import signal, sys, time\n"
    "def hup(*_):\n"
    "    with open(sys.argv[1], 'a') as f: f.write('HUP\\n')\n"
    "signal.signal(signal.SIGHUP, hup)\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.1)\n"
)


Spawn = Callable[..., tuple[subprocess.Popen[str], Path]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    procs: list[subprocess.Popen[str]] = []

    def start(name: str, *argv: str) -> tuple[subprocess.Popen[str], Path]:
        marker = tmp_path / f"{name}.signals"
        marker.touch()
        p = subprocess.Popen(
            [sys.executable, "-c", _RECORDER, str(marker), *argv],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
        return p, marker

    yield start
    for p in procs:
        p.kill()
        p.wait()


def wait_for(marker: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = marker.read_text()
        if text:
            return text
        time.sleep(0.05)
    return marker.read_text()


def test_refresh_sends_sighup_to_the_agent_alone(smf: Smf, spawn: Spawn) -> None:
    agent, agent_marker = spawn("agent", "/opt/ooce/join-agent/bin/join-agent", "run")
    # A child of the service that also carries join-agent in its argv (the kubelet under
    # `:kill -HUP` would be hit): it must get nothing.
    other, other_marker = spawn("kubelet", "kubelet", "--kubeconfig=/etc/opt/ooce/join-agent/x")
    smf.pidfile.write_text(f"{agent.pid} -\n")
    smf.records(smf.config_file, agent.pid)

    r = smf.method("refresh")

    assert r.returncode == 0, r.stderr
    assert wait_for(agent_marker) == "HUP\n"
    assert f"sent SIGHUP to pid {agent.pid}" in r.stdout
    time.sleep(0.3)
    assert other_marker.read_text() == ""
    assert agent.poll() is None
    assert other.poll() is None
    assert f"-c -p config/state_dir {FMRI}:default" in smf.calls.read_text()


def test_refresh_finds_the_agent_by_its_restarter_whatever_state_dir_says(
    smf: Smf, spawn: Spawn
) -> None:
    """restarter/start_pid is the agent (start execs it): a config/state_dir that differs
    from the TOML's [paths] state_dir (no pidfile where the property points) no longer
    leaves the agent unsignalled."""
    agent, marker = spawn("agent", "/opt/ooce/join-agent/bin/join-agent", "run")
    smf.start_pid.write_text(f"{agent.pid}\n")
    smf.records(smf.config_file, agent.pid)
    assert not smf.pidfile.exists()
    r = smf.method("refresh")
    assert r.returncode == 0, r.stderr
    assert wait_for(marker) == "HUP\n"
    assert f"sent SIGHUP to pid {agent.pid}: it re-reads {smf.config_file}" in r.stdout


def test_refresh_to_another_config_file_restarts_the_service(smf: Smf, spawn: Spawn) -> None:
    """`svccfg setprop config/file` + `svcadm refresh`: a SIGHUP would re-read the old file,
    so the method restarts the service, which starts the agent with the new one."""
    agent, marker = spawn("agent", "/opt/ooce/join-agent/bin/join-agent", "run")
    smf.start_pid.write_text(f"{agent.pid}\n")
    smf.records(smf.tmp / "old.toml", agent.pid)  # what the agent runs with
    smf.records(smf.config_file, agent.pid + 100000)  # a record of another agent's, stale
    r = smf.method("refresh")
    assert r.returncode == 0, r.stderr
    assert f"config/file is {smf.config_file}, which the agent (pid {agent.pid})" in r.stdout
    assert f"svcadm restart {FMRI}:default" in smf.calls.read_text()
    time.sleep(0.3)
    assert marker.read_text() == ""  # no SIGHUP: it would have re-read old.toml


def test_refresh_with_a_stale_pidfile_signals_nobody(smf: Smf, spawn: Spawn) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    bystander, marker = spawn("bystander", "join-agent", "run")
    smf.pidfile.write_text(f"{gone.pid} 12345\n")

    r = smf.method("refresh")

    assert r.returncode == SMF_EXIT["OK"]
    assert f"stale {smf.pidfile}: pid {gone.pid} is not running; nothing signalled" in r.stderr
    time.sleep(0.3)
    assert marker.read_text() == ""
    assert bystander.poll() is None


def test_refresh_never_signals_a_pid_that_is_not_join_agent(smf: Smf) -> None:
    # A pid reused by another process after the agent was killed: sleep dies on SIGHUP.
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        smf.pidfile.write_text(f"{stranger.pid} -\n")
        r = smf.method("refresh")
        assert r.returncode == SMF_EXIT["OK"]
        assert f"pid {stranger.pid} is not join-agent; nothing signalled" in r.stderr
        time.sleep(0.3)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("content", [None, "", "garbage -\n", "1 -\n"])
def test_refresh_without_an_agent_pid_is_a_no_op(smf: Smf, content: str | None) -> None:
    if content is not None:
        smf.pidfile.write_text(content)
    r = smf.method("refresh")
    assert r.returncode == SMF_EXIT["OK"]
    assert f"no agent pid in {smf.pidfile}: nothing to signal" in r.stderr


def test_start_without_the_config_file_is_a_config_error(smf: Smf) -> None:
    r = smf.method("start")
    assert r.returncode == SMF_EXIT["ERR_CONFIG"]
    assert f"no config file at {smf.config_file}" in r.stderr
    assert f"-c -p config/file {FMRI}:default" in smf.calls.read_text()


def test_start_execs_the_agent_in_the_foreground() -> None:
    # The exec itself needs the installed package (illumos); its command line is this one.
    text = METHOD.read_text()
    assert "\nAGENT=/opt/ooce/join-agent/bin/join-agent\n" in text
    # Where the agent leaves its record of the config it runs with (storage/runtime.py).
    assert f"RUNTIME_DIR=${{JOIN_AGENT_SMF_RUNTIME_DIR:-{platform.ILLUMOS.runtime_dir}}}" in text
    assert '\n    exec "$AGENT" --config "$file" run\n' in text


def test_unknown_method_prints_usage_and_is_a_config_error(smf: Smf) -> None:
    r = smf.method("restart")
    assert r.returncode == SMF_EXIT["ERR_CONFIG"]
    assert "usage:" in r.stderr


def test_method_outside_smf_refuses(smf: Smf) -> None:
    env = {"PATH": "/usr/bin:/bin", "JOIN_AGENT_SMF_INCLUDE": str(smf.tmp / "smf_include.sh")}
    r = run(["sh", str(METHOD), "start"], env=env)
    assert r.returncode == SMF_EXIT["ERR_NOSMF"]


def test_what_the_illumos_files_say_is_true_of_illumos() -> None:
    """Words an OmniOS operator acts on: no FMRI that does not exist (NTP is network/ntp),
    no start timeout claimed for a child service (svc.startd applies none), no purge (IPS
    has none), and the rebuild before an OmniOS upgrade, whose Python the package pins."""
    manifest = MANIFEST.read_text()
    assert "system/ntp" not in manifest
    assert "no start timeout applies" in " ".join(manifest.split())
    page = (REPO / "docs" / "join-agent.8").read_text()
    illumos = page[page.index("On illumos the SMF service is") :][:1200]
    assert "IPS has no purge" in illumos and "purging it" not in illumos.split("On Linux")[0]
    install = (REPO / "docs" / "install.md").read_text()
    omnios = install[install.index("## OmniOS") : install.index("## Building a node image")]
    assert "Before you upgrade OmniOS itself" in omnios
    assert "packaging/ips/build" in omnios.split("Before you upgrade OmniOS itself")[1]
    assert "journalctl" not in omnios and "systemctl" not in omnios.replace(
        "`systemctl reload`", ""
    )
