"""The .deb as an operator makes it: `bash packaging/deb/build OUT`, from this checkout or
from an earlier commit of it (the upgrade tests install one over the other)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path("packaging") / "deb" / "build"


def build(out: Path, source: Path = REPO) -> Path:
    """Build the package of the tree at ``source`` into ``out``; returns the .deb's path."""
    r = subprocess.run(
        ["bash", str(source / BUILD), str(out)],
        cwd=source, env=dict(os.environ), capture_output=True, text=True, timeout=1500,
        check=False,
    )  # fmt: skip
    if r.returncode != 0:
        raise AssertionError(f"{source / BUILD} failed ({r.returncode}):\n{r.stderr[-6000:]}")
    path = Path(r.stdout.splitlines()[-1])
    if not path.is_file():
        raise AssertionError(f"{source / BUILD} printed {path}, which is not a file")
    return path


def build_revision(revision: str, out: Path, *, version: str = "") -> Path:
    """Build the package of an earlier commit of this repository (``git archive``).

    ``version`` relabels it (one lower than this checkout's, valid for both dpkg and
    Python), so that installing this checkout's package over it is an upgrade even when
    the two commits carry the same version.
    """
    with tempfile.TemporaryDirectory(prefix="join-agent-rev-") as tree:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", revision],
            capture_output=True, check=False, timeout=120,
        )  # fmt: skip
        if archive.returncode != 0:
            raise AssertionError(
                f"git archive {revision} failed: {archive.stderr.decode(errors='replace')}"
            )
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        if version:
            _relabel(Path(tree), version)
        return build(out, Path(tree))


def _relabel(tree: Path, new: str) -> None:
    init = tree / "agent" / "join_agent" / "__init__.py"
    version = re.search(r'^__version__ = "([^"]+)"$', init.read_text(), re.M)
    if version is None:
        raise AssertionError(f"no __version__ in {init}")
    old = version.group(1)
    init.write_text(init.read_text().replace(f'"{old}"', f'"{new}"', 1))
    changelog = tree / "packaging" / "deb" / "debian" / "changelog"
    text = changelog.read_text()
    changelog.write_text(text.replace(f"join-agent ({old})", f"join-agent ({new})", 1))
