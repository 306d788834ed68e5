"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager v1.20.2) on
127.0.0.1, for the kube tests. The binaries come from `.ci/build-kube`.

The cluster is set up the way docs/kubernetes.md tells operators to set up theirs, with the
same files: docs/kubernetes/rbac.yaml, a cluster-info ConfigMap made by ``kubectl create
configmap``, bootstrap tokens from docs/kubernetes/bootstrap-token.yaml. So a test that
passes here also checks the instructions. No kubelet is ever started: the nodes under test
are join-agent's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import re
import secrets
import shutil
import ssl
import string
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.lab import certs
from tests.lab.cfssl_ca import free_port

REPO = Path(__file__).resolve().parents[2]
RBAC_YAML = REPO / "docs" / "kubernetes" / "rbac.yaml"
TOKEN_TEMPLATE = REPO / "docs" / "kubernetes" / "bootstrap-token.yaml"
KUBE_VERSION = "v1.20.2"

# How long start-up may take before we give up: the whole plane is up in ~4 s on 2 cores, so
# these leave room for a loaded CI machine without hiding a hang.
ETCD_TIMEOUT = 20.0
APISERVER_TIMEOUT = 60.0
# The bootstrapsigner controller re-signs cluster-info a few seconds after a token appears.
JWS_TIMEOUT = 20.0

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's own words."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.output}"


class StartupError(RuntimeError):
    pass


def _log_tail(path: Path, chars: int = 3000) -> str:
    """The log's end, preceded by its first error lines: a bad flag makes the Kubernetes
    binaries print "Error: ..." and then pages of usage, which a bare tail would show alone."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    errors = [line for line in text.splitlines() if re.match(r"(Error:|[EF]\d{4} )", line)]
    head = "first errors:\n" + "\n".join(errors[:10]) + "\n...\n" if errors else ""
    return head + text[-chars:]


# --- PKI -------------------------------------------------------------------------------------


@dataclass
class _Pki:
    dir: Path
    ca: certs.CA = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key = certs.ec_key()
        now = datetime.now(timezone.utc)
        self.ca = certs.authority(
            "join-agent lab cluster CA",
            key=key,
            not_before=now - timedelta(minutes=5),
            not_after=now + timedelta(days=30),
            extensions=((x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),),
        )
        self.write_pem("ca.crt", certs.cert_pem(self.ca.cert))
        self.write_pem("ca.key", certs.key_pem(key))

    def write_pem(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(
        self,
        name: str,
        cn: str,
        *,
        orgs: tuple[str, ...] = (),
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """Issue a leaf cert; write ``<name>.crt`` and ``<name>.key``."""
        key = certs.ec_key()
        now = datetime.now(timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.key.public_key())
        cert = self.ca.issue(
            key.public_key(),
            subject=certs.name(cn, *orgs),
            dns=dns,
            ips=[ipaddress.ip_address(i) for i in ips],
            eku=(usage,),
            not_before=now - timedelta(minutes=5),
            not_after=now + timedelta(days=30),
            extensions=((aki, False),),
        )
        return (
            self.write_pem(f"{name}.crt", certs.cert_pem(cert)),
            self.write_pem(f"{name}.key", certs.key_pem(key)),
        )

    def service_account_keys(self) -> tuple[Path, Path]:
        key = certs.ec_key()
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return self.write_pem("sa.pub", pub), self.write_pem("sa.key", certs.key_pem(key))

    @property
    def pin(self) -> str:
        spki = self.ca.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256:" + hashlib.sha256(spki).hexdigest()


def _client_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> Path:
    """A kubeconfig with embedded credentials (JSON is YAML, so no YAML writer is needed)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "lab", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [{"name": "lab", "user": {
            "client-certificate-data": b64(cert), "client-key-data": b64(key),
        }}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
        "current-context": "lab",
    }  # fmt: skip
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


# --- processes -------------------------------------------------------------------------------


@dataclass
class _Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise StartupError(
                f"{self.name} exited with {self.proc.returncode} during start-up; "
                f"tail of {self.log}:\n{_log_tail(self.log)}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, argv: list[str], workdir: Path) -> _Process:
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            # Its own session: a Ctrl-C aimed at pytest must not reach the control plane
            # before our finally does, in the order that lets each part stop cleanly.
            start_new_session=True,
        )
    return _Process(name, proc, log_path)


def _wait(what: str, ready: Callable[[], bool], procs: list[_Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        if ready():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- tail of {p.log}:\n{_log_tail(p.log)}" for p in procs)
    raise StartupError(f"{what} not ready within {timeout:.0f} s\n{tails}")


def _https_get(url: str, context: ssl.SSLContext, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


# --- the control plane -----------------------------------------------------------------------


@dataclass
class ControlPlane:
    server: str
    ca_pem: Path
    ca_pin: str
    admin_kubeconfig: Path
    workdir: Path
    kubectl_path: str = field(repr=False, default="kubectl")

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl, as the admin unless another kubeconfig is given."""
        argv = [self.kubectl_path, "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args]
        r = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=60, check=False
        )
        if check and r.returncode != 0:
            raise KubectlError(r.returncode, argv, r.stdout, r.stderr)
        return r

    def cluster_info(self) -> dict[str, str]:
        """``data`` of kube-public/cluster-info as an anonymous client sees it."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        status, body = _https_get(
            f"{self.server}/api/v1/namespaces/kube-public/configmaps/cluster-info", ctx
        )
        if status != 200:
            raise RuntimeError(f"anonymous GET cluster-info: HTTP {status}: {body[:500]!r}")
        data: dict[str, str] = json.loads(body).get("data") or {}
        return data

    def create_token(self, *, expires: datetime | None = None, usage_signing: bool = True) -> str:
        """Create a bootstrap token the documented way; return ``<id>.<secret>``.

        With ``usage_signing`` the token is only usable for discovery once the bootstrapsigner
        has signed cluster-info with it, so wait for that rather than make every test poll.
        """
        token_id = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(6))
        token_secret = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16))
        self.kubectl("create", "-f", "-", input=render_token(
            token_id, token_secret, expires=expires, usage_signing=usage_signing
        ))  # fmt: skip
        if usage_signing:
            self._wait_jws(token_id, present=True)
        return f"{token_id}.{token_secret}"

    def delete_token(self, token: str) -> None:
        token_id = token.split(".", 1)[0]
        self.kubectl("-n", "kube-system", "delete", "secret", f"bootstrap-token-{token_id}")
        self._wait_jws(token_id, present=False)

    def _wait_jws(self, token_id: str, *, present: bool) -> None:
        key = f"jws-kubeconfig-{token_id}"
        deadline = time.monotonic() + JWS_TIMEOUT
        while time.monotonic() < deadline:
            if (key in self.cluster_info()) == present:
                return
            time.sleep(0.2)
        state = "appear in" if present else "leave"
        raise TimeoutError(
            f"{key} did not {state} cluster-info within {JWS_TIMEOUT:.0f} s; tail of "
            f"kube-controller-manager.log:\n"
            f"{_log_tail(self.workdir / 'kube-controller-manager.log')}"
        )


def render_token(
    token_id: str,
    token_secret: str,
    *,
    expires: datetime | None = None,
    usage_signing: bool = True,
) -> str:
    """docs/kubernetes/bootstrap-token.yaml with its placeholders filled in, as the docs'
    ``sed`` line does; no expiration line at all when ``expires`` is None."""
    text = TOKEN_TEMPLATE.read_text()
    if expires is None:
        text = re.sub(r"(?m)^[ \t]*expiration:.*\n", "", text)
    else:
        stamp = expires.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = text.replace("EXPIRATION", stamp)
    if not usage_signing:
        text = re.sub(r'(?m)^([ \t]*usage-bootstrap-signing:[ \t]*)"true"', r'\1"false"', text)
    return text.replace("TOKEN_ID", token_id).replace("TOKEN_SECRET", token_secret)


@contextlib.contextmanager
def running_control_plane(
    workdir: Path, bin_dir: Path, kubectl: str, *, signing_duration: str = "1h"
) -> Iterator[ControlPlane]:
    """Start etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, set the cluster up
    as the docs say, yield it, and stop every process (also when start-up fails)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = _Pki(workdir / "pki")
    ca_crt, ca_key = pki.dir / "ca.crt", pki.dir / "ca.key"
    serving = pki.issue(
        "apiserver",
        "kube-apiserver",
        server=True,
        dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ips=("127.0.0.1",),
    )
    admin = pki.issue("admin", "join-agent-lab-admin", orgs=("system:masters",))
    kcm = pki.issue("controller-manager", "system:kube-controller-manager")
    sa_pub, sa_key = pki.service_account_keys()

    etcd_client, etcd_peer, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    admin_kubeconfig = _client_kubeconfig(workdir / "admin.kubeconfig", server, ca_crt, *admin)
    kcm_kubeconfig = _client_kubeconfig(
        workdir / "controller-manager.kubeconfig", server, ca_crt, *kcm
    )
    cp = ControlPlane(server, ca_crt, pki.pin, admin_kubeconfig, workdir, kubectl)

    procs: list[_Process] = []
    try:
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        procs.append(_spawn("etcd", [
            str(bin_dir / "etcd"),
            "--name=lab",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=lab={peer_url}",
        ], workdir))  # fmt: skip
        ctx_plain = ssl.create_default_context()
        _wait("etcd", lambda: _http_ok(f"{etcd_url}/health", ctx_plain), procs, ETCD_TIMEOUT)

        procs.append(_spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            "--insecure-port=0",
            # A loopback advertise address may not back the `kubernetes` Service's endpoints.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--client-ca-file={ca_crt}",
            f"--tls-cert-file={serving[0]}",
            f"--tls-private-key-file={serving[1]}",
            "--enable-bootstrap-token-auth=true",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.96.0.0/12",
            "--profiling=false",
        ], workdir))  # fmt: skip
        # The controller manager waits for the API server by itself; starting it now overlaps
        # its own start-up with the API server's.
        procs.append(_spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kcm_kubeconfig}",
            # bootstrapsigner (signs cluster-info with each token) and tokencleaner (drops
            # expired tokens) are off by default; kubeadm turns them on, and so do we.
            "--controllers=*,bootstrapsigner,tokencleaner",
            f"--cluster-signing-cert-file={ca_crt}",
            f"--cluster-signing-key-file={ca_key}",
            f"--cluster-signing-duration={signing_duration}",
            "--use-service-account-credentials=true",
            # The service-account token controller needs these, and the controllers above
            # authenticate with the tokens it mints.
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={ca_crt}",
            "--leader-elect=false",
            # It starts its ~30 controllers one by one, each with a few API calls under its
            # own client-side rate limit (20/s by default): ~7 s until bootstrapsigner runs.
            # The API server here serves no one else, so lift the limit.
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            "--bind-address=127.0.0.1",
            # No serving ports at all: nothing here reads them, and fixed defaults (10252,
            # 10257) would collide between two test runs on one machine.
            "--port=0",
            "--secure-port=0",
            "--profiling=false",
            # Which controller started when, and what the signers did: what a failing kube
            # test's log needs to show.
            "--v=2",
        ], workdir))  # fmt: skip

        admin_ctx = ssl.create_default_context(cafile=str(ca_crt))
        admin_ctx.load_cert_chain(str(admin[0]), str(admin[1]))
        _wait(
            "kube-apiserver /readyz and namespace kube-public",
            # kube-public is created by an API server loop that /readyz does not wait for.
            lambda: (
                _http_ok(f"{server}/readyz", admin_ctx)
                and _http_ok(f"{server}/api/v1/namespaces/kube-public", admin_ctx)
            ),
            procs,
            APISERVER_TIMEOUT,
        )
        _set_up_cluster(cp)
        yield cp
    finally:
        for p in reversed(procs):
            p.stop()
        # etcd preallocates 64 MB of WAL, and pytest keeps the last three sessions' temp
        # dirs; the logs beside it are what a failure needs, so only the data goes.
        shutil.rmtree(workdir / "etcd", ignore_errors=True)


def _http_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        return _https_get(url, context, timeout=1.0)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def _set_up_cluster(cp: ControlPlane) -> None:
    """What docs/kubernetes.md asks an operator to run once per cluster."""
    cp.kubectl("apply", "-f", str(RBAC_YAML))
    info = cp.workdir / "cluster-info.kubeconfig"
    info.unlink(missing_ok=True)
    cp.kubectl(
        "config", "set-cluster", "kubernetes",
        f"--server={cp.server}",
        f"--certificate-authority={cp.ca_pem}",
        "--embed-certs=true",
        kubeconfig=info,
    )  # fmt: skip
    cp.kubectl(
        "-n", "kube-public", "create", "configmap", "cluster-info",
        f"--from-file=kubeconfig={info}",
    )  # fmt: skip
