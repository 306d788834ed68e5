"""Benchmark time-to-credential: ``join-agent join`` against the shell flow it replaces.

Both flows run as whole processes against one real local ``cfssl serve``
(``tests.lab.cfssl_ca.CfsslCA``), alternately, each in a fresh temporary directory, for a
P-256 and an RSA-2048 node key. The shell flow is the cloud-init script users run today:
``curl | jq`` for the CA, ``cfssl gencert`` with an ``auth_remote`` client config piped to
``cfssljson``, then four ``kubectl config`` calls. Files that cloud-init would have written
beforehand (CFSSL client config, CSR JSON, join-agent's config.toml and auth key) are
written before the clock starts, for both flows alike.

join-agent is timed with a bytecode cache (as installed from a wheel or a .deb, whose
modules are byte-compiled) and, as a third flow, without one (an editable checkout under
PYTHONDONTWRITEBYTECODE=1, where every run compiles join_agent from source).

Any failed run aborts the benchmark; nothing that failed is timed. Afterwards joins run
under ``-X importtime`` and under cProfile, to show where join-agent's time goes.

Run from the repository root:

    PYTHONPATH=. /tmp/vnew/bin/python bench/join_time.py            # writes docs/benchmarks.md
    PYTHONPATH=. /tmp/vnew/bin/python bench/join_time.py --runs 5 --no-write
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import Stats, write_section
from bench.footprint import default_join_agent, rerun_command

if TYPE_CHECKING:
    from tests.lab.cfssl_ca import CfsslCA

REPO = Path(__file__).resolve().parent.parent
DEFAULT_KUBECTL = Path(
    os.environ.get("JOIN_AGENT_TOOLS", "/var/cache/join-agent-ci"),
    "kubernetes-client/usr/bin/kubectl",
)
NODE_NAME = "bench-node-1"
NODE_IP = "10.0.0.7"
SERVER = "https://127.0.0.1:6443"
P256_TARGET = 0.75  # join-agent / shell, P-256 median
IMPORT_PACKAGES = ("httpx", "cryptography", "structlog", "yaml", "tomllib")
# httpx imports httpcore lazily, when the first client is built: count them together.
GROUPS = {"httpx": ("httpx", "httpcore")}
# What the join actually imports of each, for the "alone" column.
ALONE = {
    "httpx": "import httpx, httpcore",
    "cryptography": "from cryptography import x509",
    "structlog": "import structlog",
    "yaml": "import yaml",
    "tomllib": "import tomllib",
}
# The third-party imports of a join today (structlog is imported only when a line is
# logged, which a quiet join does not), and of one without httpx and yaml
# (stdlib http.client and json instead): the difference, measured as whole processes, is
# what dropping them would save, shared stdlib modules and all.
DEPS_NOW = (
    "import argparse, tomllib, httpx, httpcore, yaml; "
    "from cryptography import x509; from cryptography.hazmat.primitives import serialization"
)
DEPS_LEAN = (
    "import argparse, tomllib, json, http.client; "
    "from cryptography import x509; from cryptography.hazmat.primitives import serialization"
)
# Parts the findings name (same measure as IMPORT_PACKAGES).
DETAIL_PACKAGES = (
    "httpcore", "asyncio", "structlog.stdlib", "structlog.dev", "ssl", "argparse",
    "join_agent.host.netlink", "join_agent.config",
)  # fmt: skip
MARKER_BEGIN = "<!-- join_time.py: begin -->"
MARKER_END = "<!-- join_time.py: end -->"

SHELL = "shell"
JOIN = "join-agent"
JOIN_NOPYC = "join-agent, no .pyc"
JOIN_BOOKWORM = "join-agent, bookworm deps"


@dataclass(frozen=True)
class KeyKind:
    label: str  # in tables
    agent: str  # join-agent's node.key
    algo: str  # CFSSL's key.algo
    size: int


KEYS = {
    "p256": KeyKind("P-256", "ecdsa-p256", "ecdsa", 256),
    "rsa2048": KeyKind("RSA-2048", "rsa-2048", "rsa", 2048),
}

# The cloud-init flow, as users run it today. $1 = CA URL, $2 = kubectl; cwd = a fresh dir
# already holding auth-remote.json and worker-csr.json (cloud-init's write_files).
# pipefail only so that a broken run is caught; it costs nothing.
SHELL_FLOW = """\
#!/bin/bash
set -euo pipefail
CA=$1
KUBECTL=$2
curl -s -d '{"profile":"kubelet"}' "$CA/api/v1/cfssl/info" | jq -r .result.certificate > ca.pem
cfssl gencert -config=auth-remote.json -profile=kubelet -hostname=@NAME@,@IP@ \\
    worker-csr.json | cfssljson -bare worker
"$KUBECTL" config set-cluster kubernetes --server=@SERVER@ \\
    --certificate-authority=ca.pem --embed-certs=true --kubeconfig=kubelet.conf
"$KUBECTL" config set-credentials system:node:@NAME@ --client-certificate=worker.pem \\
    --client-key=worker-key.pem --embed-certs=true --kubeconfig=kubelet.conf
"$KUBECTL" config set-context default --cluster=kubernetes --user=system:node:@NAME@ \\
    --kubeconfig=kubelet.conf
"$KUBECTL" config use-context default --kubeconfig=kubelet.conf
"""

# Debian's kubectl 1.20.2 (kubernetes-client 1.20.5+really1.20.2, built with Go >= 1.18)
# panics in `config set-credentials` whenever the user does not exist yet (its vendored
# reflect2 predates Go 1.18's map iterator; kubernetes/kubectl#1394); changing an existing
# user works. With that kubectl the flow can only succeed if the kubeconfig already names
# the user, so the bench writes this skeleton before the clock starts, like the other
# cloud-init files. The four timed kubectl calls stay exactly the same.
SEED_KUBECONFIG = f"""\
apiVersion: v1
kind: Config
users:
- name: system:node:{NODE_NAME}
  user: {{}}
"""

# Run by the join-agent interpreter on a cProfile dump (pstats files are version-specific).
PSTATS_SCRIPT = """\
import json, pstats, sys
st = pstats.Stats(sys.argv[1])
n = int(sys.argv[2])
def loc(k):
    f, line, fn = k
    for cut in ("site-packages/", "/agent/", "/lib/python3"):
        if cut in f:
            f = f.split(cut, 1)[1]
    return f"{f}:{line}({fn})" if line else fn
def noise(k):
    f, _, fn = k
    return ("importlib" in f or fn == "<module>" or "builtins.exec" in fn
            or "__import__" in fn or f.startswith("<frozen runpy") or f == "<string>")
rows = sorted(st.stats.items(), key=lambda kv: -kv[1][3])
def fmt(items):
    return [{"ncalls": v[1], "tottime": v[2], "cumtime": v[3], "where": loc(k)}
            for k, v in items[:n]]
NAMED = {
    "imports": ("importlib._bootstrap>", "_find_and_load"),
    "main": ("join_agent/cli.py", "main"),
    "log_setup": ("join_agent/log.py", "setup"),
    "make_client": ("join_agent/net/transport.py", "make_client"),
    "enroll": ("join_agent/worker/enroll.py", "enroll"),
    "sign": ("join_agent/signers/cfssl.py", "sign"),
    "post": ("join_agent/net/transport.py", "post"),
    "generate_key": ("join_agent/pki/keys.py", "generate_key"),
    "build_csr": ("join_agent/pki/keys.py", "build_csr"),
    "check_issued": ("join_agent/pki/checks.py", "check_issued"),
    "render": ("join_agent/worker/kubeconfig.py", "render"),
    "install": ("join_agent/storage/store.py", "install"),
    "atomic_write": ("join_agent/storage/files.py", "atomic_write"),
}
named = {n: sum(v[3] for k, v in st.stats.items() if k[0].endswith(f) and k[2] == fn)
         for n, (f, fn) in NAMED.items()}
print(json.dumps({
    "calls": st.total_calls, "seconds": st.total_tt, "named": named,
    "top": fmt(rows), "work": fmt([kv for kv in rows if not noise(kv[0])]),
}))
"""


class BenchError(RuntimeError):
    """A run failed or produced the wrong output: the benchmark stops."""


# ----------------------------------------------------------------------------- the flows


def set_credentials_panics(kubectl: Path, scratch: Path) -> bool:
    """True if this kubectl has the set-credentials panic (probed, untimed)."""
    scratch.mkdir(parents=True, exist_ok=True)
    conf = scratch / "probe.conf"
    argv = [str(kubectl), "config", "set-credentials", "probe", "--token=x"]
    r = subprocess.run([*argv, f"--kubeconfig={conf}"], capture_output=True, check=False)
    if r.returncode == 0:
        return False
    if b"panic:" in r.stderr:
        return True
    raise BenchError(f"kubectl config set-credentials failed: {r.stderr.decode(errors='replace')}")


def python_env(root: Path, *, bytecode: bool) -> dict[str, str]:
    """The environment for join-agent runs.

    With ``bytecode``: a private pycache (PYTHONPYCACHEPREFIX, so nothing is written into
    the checkout), filled by the warm-up runs, like an installed package's .pyc files.
    Without: PYTHONDONTWRITEBYTECODE=1, so the editable join_agent compiles on every run
    (site-packages and the stdlib still have the .pyc files their installers wrote).
    """
    env = dict(os.environ)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


@dataclass
class Bench:
    ca: CfsslCA
    root: Path  # temp dir for everything
    join_agent: Path
    kubectl: Path
    seed_user: bool  # see SEED_KUBECONFIG
    bookworm_join_agent: Path | None = None  # same code on Debian bookworm's dependency versions
    script: Path = field(init=False)
    env_pyc: dict[str, str] = field(init=False)
    env_nopyc: dict[str, str] = field(init=False)
    counter: int = 0

    def __post_init__(self) -> None:
        self.script = self.root / "join-flow.sh"
        text = (
            SHELL_FLOW.replace("@NAME@", NODE_NAME)
            .replace("@IP@", NODE_IP)
            .replace("@SERVER@", SERVER)
        )
        self.script.write_text(text)
        self.script.chmod(0o755)
        self.env_pyc = python_env(self.root, bytecode=True)
        self.env_nopyc = python_env(self.root, bytecode=False)

    def fresh_dir(self, flow: str, key: KeyKind) -> Path:
        self.counter += 1
        slug = re.sub(r"[^a-z0-9]+", "-", flow)
        d = self.root / "runs" / f"{self.counter:04d}-{slug}-{key.agent}"
        d.mkdir(parents=True)
        return d

    def runner(self, flow: str) -> Callable[[KeyKind], tuple[float, Path, Path]]:
        runners: dict[str, Callable[[KeyKind], tuple[float, Path, Path]]] = {
            SHELL: self.run_shell,
            JOIN: functools.partial(self.run_join, env=self.env_pyc, flow=JOIN),
            JOIN_NOPYC: functools.partial(self.run_join, env=self.env_nopyc, flow=JOIN_NOPYC),
            JOIN_BOOKWORM: functools.partial(
                self.run_join, env=self.env_pyc, flow=JOIN_BOOKWORM, exe=self.bookworm_join_agent
            ),
        }
        return runners[flow]

    # -- shell

    def prepare_shell(self, key: KeyKind) -> Path:
        d = self.fresh_dir(SHELL, key)
        client_config = {
            "signing": {"default": {"auth_remote": {"remote": "ca", "auth_key": "node-key"}}},
            "auth_keys": {"node-key": {"type": "standard", "key": self.ca.auth_key_hex}},
            # Debian's cfssl 1.2.0 (built with Go 1.19) wants the scheme: a bare
            # "127.0.0.1:PORT" fails with "failed to connect to remote" before any request.
            "remotes": {"ca": self.ca.url},
        }
        (d / "auth-remote.json").write_text(json.dumps(client_config, indent=2))
        csr = {
            "CN": f"system:node:{NODE_NAME}",
            "names": [{"O": "system:nodes"}],
            "key": {"algo": key.algo, "size": key.size},
        }
        (d / "worker-csr.json").write_text(json.dumps(csr, indent=2))
        if self.seed_user:
            (d / "kubelet.conf").write_text(SEED_KUBECONFIG)
        return d

    def run_shell(self, key: KeyKind) -> tuple[float, Path, Path]:
        d = self.prepare_shell(key)
        argv = [str(self.script), self.ca.url, str(self.kubectl)]
        elapsed = _timed(argv, d, "shell flow", os.environ)
        _expect(d / "ca.pem", b"-----BEGIN CERTIFICATE-----")
        _expect(d / "worker.pem", b"-----BEGIN CERTIFICATE-----")
        _expect(d / "worker-key.pem", b"PRIVATE KEY-----")
        for needle in (
            b"certificate-authority-data:",
            b"client-certificate-data:",
            b"client-key-data:",
            b"current-context: default",
        ):
            _expect(d / "kubelet.conf", needle)
        return elapsed, d, d / "worker.pem"

    # -- join-agent

    def prepare_join(self, key: KeyKind, flow: str = JOIN) -> Path:
        d = self.fresh_dir(flow, key)
        auth_key = self.ca.write_auth_key(d / "cfssl-auth-key")
        (d / "config.toml").write_text(
            "\n".join(
                [
                    "[cluster]",
                    f'server = "{SERVER}"',
                    "",
                    "[node]",
                    f'name = "{NODE_NAME}"',
                    f'addresses = ["{NODE_IP}"]',
                    f'key = "{key.agent}"',
                    "",
                    "[signer.cfssl]",
                    f'urls = ["{self.ca.url}"]',
                    f'auth_key_file = "{auth_key}"',
                    f'ca_pins = ["{self.ca_pin}"]',
                    "",
                    "[paths]",
                    f'pki_dir = "{d / "pki"}"',
                    f'kubeconfig = "{d / "kubelet.conf"}"',
                    f'ca_file = "{d / "ca.crt"}"',
                    f'state_dir = "{d / "state"}"',
                    "",
                    "[kubelet]",
                    "manage = false",
                    "",
                ]
            )
        )
        return d

    @functools.cached_property
    def ca_pin(self) -> str:
        return self.ca.pin  # computed with openssl, not with join-agent's code

    @staticmethod
    def join_args(d: Path) -> list[str]:
        return ["--config", str(d / "config.toml"), "join"]

    def run_join(
        self, key: KeyKind, *, env: Mapping[str, str], flow: str, exe: Path | None = None
    ) -> tuple[float, Path, Path]:
        d = self.prepare_join(key, flow)
        argv = [str(exe or self.join_agent), *self.join_args(d)]
        elapsed = _timed(argv, d, "join-agent join", env)
        _expect(d / "ca.crt", b"-----BEGIN CERTIFICATE-----")
        current = d / "pki" / "kubelet-client-current.pem"
        _expect(current, b"-----BEGIN CERTIFICATE-----")
        _expect(current, b"PRIVATE KEY-----")
        _expect(d / "kubelet.conf", str(current).encode())
        _expect(d / "kubelet.conf", b"certificate-authority-data:")
        return elapsed, d, current


def _timed(argv: Sequence[str], cwd: Path, what: str, env: Mapping[str, str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise BenchError(
            f"{what} exited {r.returncode} in {cwd}:\n"
            f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}"
        )
    return elapsed


def _expect(path: Path, needle: bytes) -> None:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BenchError(f"missing output {path}: {e.strerror}") from None
    if needle not in data:
        raise BenchError(f"{path} does not contain {needle!r}")


def check_certificate(path: Path, key: KeyKind, ca_pem: bytes) -> None:
    """Once per flow and key type: the credential is really what a kubelet needs."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert = x509.load_pem_x509_certificate(path.read_bytes())  # the first PEM block
    ca = x509.load_pem_x509_certificate(ca_pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    pub = cert.public_key()
    problems = []
    if cn != f"system:node:{NODE_NAME}" or org != "system:nodes":
        problems.append(f"subject is {cert.subject.rfc4514_string()}")
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        problems.append("no client auth usage (not the kubelet profile)")
    if NODE_NAME not in san.get_values_for_type(x509.DNSName):
        problems.append("node name missing from the SANs")
    if cert.issuer != ca.subject:
        problems.append("not issued by the bench CA")
    if key.algo == "ecdsa" and not (
        isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    ):
        problems.append(f"key is not P-256: {pub!r}")
    if key.algo == "rsa" and not (isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048):
        problems.append(f"key is not RSA-2048: {pub!r}")
    if problems:
        raise BenchError(f"{path}: " + "; ".join(problems))


# ----------------------------------------------------------------------------- measuring


Results = dict[tuple[str, str], Stats]  # (flow, key label) -> timings


def measure(
    bench: Bench, flows: Sequence[str], keys: Sequence[KeyKind], runs: int, warmup: int
) -> Results:
    """Runs round-robin: flow order rotates each round so none always goes first."""
    results: dict[tuple[str, str], list[float]] = {}
    ca_pem = bench.ca.ca_pem.read_bytes()
    for key in keys:
        for i in range(warmup + runs):
            k = i % len(flows)
            for flow in (*flows[k:], *flows[:k]):
                elapsed, workdir, cert = bench.runner(flow)(key)
                if i == 0:
                    check_certificate(cert, key, ca_pem)
                if i >= warmup:
                    results.setdefault((flow, key.label), []).append(elapsed)
                shutil.rmtree(workdir)
            if i >= warmup:
                print(f"\r{key.label}: {i + 1 - warmup}/{runs} rounds", end="", file=sys.stderr)
        print(file=sys.stderr)
    return {k: Stats(tuple(v)) for k, v in results.items()}


def interleaved_medians(jobs: Mapping[str, Callable[[], float]], runs: int) -> dict[str, float]:
    """Median time of each job, run round-robin (rotating order) after one warm-up each,
    so that a change of load on the machine hits every job alike."""
    names = list(jobs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        jobs[n]()  # warm the bytecode cache
    for i in range(runs):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(jobs[n]())
    return {n: statistics.median(t) for n, t in times.items()}


# ----------------------------------------------------------------------------- importtime


@dataclass(frozen=True)
class ImportEntry:
    depth: int
    name: str
    self_us: int
    cumulative_us: int
    parent: str  # "" at the top level


def parse_importtime(stderr: str) -> list[ImportEntry]:
    """``-X importtime`` lines, with each entry's importer.

    Lines come in post-order (children before their parent) and the name is indented two
    spaces per nesting level, so an entry's parent is the next line with a smaller depth.
    """
    rows: list[tuple[int, str, int, int]] = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$", line)
        if m:
            depth = len(m.group(3)) // 2
            rows.append((depth, m.group(4), int(m.group(1)), int(m.group(2))))
    entries: list[ImportEntry] = []
    for i, (depth, name, self_us, cum_us) in enumerate(rows):
        parent = next((r[1] for r in rows[i + 1 :] if r[0] < depth), "")
        entries.append(ImportEntry(depth, name, self_us, cum_us, parent))
    return entries


def _inside(name: str, pkg: str) -> bool:
    return name == pkg or name.startswith(pkg + ".")


def package_cost(entries: Sequence[ImportEntry], pkg: str) -> tuple[int, tuple[str, ...]]:
    """Microseconds of every import subtree that enters ``pkg`` from outside it (so the
    cost includes what the package drags in that was not loaded yet), and its importers."""
    roots = [e for e in entries if _inside(e.name, pkg) and not _inside(e.parent, pkg)]
    importers = tuple(dict.fromkeys(e.parent or "a function (lazy import)" for e in roots))
    return sum(e.cumulative_us for e in roots), importers


def top_level_costs(entries: Sequence[ImportEntry]) -> dict[str, int]:
    """The same measure for every top-level package that was imported."""
    totals: dict[str, int] = {}
    for e in entries:
        top = e.name.split(".")[0]
        if e.parent.split(".")[0] != top:
            totals[top] = totals.get(top, 0) + e.cumulative_us
    return totals


@dataclass(frozen=True)
class ImportSummary:
    """Medians over several ``-X importtime`` joins (microseconds)."""

    runs: int
    total: int  # all imports after start-up
    ours_self: int  # join_agent.* self time
    ours_self_nopyc: int  # the same when compiling from source (one run)
    packages: dict[str, int]
    importers: dict[str, tuple[str, ...]]
    detail: dict[str, int]  # DETAIL_PACKAGES
    top: list[tuple[str, int]]  # heaviest top-level packages


def summarise_imports(runs: Sequence[list[ImportEntry]], nopyc: list[ImportEntry]) -> ImportSummary:
    def med(values: Sequence[int]) -> int:
        return int(statistics.median(values))

    def ours(entries: Sequence[ImportEntry]) -> int:
        return sum(e.self_us for e in entries if _inside(e.name, "join_agent"))

    def group_cost(entries: Sequence[ImportEntry], pkg: str) -> int:
        return sum(package_cost(entries, m)[0] for m in GROUPS.get(pkg, (pkg,)))

    packages = {p: med([group_cost(r, p) for r in runs]) for p in IMPORT_PACKAGES}
    tops = [top_level_costs(r) for r in runs]
    names = set().union(*tops)
    top = sorted(((n, med([t.get(n, 0) for t in tops])) for n in names), key=lambda kv: -kv[1])
    return ImportSummary(
        runs=len(runs),
        total=med([sum(e.cumulative_us for e in r if e.depth == 0) for r in runs]),
        ours_self=med([ours(r) for r in runs]),
        ours_self_nopyc=ours(nopyc),
        packages=dict(sorted(packages.items(), key=lambda kv: -kv[1])),
        importers={
            p: tuple(
                dict.fromkeys(i for m in GROUPS.get(p, (p,)) for i in package_cost(runs[0], m)[1])
            )
            for p in IMPORT_PACKAGES
        },
        detail={p: med([package_cost(r, p)[0] for r in runs]) for p in DETAIL_PACKAGES},
        top=[kv for kv in top if kv[0] != "join_agent"][:12],
    )


# ----------------------------------------------------------------------------- profiling


@dataclass(frozen=True)
class Profile:
    imports: ImportSummary
    cprofile: dict[str, Any]  # PSTATS_SCRIPT's answer
    start: float  # `python -c pass`
    start_nosite: float  # `python -S -c pass`
    version_only: float  # `join-agent --version`
    alone: dict[str, float]  # `python -c "import X"` minus `python -c pass`
    deps_now: float  # `python -c DEPS_NOW`
    deps_lean: float  # `python -c DEPS_LEAN`
    join: float  # join-agent join (P-256) in the same series
    runs: int


def profile(bench: Bench, python: Path, key: KeyKind, runs: int, import_runs: int) -> Profile:
    def under_python(flags: Sequence[str], env: Mapping[str, str]) -> str:
        d = bench.prepare_join(key)
        argv = [str(python), *flags, "-m", "join_agent", *bench.join_args(d)]
        r = subprocess.run(argv, cwd=d, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
        return r.stderr

    imports = [
        parse_importtime(under_python(["-X", "importtime"], bench.env_pyc))
        for _ in range(import_runs)
    ]
    nopyc = parse_importtime(under_python(["-X", "importtime"], bench.env_nopyc))

    dump = bench.root / "join.cprofile"
    under_python(["-m", "cProfile", "-o", str(dump)], bench.env_pyc)
    r = subprocess.run(
        [str(python), "-c", PSTATS_SCRIPT, str(dump), "15"],
        capture_output=True,
        text=True,
        check=True,
        env=bench.env_pyc,
    )
    cprofile = json.loads(r.stdout)

    def command(*argv: str) -> Callable[[], float]:
        return functools.partial(_timed, argv, bench.root, " ".join(argv), bench.env_pyc)

    def join() -> float:
        elapsed, workdir, _ = bench.runner(JOIN)(key)
        shutil.rmtree(workdir)
        return elapsed

    py = str(python)
    jobs = {
        "start": command(py, "-c", "pass"),
        "start_nosite": command(py, "-S", "-c", "pass"),
        "version_only": command(str(bench.join_agent), "--version"),
        "deps_now": command(py, "-c", DEPS_NOW),
        "deps_lean": command(py, "-c", DEPS_LEAN),
        "join": join,
        **{f"alone:{pkg}": command(py, "-c", ALONE[pkg]) for pkg in IMPORT_PACKAGES},
    }
    m = interleaved_medians(jobs, runs)
    return Profile(
        imports=summarise_imports(imports, nopyc),
        cprofile=cprofile,
        start=m["start"],
        start_nosite=m["start_nosite"],
        version_only=m["version_only"],
        alone={pkg: m[f"alone:{pkg}"] - m["start"] for pkg in IMPORT_PACKAGES},
        deps_now=m["deps_now"],
        deps_lean=m["deps_lean"],
        join=m["join"],
        runs=runs,
    )


# ----------------------------------------------------------------------------- reporting


def machine(python: Path, kubectl: Path) -> dict[str, str]:
    def first_line(argv: Sequence[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        except OSError as e:
            return f"unavailable ({e.strerror})"
        text = (r.stdout or r.stderr).strip()
        return text.splitlines()[0] if text else "unknown"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kubectl_version = first_line([str(kubectl), "version", "--client", "--short"])
    cfssl_version = first_line(["cfssl", "version"]).replace("Version: ", "")
    return {
        "load average at start (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "nproc": first_line(["nproc"]),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "python (join-agent)": first_line([str(python), "-c", "import sys; print(sys.version)"]),
        "cfssl": f"{cfssl_version} (Debian golang-cfssl, {shutil.which('cfssl')})",
        "kubectl": f"{kubectl_version.replace('Client Version: ', '')} ({kubectl})",
        "curl": first_line(["curl", "--version"]),
        "jq": first_line(["jq", "--version"]),
        "bash": first_line(["bash", "--version"]),
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def us_ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def results_table(results: Results, flows: Sequence[str], keys: Sequence[KeyKind]) -> list[str]:
    rows = [
        "| key | flow | median ms | p90 ms | min ms | runs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key in keys:
        for flow in flows:
            s = results[(flow, key.label)]
            rows.append(
                f"| {key.label} | {flow} | {ms(s.median)} | {ms(s.p90)} | {ms(s.min)} "
                f"| {len(s.runs)} |"
            )
    return rows


def ratio_lines(results: Results, flows: Sequence[str], keys: Sequence[KeyKind]) -> list[str]:
    lines = []
    for key in keys:
        shell = results[(SHELL, key.label)].median
        for flow in flows:
            if flow == SHELL:
                continue
            ratio = results[(flow, key.label)].median / shell
            verdict = ""
            if key.label == "P-256" and flow == JOIN:
                met = "met" if ratio <= P256_TARGET else "NOT met"
                verdict = f" (target <= {P256_TARGET:.2f}: {met})"
            lines.append(f"- {key.label}: {flow} / shell = **{ratio:.2f}**{verdict}")
    return lines


def cprofile_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["| cumtime ms | tottime ms | calls | function |", "|---:|---:|---:|---|"]
    for r in rows:
        cum, tot = float(r["cumtime"]), float(r["tottime"])
        where = str(r["where"]).replace("|", "\\|")
        out.append(f"| {cum * 1000:.1f} | {tot * 1000:.1f} | {r['ncalls']} | `{where}` |")
    return out


def where_time_goes(p: Profile) -> list[str]:
    imp = p.imports
    named = sum(imp.packages.values())
    work = p.join - p.start - imp.total / 1e6
    out = [
        f"Fixed costs (medians of {p.runs} runs of each, interleaved; bytecode cached):",
        "",
        f"- `python -c pass`: {ms(p.start)} ms (`python -S -c pass`: {ms(p.start_nosite)} ms; "
        "the difference is `site` with the venv's `.pth` files)",
        f"- `join-agent --version` (console script, argparse, `join_agent.cli` only): "
        f"{ms(p.version_only)} ms",
        f"- `join-agent join`, P-256, in the same series: {ms(p.join)} ms, which splits into "
        f"≈ {ms(p.start)} ms interpreter start, ≈ {us_ms(imp.total)} ms imports (below) and "
        f"≈ {ms(work)} ms everything else (config, key, CSR, two HTTP round trips to CFSSL "
        "including its signing, checks, writes)",
        "",
        f"Imports, from `-X importtime` joins (`python -X importtime -m join_agent --config X "
        f"join`, median of {imp.runs}; importtime inflates times a little): all imports after "
        f"start-up take **{us_ms(imp.total)} ms**. Each package's cost is the cumulative time "
        "of every import subtree that enters it from outside, so it includes whatever it "
        "drags in that was not loaded yet; 'alone' is `python -c '<statement>'` minus "
        "`python -c pass` (everything it needs, nothing shared).",
        "",
        "| package | in the join, ms | alone, ms | alone: statement | first imported by |",
        "|---|---:|---:|---|---|",
    ]
    for pkg, cost in imp.packages.items():
        name = " + ".join(f"`{m}`" for m in GROUPS.get(pkg, (pkg,)))
        out.append(
            f"| {name} | {us_ms(cost)} | {ms(p.alone[pkg])} | `{ALONE[pkg]}` "
            f"| {', '.join(imp.importers[pkg])} |"
        )
    out += [
        f"| **these five** | **{us_ms(named)}** | | | |",
        "",
        f"join-agent's own modules: {us_ms(imp.ours_self)} ms self time with bytecode, "
        f"{us_ms(imp.ours_self_nopyc)} ms when compiled from source (editable checkout "
        "with PYTHONDONTWRITEBYTECODE=1, one run).",
        "",
        "Heaviest top-level packages in the join (same measure, join_agent left out):",
        "",
        "| package | ms |",
        "|---|---:|",
        *[f"| `{name}` | {us_ms(us)} |" for name, us in imp.top],
        "",
        f"cProfile of one join (`python -m cProfile -o … -m join_agent --config X join`, "
        f"sorted as `-s cumtime`): {p.cprofile['calls']} calls in "
        f"{float(p.cprofile['seconds']) * 1000:.0f} ms (profiler overhead included). "
        "The top 15 by cumulative time:",
        "",
        *cprofile_table(p.cprofile["top"]),
        "",
        "The same without import machinery and module bodies (`importlib`, `<module>`, "
        "`exec`, `__import__`, runpy), i.e. the work itself:",
        "",
        *cprofile_table(p.cprofile["work"]),
    ]
    return out


def findings(p: Profile, results: Results, keys: Sequence[KeyKind]) -> list[str]:
    """What the numbers say (numbers from this run)."""
    imp, named = p.imports, p.cprofile["named"]
    pkg = imp.packages

    def c(name: str) -> str:  # cProfile cumulative, ms
        return f"{float(named.get(name, 0.0)) * 1000:.1f}"

    label = keys[0].label if keys else "P-256"
    shell = results[(SHELL, label)].median
    joined = results[(JOIN, label)].median
    saving = p.deps_now - p.deps_lean
    projected = joined - saving
    rsa_note = []
    if any(k.label == "RSA-2048" for k in keys) and any(k.label == "P-256" for k in keys):
        extra = {
            f: results[(f, "RSA-2048")].median - results[(f, "P-256")].median for f in (SHELL, JOIN)
        }
        rsa_note = [
            f"- RSA-2048 instead of P-256 adds {ms(extra[SHELL])} ms to the shell flow (the key "
            f"is generated by `cfssl gencert`, in Go) but {ms(extra[JOIN])} ms to join-agent "
            "(OpenSSL through cryptography), hence the better RSA ratio."
        ]
    out = [
        "#### What the numbers say",
        "",
        f"- A join is mostly Python start-up and imports: of {ms(p.join)} ms, "
        f"{ms(p.start)} ms is the bare interpreter and ≈ {us_ms(imp.total)} ms imports "
        f"({imp.total / 1e6 / p.join:.0%}). Under cProfile the import system "
        f"(`_find_and_load`) accounts for {c('imports')} of `cli.main`'s {c('main')} ms.",
        f"- The work itself is small (cProfile times, inflated by the profiler): `enroll` "
        f"{c('enroll')} ms, of which the two CFSSL round "
        f"trips (`info` + `authsign`, CFSSL's own signing included) {c('sign')} ms, key "
        f"generation {c('generate_key')} ms, CSR {c('build_csr')} ms, checking the "
        f"certificate {c('check_issued')} ms, rendering the kubeconfig {c('render')} ms "
        f"(PyYAML), installing the pair {c('install')} ms (fsyncs).",
        f"- `transport.make_client` costs {c('make_client')} ms although it only builds an "
        "`httpx.Client`: httpx imports `httpcore` lazily in `HTTPTransport.__init__`, so "
        "that import lands there.",
        f"- `log.setup` {c('log_setup')} ms (structlog is imported only when a line is "
        "logged; a quiet join logs none).",
        *rsa_note,
        "",
        "#### Heavy imports on the join path",
        "",
        "Measured, not advice: what each still costs in a join (packages under 1 ms left "
        "out). The decisions taken on them are in the hand-written part of this file.",
        "",
        *[
            f"- `{name}`: ≈ {us_ms(cost)} ms"
            for name, cost in sorted(pkg.items(), key=lambda kv: -kv[1])
            if cost >= 1000
        ],
        f"- own modules (`join_agent`), bytecode cached: ≈ {us_ms(imp.ours_self)} ms; "
        f"compiled from source: ≈ {us_ms(imp.ours_self_nopyc)} ms",
        f"- interpreter start: ≈ {ms(p.start)} ms; the work (`enroll` under cProfile): "
        f"≈ {c('enroll')} ms",
        "",
        f"Measured what-if: `python -c` with today's third-party imports of a join "
        f"({ms(p.deps_now)} ms) vs the same with `json` and `http.client` instead of "
        f"httpx/httpcore and yaml ({ms(p.deps_lean)} ms) saves {ms(saving)} ms, "
        f"shared stdlib modules accounted for. Taken off the {label} join's median above "
        f"({ms(joined)} ms) that gives "
        f"≈ {ms(projected)} ms, **≈ {projected / shell:.2f} of the shell flow** for {label} "
        f"(target ≤ {P256_TARGET:.2f}).",
    ]
    return out


def render_markdown(
    results: Results,
    flows: Sequence[str],
    keys: Sequence[KeyKind],
    info: dict[str, str],
    *,
    prof: Profile | None,
    args: argparse.Namespace,
) -> str:
    seeded = (
        "**Debian's kubectl 1.20.2 panics in `config set-credentials` when the user does "
        "not exist yet** (Go ≥ 1.18 build with an old vendored reflect2; kubernetes/kubectl"
        "#1394), so the seed flow, as written, fails on bookworm at step 3 (under `set -e`; "
        "without it the kubeconfig silently lacks the user). Changing an existing user works, "
        "so the bench writes a skeleton `kubelet.conf` naming the user before the clock "
        "starts, with the other cloud-init files; the four timed kubectl calls are unchanged."
        if args.seeded
        else "kubectl's `set-credentials` worked as is."
    )
    lines = [
        MARKER_BEGIN,
        "## Time to credential: `join-agent join` vs the cloud-init shell flow",
        "",
        f"Generated by `bench/join_time.py` on {time.strftime('%Y-%m-%d')}; re-run with "
        f"`{rerun_command(args, 'join_time.py')}` from the repository root "
        "(`--help` for options).",
        "",
        "### Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "### Method",
        "",
        "- One real `cfssl serve` (`tests/lab/cfssl_ca.py`) on 127.0.0.1 with auth-keyed "
        "profiles `kubelet`/`client`; plain HTTP; both flows talk to the same server.",
        "- **shell**: a bash script (generated by the bench) doing what cloud-init does "
        'today: `curl -s -d \'{"profile":"kubelet"}\' $CA/api/v1/cfssl/info | jq -r '
        ".result.certificate > ca.pem`; `cfssl gencert -config=auth-remote.json "
        "-profile=kubelet -hostname=<name>,<ip> worker-csr.json | cfssljson -bare worker` "
        '(client config: `"auth_remote": {"remote": "ca", "auth_key": "node-key"}`, the key '
        'in `auth_keys`, `"remotes": {"ca": "http://127.0.0.1:PORT"}`: this cfssl needs the '
        "scheme, a bare `127.0.0.1:PORT` fails with `failed to connect to remote`); four "
        "`kubectl config` calls (`set-cluster` and `set-credentials` with `--embed-certs`, "
        "`set-context`, `use-context`). The certificate comes from the `kubelet` profile "
        "(checked: client auth usage).",
        f"- kubectl: {seeded}",
        "- **join-agent**: `join-agent --config config.toml join` through the console script "
        "of the editable install, node name and address set explicitly (the shell flow's), "
        "`[signer.cfssl]` URL, auth key file (0600), CA pin; every path in the run's "
        "directory. **join-agent** runs with a bytecode cache (a private "
        "`PYTHONPYCACHEPREFIX`, filled by the warm-up runs), as an installed wheel or .deb "
        f"would; **{JOIN_NOPYC}** runs the same with `PYTHONDONTWRITEBYTECODE=1` (set in this "
        "workspace's environment), so the editable `join_agent` is compiled on every run.",
        "- Each run gets a fresh temporary directory; inputs (CFSSL client config, CSR JSON, "
        "config.toml, auth key) are written before the clock starts. The time is "
        "`time.perf_counter()` around `subprocess.run` of the whole process.",
        f"- {args.warmup} warm-up rounds per key type, then {args.runs} timed rounds; a round "
        "runs every flow once, the order rotating from round to round. Every run's exit code "
        "and outputs are checked, and the first certificate of each flow and key type is "
        "checked in depth (subject, client-auth usage, SANs, issuer, key type and size); any "
        "failure aborts the benchmark. p90 is the inclusive 9th decile.",
        "- The machine is shared with other work (load averages above): rotating the order "
        "keeps the flows under the same conditions, but single runs vary; the min column "
        "shows the quiet-machine floor.",
        "",
        "### Results",
        "",
        *results_table(results, flows, keys),
        "",
        "Ratio of medians:",
        "",
        *ratio_lines(results, flows, keys),
        "",
    ]
    if prof is not None:
        lines += ["### Where the time goes", "", *where_time_goes(prof), ""]
        lines += [*findings(prof, results, keys), ""]
    lines.append(MARKER_END)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def interpreter_of(script: Path) -> Path:
    """The Python a console script runs under (its shebang), else ours."""
    try:
        first = script.read_bytes()[:256].split(b"\n", 1)[0]
    except OSError:
        return Path(sys.executable)
    if first.startswith(b"#!") and b"python" in first:
        return Path(first[2:].decode().strip().split()[0])
    return Path(sys.executable)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30, help="timed rounds per key (default 30)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--keys", nargs="+", choices=sorted(KEYS), default=["p256", "rsa2048"])
    p.add_argument(
        "--join-agent",
        type=Path,
        default=default_join_agent(),
        metavar="PATH",
        help="join-agent executable (default: next to this Python)",
    )
    p.add_argument(
        "--kubectl",
        type=Path,
        default=DEFAULT_KUBECTL,
        metavar="PATH",
        help=f"kubectl for the shell flow (default: {DEFAULT_KUBECTL}, "
        "where `bash .ci/install-tools` puts Debian's 1.20.2)",
    )
    p.add_argument(
        "--seed-user",
        choices=("auto", "yes", "no"),
        default="auto",
        help="pre-write kubelet.conf naming the user (auto: if kubectl has the "
        "set-credentials panic of Debian's 1.20.2)",
    )
    p.add_argument("--no-nopyc", action="store_true", help=f"skip the '{JOIN_NOPYC}' flow")
    p.add_argument(
        "--bookworm-join-agent",
        type=Path,
        metavar="PATH",
        help=f"also time '{JOIN_BOOKWORM}': a join-agent installed over Debian bookworm's "
        "dependency versions (e.g. .venv-bookworm/bin/join-agent), what the .deb runs on",
    )
    p.add_argument("--no-profile", action="store_true", help="skip importtime and cProfile")
    p.add_argument("--import-runs", type=int, default=5, help="-X importtime joins (default 5)")
    p.add_argument(
        "--write", type=Path, default=REPO / "docs" / "benchmarks.md", metavar="MARKDOWN"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if args.runs < 15:
        print(f"note: --runs {args.runs} is below the 15 the report asks for", file=sys.stderr)
    if args.runs < 2 or args.warmup < 1:
        p.error("need --runs >= 2 (for p90) and --warmup >= 1 (fills the bytecode cache)")
    return args


def run_all(
    ca: CfsslCA, tmp: Path, python: Path, args: argparse.Namespace
) -> tuple[Results, Profile | None]:
    seed = args.seed_user == "yes" or (
        args.seed_user == "auto" and set_credentials_panics(args.kubectl, tmp / "probe")
    )
    args.seeded = seed
    if seed:
        print("kubectl panics in set-credentials: seeding kubelet.conf's user", file=sys.stderr)
    bench = Bench(ca, tmp, args.join_agent, args.kubectl, seed, args.bookworm_join_agent)
    results = measure(bench, args.flows, args.key_kinds, args.runs, args.warmup)
    prof = None
    if not args.no_profile:
        print("profiling…", file=sys.stderr)
        prof = profile(bench, python, KEYS["p256"], args.runs, args.import_runs)
    return results, prof


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("cfssl", "cfssljson", "curl", "jq", "openssl", "bash"):
        if not shutil.which(tool):
            print(f"join_time: {tool} is not installed (bash .ci/install-tools)", file=sys.stderr)
            return 2
    for exe in (args.join_agent, args.kubectl):
        if not os.access(exe, os.X_OK):
            print(f"join_time: {exe} is not executable", file=sys.stderr)
            return 2
    try:
        from tests.lab.cfssl_ca import running_ca
    except ImportError:
        print("join_time: run from the repository root with PYTHONPATH=.", file=sys.stderr)
        return 2

    args.key_kinds = [KEYS[k] for k in args.keys]
    args.flows = (SHELL, JOIN) if args.no_nopyc else (SHELL, JOIN, JOIN_NOPYC)
    if args.bookworm_join_agent:
        args.flows = (*args.flows, JOIN_BOOKWORM)
    python = interpreter_of(args.join_agent)
    info = machine(python, args.kubectl)
    tmp = Path(tempfile.mkdtemp(prefix="join-time-"))
    try:
        with running_ca(tmp / "ca") as ca:
            results, prof = run_all(ca, tmp, python, args)
    except BenchError as e:
        hint = "" if args.keep else " (--keep keeps the run directories)"
        print(f"join_time: {e}{hint}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    info["load average at end (1/5/15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print("\n".join(results_table(results, args.flows, args.key_kinds)))
    print()
    print("\n".join(ratio_lines(results, args.flows, args.key_kinds)))
    if prof is not None:
        print()
        print("\n".join(where_time_goes(prof)))
        print()
        print("\n".join(findings(prof, results, args.key_kinds)))
    if not args.no_write:
        section = render_markdown(
            results,
            args.flows,
            args.key_kinds,
            info,
            prof=prof,
            args=args,
        )
        write_section(args.write, section, MARKER_BEGIN, MARKER_END)
        print(f"\nwrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
