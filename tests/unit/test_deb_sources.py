"""packaging/deb's sources, checked without building anything (tests/packaging/test_deb.py
builds, lints and installs the .deb): its shell scripts pass shellcheck, and the changelog
names the version the code reports, which the build refuses otherwise."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from join_agent import __version__
from tests.conftest import need

DEB = Path(__file__).resolve().parents[2] / "packaging" / "deb"
MAINTAINER_SCRIPTS = sorted((DEB / "debian").glob("join-agent.p*[mt]"))


def shellcheck(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("shellcheck")
    if path is None:
        need("shellcheck", "apt-get install shellcheck (or run `bash .ci/install-tools`)")
        raise AssertionError  # need() does not return
    return subprocess.run(
        [path, "--format=gcc", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_build_script_is_shellcheck_clean() -> None:
    build = DEB / "build"
    assert build.read_text().startswith("#!/usr/bin/env bash\n")
    r = shellcheck(str(build))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", MAINTAINER_SCRIPTS, ids=lambda p: p.name)
def test_maintainer_scripts_are_posix_sh_and_shellcheck_clean(script: Path) -> None:
    # dpkg runs them with /bin/sh (dash); #DEBHELPER# is where dh adds its own blocks.
    text = script.read_text()
    assert text.startswith("#!/bin/sh\nset -e\n")
    assert text.count("\n#DEBHELPER#\n") == 1
    r = shellcheck("-s", "sh", str(script))
    assert r.returncode == 0, r.stdout + r.stderr


def test_there_are_the_maintainer_scripts_the_rules_rely_on() -> None:
    # debian/rules' dh_installsystemd --no-start --no-stop-on-upgrade writes no stop and no
    # restart: these two scripts carry them (and postrm the purge of our bookkeeping).
    assert [p.name for p in MAINTAINER_SCRIPTS] == [
        "join-agent.postinst",
        "join-agent.postrm",
        "join-agent.prerm",
    ]
    assert "--no-start --no-stop-on-upgrade" in (DEB / "debian" / "rules").read_text()


def test_shellcheck_fails_on_a_broken_maintainer_script(tmp_path: Path) -> None:
    broken = tmp_path / "postrm"
    text = (DEB / "debian" / "join-agent.postrm").read_text()
    broken.write_text(text.replace('rm -f "$state/status.json"', "rm -f $state/status.json", 1))
    r = shellcheck("-s", "sh", str(broken))
    assert "SC2086" in r.stdout


def test_changelog_names_the_codes_version() -> None:
    first = (DEB / "debian" / "changelog").read_text().splitlines()[0]
    m = re.fullmatch(r"join-agent \(([^)]+)\) \w+; urgency=\w+", first)
    assert m is not None, first
    assert m.group(1) == __version__
