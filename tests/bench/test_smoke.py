"""Each bench run once, briefly, so that none rots between measurements: it must start,
drive the real agent (or the real policy), and print its figures. Nothing is written to
docs/benchmarks.md (a bench without ``--write`` only prints) and no figure is judged here
(speed is measured in bench/, never asserted in a test). Runs once, on the newest
dependencies: the benches themselves run the bookworm venv's agent next to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[2]
BOOKWORM_AGENT = REPO / ".venv-bookworm" / "bin" / "join-agent"
KUBECTL = Path("/var/cache/join-agent-ci/kubernetes-client/usr/bin/kubectl")


def bench(script: str, *args: str, timeout: float = 300) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert r.returncode == 0, (
        f"{script} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    )
    return r.stdout


def bookworm_agent() -> str:
    if not BOOKWORM_AGENT.is_file():
        need("the bookworm venv's join-agent", "bash scripts/test makes .venv-bookworm")
    return str(BOOKWORM_AGENT)


def test_herd_runs_the_renewal_policy_for_a_small_fleet() -> None:
    out = bench("herd.py", "--scale", "0.02")
    assert "| cold boot, 20 nodes | 20 |" in out
    assert "CA outage 1 day" in out


def test_status_time_times_both_paths_on_both_dependency_sets() -> None:
    out = bench(
        "status_time.py", "--runs", "2", "--warmup", "1", "--import-runs", "1",
        "--bookworm-join-agent", bookworm_agent(),
    )  # fmt: skip
    assert "| bookworm deps | `status`, fast path |" in out
    assert "| newest deps | `status`, slow path (no daemon) |" in out


def test_join_time_times_the_agent_against_the_shell_flow() -> None:
    kubectl = os.environ.get("JOIN_AGENT_KUBECTL") or str(KUBECTL)
    if not Path(kubectl).is_file():
        need("kubectl", "bash .ci/install-tools")
    out = bench(
        "join_time.py", "--runs", "2", "--warmup", "1", "--keys", "p256", "--no-nopyc",
        "--no-profile", "--kubectl", kubectl,
        "--bookworm-join-agent", bookworm_agent(),
    )  # fmt: skip
    assert "P-256: join-agent / shell = **" in out


def test_footprint_watches_an_idle_daemon() -> None:
    out = bench(
        "footprint.py", "--window", "10", "--settle", "1",
        "--bookworm-join-agent", bookworm_agent(),
    )  # fmt: skip
    assert "| cryptography imported | no | no |" in out
