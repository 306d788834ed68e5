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

    PYTHONPATH=. .venv/bin/python bench/join_time.py \\
        --bookworm-join-agent .venv-bookworm/bin/join-agent --write
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import (
    BenchError,
    Report,
    Stats,
    expect_code,
    finish,
    interleave,
    interpreter_of,
    load_average,
    machine,
    ms,
    parser,
    python_env,
    table,
    timed,
)
from bench.importtime import ImportEntry
from tests.lab import toml

from bench import importtime

if TYPE_CHECKING:
    from tests.lab.cfssl_ca import CfsslCA

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
# The third-party imports of a join from an http:// CA today (structlog is imported only
# when a line is logged, which a quiet join does not; httpx not at all: net/plain.py), and
# of one without PyYAML (json instead): the difference, measured as whole processes, is
# what dropping PyYAML would save, shared stdlib modules and all.
DEPS_NOW = (
    "import argparse, tomllib, http.client, yaml; "
    "from cryptography import x509; from cryptography.hazmat.primitives import serialization"
)
DEPS_LEAN = (
    "import argparse, tomllib, http.client, json; "
    "from cryptography import x509; from cryptography.hazmat.primitives import serialization"
)
# Parts the findings name (same measure as IMPORT_PACKAGES).
DETAIL_PACKAGES = (
    "httpcore", "asyncio", "structlog.stdlib", "structlog.dev", "ssl", "argparse",
    "join_agent.host.netlink", "join_agent.config",
)  # fmt: skip
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
    "install": ("join_agent/worker/enroll.py", "_install"),
    "atomic_write": ("join_agent/storage/files.py", "atomic_write"),
}
named = {n: sum(v[3] for k, v in st.stats.items() if k[0].endswith(f) and k[2] == fn)
         for n, (f, fn) in NAMED.items()}
print(json.dumps({
    "calls": st.total_calls, "seconds": st.total_tt, "named": named,
    "top": fmt(rows), "work": fmt([kv for kv in rows if not noise(kv[0])]),
}))
"""


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
        self.env_pyc = python_env(self.root / "pycache")
        self.env_nopyc = python_env(None)

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
            toml.document({
                "cluster": {"server": SERVER},
                "node": {"name": NODE_NAME, "addresses": [NODE_IP], "key": key.agent},
                "signer.cfssl": {
                    "urls": [self.ca.url],
                    "auth_key_file": str(auth_key),
                    "ca_pins": [self.ca_pin],
                },
                "paths": {
                    "pki_dir": str(d / "pki"),
                    "kubeconfig": str(d / "kubelet.conf"),
                    "ca_file": str(d / "ca.crt"),
                    "state_dir": str(d / "state"),
                },
                "kubelet": {"manage": False},
            })
        )  # fmt: skip
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
    return timed(argv, env, expect_code(0, f"{what} in {cwd}"), cwd=cwd)


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
    """Every flow once per round, interleaved; the first credential of each flow and key
    is checked in depth."""
    ca_pem = bench.ca.ca_pem.read_bytes()
    results: Results = {}
    for key in keys:
        checked: set[str] = set()

        def run(flow: str, key: KeyKind = key, checked: set[str] = checked) -> float:
            elapsed, workdir, cert = bench.runner(flow)(key)
            if flow not in checked:
                check_certificate(cert, key, ca_pem)
                checked.add(flow)
            shutil.rmtree(workdir)
            return elapsed

        jobs = {flow: functools.partial(run, flow) for flow in flows}
        stats = interleave(jobs, rounds=runs, warmup=warmup, what=key.label)
        results.update({(flow, key.label): st for flow, st in stats.items()})
    return results


# ----------------------------------------------------------------------------- imports


@dataclass(frozen=True)
class ImportSummary:
    """Medians over several ``-X importtime`` joins (microseconds)."""

    runs: int
    total: int  # all imports after start-up
    ours_self: int  # join_agent.* self time
    ours_self_nopyc: int  # the same when compiling from source (one run)
    packages: dict[str, int]
    importers: dict[str, tuple[str, ...]]
    top: list[tuple[str, int]]  # heaviest top-level packages


def summarise_imports(runs: Sequence[list[ImportEntry]], nopyc: list[ImportEntry]) -> ImportSummary:
    med = importtime.median_of

    def ours(entries: Sequence[ImportEntry]) -> int:
        return sum(e.self_us for e in entries if importtime.inside(e.name, "join_agent"))

    def group_cost(entries: Sequence[ImportEntry], pkg: str) -> int:
        return sum(importtime.package_cost(entries, m)[0] for m in GROUPS.get(pkg, (pkg,)))

    def importers(pkg: str) -> tuple[str, ...]:
        found = (i for m in GROUPS.get(pkg, (pkg,)) for i in importtime.package_cost(runs[0], m)[1])
        return tuple(dict.fromkeys(found))

    packages = {p: med([group_cost(r, p) for r in runs]) for p in IMPORT_PACKAGES}
    tops = [importtime.top_level_costs(r) for r in runs]
    names = set().union(*tops)
    top = sorted(((n, med([t.get(n, 0) for t in tops])) for n in names), key=lambda kv: -kv[1])
    return ImportSummary(
        runs=len(runs),
        total=med([importtime.total_us(r) for r in runs]),
        ours_self=med([ours(r) for r in runs]),
        ours_self_nopyc=ours(nopyc),
        packages=dict(sorted(packages.items(), key=lambda kv: -kv[1])),
        importers={p: importers(p) for p in IMPORT_PACKAGES},
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
        importtime.parse(under_python(["-X", "importtime"], bench.env_pyc))
        for _ in range(import_runs)
    ]
    nopyc = importtime.parse(under_python(["-X", "importtime"], bench.env_nopyc))

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
    m = {
        n: st.median
        for n, st in interleave(jobs, rounds=runs, warmup=1, what="fixed costs").items()
    }
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


# ----------------------------------------------------------------------------- report


def us_ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def results_table(results: Results, flows: Sequence[str], keys: Sequence[KeyKind]) -> list[str]:
    rows = []
    for key in keys:
        shell = results[(SHELL, key.label)].median
        for flow in flows:
            s = results[(flow, key.label)]
            rows.append(
                [key.label, flow, ms(s.median), ms(s.p90), ms(s.min), str(len(s.runs)),
                 f"{s.median / shell:.2f}"]
            )  # fmt: skip
    header = ["key", "flow", "median ms", "p90 ms", "min ms", "runs", "/ shell (medians)"]
    return table(header, rows, "llrrrrr")


def target_line(results: Results) -> list[str]:
    """The target, on each dependency set measured (issue 17: on both)."""
    lines = []
    for flow in (JOIN, JOIN_BOOKWORM):
        if (flow, "P-256") not in results:
            continue
        ratio = results[(flow, "P-256")].median / results[(SHELL, "P-256")].median
        met = "met" if ratio <= P256_TARGET else "**not met**"
        lines += [
            "",
            f"P-256: {flow} / shell = **{ratio:.2f}** (target ≤ {P256_TARGET:.2f}: {met})",
        ]
    return lines


def cprofile_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return table(
        ["cumtime ms", "tottime ms", "calls", "function"],
        [
            [f"{float(r['cumtime']) * 1000:.1f}", f"{float(r['tottime']) * 1000:.1f}",
             str(r["ncalls"]), "`" + str(r["where"]).replace("|", "\\|") + "`"]
            for r in rows
        ],
        "rrrl",
    )  # fmt: skip


def where_time_goes(p: Profile, results: Results) -> list[str]:
    imp = p.imports
    named = {k: float(v) for k, v in p.cprofile["named"].items()}
    joined = results.get((JOIN, "P-256"))
    saving = p.deps_now - p.deps_lean
    fixed = [
        ("`python -c pass`", ms(p.start)),
        ("`python -S -c pass`", ms(p.start_nosite)),
        ("`join-agent --version`", ms(p.version_only)),
        ("`join-agent join`, P-256, in the same series", ms(p.join)),
        ("of which imports after start-up (`-X importtime`)", us_ms(imp.total)),
        ("of which the rest (join minus bare start minus imports)",
         ms(p.join - p.start - imp.total / 1e6)),
        ("join_agent's own modules, self time, bytecode cached", us_ms(imp.ours_self)),
        ("join_agent's own modules, self time, compiled from source", us_ms(imp.ours_self_nopyc)),
        ("`python -c` with a join's third-party imports", ms(p.deps_now)),
        ("the same with `json` for PyYAML", ms(p.deps_lean)),
        ("what-if: the P-256 join's median without that difference",
         ms(joined.median - saving) if joined else "-"),
        ("what-if: / shell",
         f"{(joined.median - saving) / results[(SHELL, 'P-256')].median:.2f}" if joined else "-"),
    ]  # fmt: skip
    return [
        f"Fixed costs, medians of {p.runs} interleaved runs; imports, medians of {imp.runs} "
        "`-X importtime` joins:",
        "",
        *table(["what", "ms"], [[k, v] for k, v in fixed]),
        "",
        *table(
            ["package", "in the join, ms", "alone, ms", "alone: statement", "first imported by"],
            [
                [
                    " + ".join(f"`{m}`" for m in GROUPS.get(pkg, (pkg,))),
                    us_ms(cost),
                    ms(p.alone[pkg]),
                    f"`{ALONE[pkg]}`",
                    ", ".join(imp.importers[pkg]),
                ]
                for pkg, cost in imp.packages.items()
            ],
            "lrrll",
        ),
        "",
        *table(
            ["heaviest top-level packages (join_agent left out)", "ms"],
            [[f"`{n}`", us_ms(us)] for n, us in imp.top],
        ),
        "",
        *table(
            ["cProfile, cumulative", "ms"],
            [[f"`{k}`", f"{v * 1000:.1f}"] for k, v in named.items()],
        ),
        "",
        f"cProfile of one join: {p.cprofile['calls']} calls in "
        f"{float(p.cprofile['seconds']) * 1000:.0f} ms, profiler overhead included; the top "
        "15 by cumulative time, then the same without import machinery and module bodies:",
        "",
        *cprofile_table(p.cprofile["top"]),
        "",
        *cprofile_table(p.cprofile["work"]),
    ]


def report(
    results: Results, prof: Profile | None, facts: dict[str, str], args: argparse.Namespace
) -> Report:
    facts["settings"] = (
        f"{args.warmup} warm-up and {args.runs} timed rounds per key; kubelet.conf's user "
        + ("seeded (kubectl's set-credentials panics)" if args.seeded else "not seeded")
    )
    body = [*results_table(results, args.flows, args.key_kinds), *target_line(results)]
    if prof is not None:
        body += ["", *where_time_goes(prof, results)]
    return Report("join_time", facts, body)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=30, help="timed rounds per key (default 30)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--keys", nargs="+", choices=sorted(KEYS), default=["p256", "rsa2048"])
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
    p.add_argument("--no-profile", action="store_true", help="skip importtime and cProfile")
    p.add_argument("--import-runs", type=int, default=5, help="-X importtime joins (default 5)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if args.runs < 2 or args.warmup < 1:
        p.error("need --runs >= 2 (for p90) and --warmup >= 1 (fills the bytecode cache)")
    args.key_kinds = [KEYS[k] for k in args.keys]
    args.flows = (SHELL, JOIN) if args.no_nopyc else (SHELL, JOIN, JOIN_NOPYC)
    if args.bookworm_join_agent:
        args.flows = (*args.flows, JOIN_BOOKWORM)
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
    missing = [
        t for t in ("cfssl", "cfssljson", "curl", "jq", "openssl", "bash") if not shutil.which(t)
    ]
    if missing:
        print(
            f"join_time: not installed: {', '.join(missing)} (bash .ci/install-tools)",
            file=sys.stderr,
        )
        return 2
    for exe in (args.join_agent, args.kubectl):
        if not os.access(exe, os.X_OK):
            print(f"join_time: {exe} is not executable", file=sys.stderr)
            return 2
    from tests.lab.cfssl_ca import running_ca

    python = interpreter_of(args.join_agent)
    facts = machine({
        "python (join-agent)": [str(python), "-c", "import sys; print(sys.version)"],
        "cfssl": ["cfssl", "version"],
        "kubectl": [str(args.kubectl), "version", "--client", "--short"],
        "curl": ["curl", "--version"],
        "jq": ["jq", "--version"],
        "bash": ["bash", "--version"],
    })  # fmt: skip
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
    facts["load average at end (1/5/15 min)"] = load_average()
    finish(report(results, prof, facts, args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
