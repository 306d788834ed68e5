"""The Debian package, as an operator gets it: `bash packaging/deb/build` makes the .deb,
lintian --pedantic has nothing to say, its maintainer scripts enable the unit without
starting it and never stop it for an upgrade, its unit verifies inside the unpacked tree,
and `apt-get install ./join-agent_*.deb` on this machine pulls Debian's python3-* packages,
with which the installed /usr/bin/join-agent joins the test CFSSL CA. A purge then removes
the package and leaves the node's credentials.

Needs root, apt and Debian's mirror (for the build dependencies and the python3-*
packages): outside CI it skips without them, in CI it fails. It installs packages on this
machine and purges join-agent at the end. Runs alone with `pytest -m packaging`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from join_agent import __version__
from tests.conftest import IN_CI, Node, need

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "deb" / "build"
UNIT = "join-agent.service"
# Debian's own programs, none of the caller's: no venv or pyenv python, no PYTHONPATH, and
# (with cwd=/) no checkout on sys.path. What runs is what the package installed.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
APT_ENV = {**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"}


def run(
    argv: list[str], *, cwd: Path | str = "/", env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=CLEAN_ENV if env is None else env,
        timeout=timeout,
        check=False,
    )


def installed(package: str) -> bool:
    r = run(["dpkg-query", "-W", "-f=${Status}", package])
    return r.returncode == 0 and r.stdout.endswith(" installed")


def tool(name: str, package: str) -> str:
    path = shutil.which(name, path=CLEAN_ENV["PATH"])
    if path is None:
        need(name, f"apt-get install {package} (or run `bash .ci/install-tools`)")
        raise AssertionError  # need() does not return
    return path


def field(deb: Path, name: str) -> str:
    r = run(["dpkg-deb", "-f", str(deb), name])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# dh_python3's rendering of `tomli>=1.1; python_version < '3.11'`: Debian's python3 is newer.
TOMLI = "python3-tomli | python3 (>> 3.11)"


def relations(value: str) -> dict[str, str | None]:
    """A Depends field as package -> its minimum version (None: any version)."""
    out: dict[str, str | None] = {}
    for part in value.split(","):
        if part.strip() == TOMLI:
            out[TOMLI] = None
            continue
        # No other alternatives ("a | b") expected: one would fail here, visibly.
        m = re.fullmatch(r"\s*([a-z0-9.+-]+)(?::any)?(?: \(>= ([^)]+)\))?\s*", part)
        assert m, f"unexpected relation {part!r} in {value!r}"
        out[m.group(1)] = m.group(2)
    return out


# pyproject's distribution names -> Debian's packages.
DEBIAN_NAMES = {
    "httpx": "python3-httpx",
    "cryptography": "python3-cryptography",
    "structlog": "python3-structlog",
    "tenacity": "python3-tenacity",
    "sdnotify": "python3-sdnotify",
    "PyYAML": "python3-yaml",
}


def test_package_depends_on_debians_python3_packages_at_our_minimums(deb: Path) -> None:
    assert field(deb, "Package") == "join-agent"
    assert field(deb, "Version") == __version__
    assert field(deb, "Architecture") == "all"
    depends = relations(field(deb, "Depends"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {}
    for req in project["dependencies"]:
        if ";" in req:  # tomli, for Python < 3.11 only: Debian's python3 is newer
            continue
        name, minimum = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", req).groups()  # type: ignore[union-attr]
        wanted[DEBIAN_NAMES[name]] = minimum
    assert set(wanted) == set(DEBIAN_NAMES.values())  # a new dependency needs a mapping here
    for package, minimum in wanted.items():
        assert depends.get(package) == minimum, (package, field(deb, "Depends"))
    assert "python3" in depends
    assert set(depends) == {*wanted, "python3", TOMLI}  # nothing else


def test_lintian_pedantic_is_clean(deb: Path) -> None:
    lintian = tool("lintian", "lintian")
    # Every level is shown (info and pedantic included) and none may appear: any tag at all
    # is a line on stdout. Overrides, each with its reason in
    # debian/join-agent.lintian-overrides, are not shown (--show-overrides lists them).
    # --fail-on stops short of info: lintian 2.116 counts the hint its own python screen
    # masks (dist-info's top_level.txt, "M:" under --show-overrides) as a reported info
    # tag, so `--fail-on info` exits 2 with nothing to show; the empty stdout covers info.
    r = run(
        [lintian, "--pedantic", "--display-info", "--fail-on", "error,warning,pedantic", str(deb)],
        timeout=600,
    )
    assert (r.returncode, r.stdout) == (0, ""), r.stdout + r.stderr


def test_each_lintian_override_says_why() -> None:
    """An override hides a finding: each one must follow the comment that justifies it."""
    path = REPO / "packaging" / "deb" / "debian" / "join-agent.lintian-overrides"
    lines = path.read_text().splitlines() if path.exists() else []
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert i > 0, line
            assert lines[i - 1].startswith("# "), f"override without a reason: {line}"


def contents(deb: Path) -> dict[str, str]:
    """Path (without the leading ./) -> the mode string dpkg-deb shows."""
    r = run(["dpkg-deb", "-c", str(deb)])
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        mode, *_, name = line.split(maxsplit=5)
        out[name.split(" -> ")[0].removeprefix("./").rstrip("/")] = mode
    return out


def test_package_installs_the_program_unit_manual_docs_and_examples(deb: Path) -> None:
    files = contents(deb)
    doc = "usr/share/doc/join-agent"
    for path in [
        "usr/bin/join-agent",
        "usr/lib/python3/dist-packages/join_agent/__init__.py",
        "usr/lib/python3/dist-packages/join_agent/signers/cfssl.py",
        f"lib/systemd/system/{UNIT}",
        "lib/systemd/system/join-agent-wait.service",
        "usr/lib/python3/dist-packages/join_agent/core/renewal.py",
        "usr/share/man/man8/join-agent.8.gz",
        # Uncompressed: the unit's Documentation=file: link names it.
        f"{doc}/README.md",
        f"{doc}/install.md.gz",
        f"{doc}/copyright",
        f"{doc}/examples/config.toml",
        f"{doc}/examples/config-kubernetes.toml",
        f"{doc}/examples/cloud-init.yaml",
        f"{doc}/examples/kubelet-unmanaged.conf",
    ]:
        assert path in files, path
    assert files["usr/bin/join-agent"] == "-rwxr-xr-x"
    # No conffile, nothing in /etc or /var: the config is the operator's (or cloud-init's),
    # and what the agent writes at run time is not the package's.
    # The one exception: /etc/join-agent itself, empty, root's and 0755, for the config
    # (systemd's ConfigurationDirectory= cannot make it: the unit's condition comes first).
    assert [p for p in files if p.startswith(("etc/", "var/"))] == ["etc/join-agent"]
    assert files["etc/join-agent"] == "drwxr-xr-x"
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc")]


@dataclass
class Scripts:
    """The .deb's maintainer scripts, run against stubs of what they call."""

    tmp: Path
    dir: Path

    @property
    def calls(self) -> Path:
        return self.tmp / "calls"

    def text(self, name: str) -> str:
        path = self.dir / name
        return path.read_text() if path.exists() else ""

    def run(
        self,
        name: str,
        *args: str,
        systemd: bool = True,
        policy: int | None = None,
        dpkg_root: Path | None = None,
    ) -> list[str]:
        """Run one script as dpkg would; returns the commands it ran, one line each."""
        # A purge removes files under $DPKG_ROOT: never let it near this machine's own.
        assert dpkg_root is not None or "purge" not in args
        if not (self.dir / name).exists():
            return []
        booted = self.tmp / "run-systemd-system"
        booted.mkdir(exist_ok=True)
        policy_rc = self.tmp / "policy-rc.d"
        policy_rc.unlink(missing_ok=True)
        if policy is not None:
            policy_rc.write_text(f"#!/bin/sh\nexit {policy}\n")
            policy_rc.chmod(0o755)
        # "Is systemd running" and policy-rc.d are fixed paths in the scripts: point them
        # at this sandbox (a directory that exists, or one that does not).
        text = (self.dir / name).read_text()
        text = text.replace("/run/systemd/system", str(booted if systemd else self.tmp / "no"))
        text = text.replace("/usr/sbin/policy-rc.d", str(policy_rc))
        script = self.tmp / f"{name}.sh"
        script.write_text(text)
        self.calls.write_text("")
        env = {"PATH": f"{self.tmp / 'bin'}:/usr/bin:/bin", "LC_ALL": "C"}
        if dpkg_root is not None:
            env["DPKG_ROOT"] = str(dpkg_root)
        r = run(["sh", "-e", str(script), *args], env=env)
        assert r.returncode == 0, r.stderr
        return self.calls.read_text().splitlines()


@pytest.fixture
def scripts(deb: Path, tmp_path: Path) -> Scripts:
    control = tmp_path / "control"
    r = run(["dpkg-deb", "-e", str(deb), str(control)])
    assert r.returncode == 0, r.stderr
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("systemctl", "deb-systemd-helper", "deb-systemd-invoke"):
        stub = stubs / name
        # Records the call; "was-enabled" says yes, as for a unit never disabled by hand.
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>{tmp_path / "calls"}\nexit 0\n')
        stub.chmod(0o755)
    # dh_python3's byte-compilation would act on an installed join-agent: a silent no-op.
    for name in ("py3compile", "py3clean"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
        (stubs / name).chmod(0o755)
    return Scripts(tmp_path, control)


def starts_or_stops(calls: list[str]) -> list[str]:
    verbs = ("start", "stop", "restart", "try-restart", "reload", "reload-or-restart")
    return [c for c in calls if set(c.split()) & set(verbs)]


def test_fresh_install_enables_the_unit_and_starts_nothing(scripts: Scripts) -> None:
    assert scripts.run("preinst", "install") == []
    calls = scripts.run("postinst", "configure")  # no old version: a first install
    assert f"deb-systemd-helper enable {UNIT}" in calls
    assert "systemctl --system daemon-reload" in calls  # the new unit file is read
    assert starts_or_stops(calls) == []
    # What dh generated, as written: enable (deb-systemd-helper) and no start at all.
    text = scripts.text("postinst")
    assert f"deb-systemd-helper enable '{UNIT}'" in text
    assert "deb-systemd-invoke start" not in text
    assert "deb-systemd-invoke restart" not in text


def test_upgrade_never_stops_before_the_unpack_and_restarts_once_after(scripts: Scripts) -> None:
    old = "0.0.9"
    # dpkg's order for an upgrade: old prerm, new preinst, unpack, old postrm, new postinst.
    assert scripts.run("prerm", "upgrade", __version__) == []
    assert scripts.run("preinst", "upgrade", old) == []
    assert scripts.run("postrm", "upgrade", __version__) == []
    calls = scripts.run("postinst", "configure", old)
    assert starts_or_stops(calls) == [f"systemctl --no-block try-restart {UNIT}"]
    assert calls.index("systemctl --system daemon-reload") < calls.index(
        f"systemctl --no-block try-restart {UNIT}"
    )
    # No stop anywhere but on removal: preinst (dh's preinst-systemd-stop) has none at all.
    assert "stop" not in scripts.text("preinst")
    assert re.findall(r"^.*deb-systemd-invoke stop.*$", scripts.text("prerm"), re.M) == [
        f"    deb-systemd-invoke stop {UNIT} >/dev/null || true"
    ]


def test_upgrade_respects_policy_rc_d_and_a_machine_without_systemd(scripts: Scripts) -> None:
    assert starts_or_stops(scripts.run("postinst", "configure", "0.0.9", policy=101)) == []
    assert starts_or_stops(scripts.run("postinst", "configure", "0.0.9", policy=0)) != []
    # A chroot or an image build (no /run/systemd/system): enable only, nothing else.
    calls = scripts.run("postinst", "configure", "0.0.9", systemd=False)
    assert f"deb-systemd-helper enable {UNIT}" in calls
    assert not [c for c in calls if c.startswith("systemctl")]


def test_remove_stops_the_service_and_purge_forgets_the_unit(scripts: Scripts) -> None:
    assert scripts.run("prerm", "remove") == [f"deb-systemd-invoke stop {UNIT}"]
    assert scripts.run("prerm", "remove", systemd=False) == []
    assert scripts.run("postrm", "remove") == ["systemctl --system daemon-reload"]
    calls = scripts.run("postrm", "purge", dpkg_root=scripts.tmp / "empty-root")
    assert f"deb-systemd-helper purge {UNIT}" in calls


def test_purge_removes_the_services_bookkeeping_and_nothing_else(scripts: Scripts) -> None:
    root = scripts.tmp / "root"
    state = root / "var/lib/join-agent"
    etc = root / "etc/join-agent"
    pki = root / "var/lib/kubelet/pki"
    for d in (state, etc, pki):
        d.mkdir(parents=True)
    for name in ("status.json", "agent.pid", "lock", "ca-pin", "kubelet.pid"):
        (state / name).write_text("x\n")
    (etc / "config.toml").write_text("x\n")
    (pki / "kubelet-client-current.pem").write_text("x\n")

    scripts.run("postrm", "purge", dpkg_root=root)

    assert sorted(p.name for p in state.iterdir()) == ["ca-pin", "kubelet.pid"]
    assert [p.name for p in etc.iterdir()] == ["config.toml"]
    assert (pki / "kubelet-client-current.pem").exists()
    # Once nothing is left in them, the directories systemd created for the unit go too.
    for name in ("ca-pin", "kubelet.pid"):
        (state / name).unlink()
    (etc / "config.toml").unlink()
    scripts.run("postrm", "purge", dpkg_root=root)
    assert not state.exists()
    assert not etc.exists()
    assert pki.is_dir()


def test_unit_verifies_inside_the_unpacked_package(deb: Path, tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "systemd")
    root = tmp_path / "root"
    r = run(["dpkg-deb", "-x", str(deb), str(root)])
    assert r.returncode == 0, r.stderr
    unit = root / "lib/systemd/system" / UNIT
    assert unit.read_bytes() == (REPO / "systemd" / UNIT).read_bytes()
    # ExecReload=/bin/kill comes from procps, not from us: a stand-in, so that the check
    # is about our files (ExecStart=/usr/bin/join-agent is the package's own).
    kill = root / "bin" / "kill"
    kill.parent.mkdir(exist_ok=True)
    kill.write_text("#!/bin/sh\nexit 0\n")
    kill.chmod(0o755)
    assert os.access(root / "usr/bin/join-agent", os.X_OK)
    # --recursive-errors=no: fail on our unit, not on the units it names (not in the
    # tree). --man=no: systemd-analyze looks manual pages up on the host, not in --root;
    # the page the unit names is checked below instead.
    r = run([analyze, "verify", "--recursive-errors=no", "--man=no", f"--root={root}", UNIT])
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    docs = re.findall(r"^Documentation=(\S+)$", unit.read_text(), re.M)
    assert "man:join-agent(8)" in docs
    assert (root / "usr/share/man/man8/join-agent.8.gz").is_file()
    for url in docs:
        if url.startswith("file:"):
            assert (root / url.removeprefix("file:").lstrip("/")).is_file(), url
    # A broken ExecStart= in the same tree is refused: the check can fail.
    unit.write_text(unit.read_text().replace("/usr/bin/join-agent run", "/usr/bin/join-agnt run"))
    r = run([analyze, "verify", "--recursive-errors=no", "--man=no", f"--root={root}", UNIT])
    assert r.returncode != 0
    assert "join-agnt" in r.stderr


@pytest.fixture
def apt_install(deb: Path) -> Iterator[None]:
    """`apt-get install ./join-agent_*.deb` on this machine; purged again if a step fails."""
    if installed("join-agent") and not IN_CI:
        pytest.skip("join-agent is installed on this machine: the test would replace and purge it")
    r = run(["apt-get", "update", "-qq"], env=APT_ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    # A path needs ./ (or /): apt then takes the file, and pulls its Depends from the mirror.
    r = run(["apt-get", "install", "-y", f"./{deb.name}"], cwd=deb.parent, env=APT_ENV, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    try:
        yield
    finally:
        if installed("join-agent"):
            run(["apt-get", "purge", "-y", "join-agent"], env=APT_ENV)


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return run(["/usr/bin/join-agent", *args], timeout=120)


def test_installed_package_joins_the_ca_and_purge_keeps_the_credentials(
    apt_install: None, node: Node
) -> None:
    # 1. Installed, enabled (deb-systemd-helper works without a running systemd), and
    #    running Debian's python3-* packages, not a venv's.
    wants = Path("/etc/systemd/system/multi-user.target.wants") / UNIT
    assert wants.is_symlink()
    assert os.readlink(wants) in (f"/lib/systemd/system/{UNIT}", f"/usr/lib/systemd/system/{UNIT}")
    if Path("/run/systemd/system").is_dir():
        assert run(["systemctl", "is-active", UNIT]).stdout.strip() != "active"
    r = agent("--version")
    assert (r.returncode, r.stdout) == (0, f"join-agent {__version__}\n"), r.stderr
    r = run(
        [
            "python3",
            "-c",
            "import json, join_agent, cryptography, httpx, structlog, tenacity, sdnotify, yaml;"
            "print(json.dumps({m.__name__: m.__file__ for m in "
            "(join_agent, cryptography, httpx, structlog, tenacity, sdnotify, yaml)}))",
        ]
    )
    assert r.returncode == 0, r.stderr
    for module, path in json.loads(r.stdout).items():
        assert path.startswith("/usr/lib/python3/dist-packages/"), (module, path)

    # 2. Not joined yet: status says so, with exit 2.
    r = agent("--config", str(node.config), "status", "--json")
    assert r.returncode == 2, r.stderr
    assert json.loads(r.stdout)["state"] == "not-joined"
    r = agent("--config", str(node.config), "status")
    assert "not-joined" in r.stdout

    # 3. A real join against the test CFSSL CA, by the installed program.
    r = agent("--config", str(node.config), "join")
    assert r.returncode == 0, r.stderr
    assert "joined as system:node:worker-1" in r.stdout
    assert node.current.is_symlink()
    r = agent("--config", str(node.config), "status", "--json")
    assert json.loads(r.stdout)["state"] == "valid", r.stdout
    written = node.tree()
    assert node.kubeconfig.is_file()
    assert node.ca_file.is_file()
    assert stat.S_IMODE(node.current.resolve().stat().st_mode) == 0o600

    # 4. Purge: the package's files go, the node's credentials stay (only reset removes
    #    them), and so does a recorded CA pin in the default state directory.
    state = Path("/var/lib/join-agent")
    ours = not state.exists()
    if ours:
        state.mkdir(mode=0o700)
        (state / "status.json").write_text("{}\n")
        (state / "ca-pin").write_text("sha256:" + "0" * 64 + "\n")
    try:
        r = run(["apt-get", "purge", "-y", "join-agent"], env=APT_ENV, timeout=600)
        assert r.returncode == 0, r.stderr
        assert not installed("join-agent")
        for gone in (
            "/usr/bin/join-agent",
            "/usr/lib/python3/dist-packages/join_agent",
            f"/lib/systemd/system/{UNIT}",
            "/usr/share/man/man8/join-agent.8.gz",
            "/usr/share/doc/join-agent",
        ):
            assert not os.path.lexists(gone), gone
        assert not os.path.lexists(wants)
        assert node.tree() == written
        if ours:
            assert sorted(p.name for p in state.iterdir()) == ["ca-pin"]
    finally:
        if ours:
            shutil.rmtree(state, ignore_errors=True)
