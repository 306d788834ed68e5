"""The Kubernetes CSR API: TLS bootstrap with a bootstrap token, renewal as the node.

With a valid client certificate the node renews as itself (``system:node:<name>``, the
selfnodeclient auto-approval), trusting the CA in ``ca_file``. Without one (first join,
expired after downtime) or when the API server no longer accepts it, it discovers the
cluster again with the bootstrap token and asks as ``system:bootstrap:<id>``.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID

from join_agent import log
from join_agent.config.model import Config
from join_agent.errors import (
    CAResponseError,
    ConfigError,
    JoinAgentError,
    StoreError,
)
from join_agent.host import machine
from join_agent.host.identity import Identity
from join_agent.net import transport
from join_agent.pki import compat, facts
from join_agent.signers import credentials
from join_agent.signers.base import Issued
from join_agent.signers.kubernetes import approval, csr_api, discovery
from join_agent.signers.kubernetes.bootstrap_token import BootstrapToken
from join_agent.storage import guard, names
from join_agent.storage.store import PairStore

_log = log.get_logger("join_agent.kubernetes")

CLIENT_PREFIX = names.CLIENT_PREFIX


class CredentialsRefused(JoinAgentError):
    """The API server answered 401 to the credentials we presented."""


@dataclass(frozen=True)
class Auth:
    """How one request authenticates and what it trusts."""

    server: str
    cas: tuple[x509.Certificate, ...]
    who: str  # for messages: "the node's certificate" / "bootstrap token 'abcdef'"
    token: BootstrapToken | None = None
    client_pem: Path | None = None

    def client(self, limits: transport.Limits) -> httpx.Client:
        ctx = discovery.trust_context(self.cas)
        if self.client_pem is not None:
            try:
                ctx.load_cert_chain(str(self.client_pem))
            except (OSError, ssl.SSLError) as e:
                raise StoreError(f"cannot load {self.client_pem}: {e}") from None
        return transport.make_client(verify=ctx, limits=limits)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.bearer}"
        return headers


def _unfit(
    cert: x509.Certificate, identity: Identity | None, now: dt.datetime, skew: dt.timedelta
) -> str | None:
    """Why the node's certificate cannot ask for its own renewal (pure); None if it can."""
    na = compat.not_valid_after(cert)
    if now >= na:
        return f"the node's client certificate expired at {na:%Y-%m-%d %H:%M:%S}Z"
    if now + skew < compat.not_valid_before(cert):
        return "the node's client certificate is not valid yet"
    held = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if identity is not None and held != [identity.common_name]:
        # The selfnodeclient approver only approves a node renewing under its own name.
        return f"the node's client certificate is for another name ({', '.join(held)})"
    return None


def _what(auth: Auth) -> str:
    return f"the API server at {auth.server}"


class KubernetesSigner:
    """Signs through the API server's CSR API (signer kube-apiserver-client-kubelet)."""

    name = "kubernetes"
    client_sans = False  # the kubelet client signer refuses SANs in a client CSR

    def __init__(
        self,
        cfg: Config,
        environ: Mapping[str, str],
        *,
        limits: transport.Limits | None = None,
        token: BootstrapToken | None = None,
        token_origin: str = "",
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.k = cfg.kubernetes
        self.environ = environ
        self.limits = limits or transport.Limits()
        self._token = token
        self._token_origin = token_origin or str(self.k.bootstrap_token_file)
        self.now = now
        self.sleep = sleep
        self.monotonic = monotonic
        self.pins: tuple[str, ...] | None = self.k.ca_pins or None

    # ------------------------------------------------------------------ the Signer API

    def sign(self, csr: x509.CertificateSigningRequest, identity: Identity) -> Issued:
        why = self._why_not_node(identity)
        if why is None:
            auth = self._node_auth()
            try:
                return self._obtain(csr, auth)
            except (CredentialsRefused, transport.TlsVerifyFailed) as e:
                why = str(e)
                _log.warning("node_credentials_refused", reason=why)
        _log.info("bootstrapping", reason=why)
        token = self._bootstrap_token(why)
        cluster = self._discover(token)
        auth = Auth(
            server=self.cfg.cluster.server or cluster.server,
            cas=cluster.cas,
            who=f"bootstrap token {token.id!r}",
            token=token,
        )
        return self._obtain(csr, auth)

    # ------------------------------------------------------------------ credentials

    def _why_not_node(self, identity: Identity | None = None) -> str | None:
        """None when the node's own certificate can authenticate; else why not."""
        try:
            pair = PairStore(self.cfg.paths.pki_dir, CLIENT_PREFIX).load_current()
        except StoreError as e:
            return f"the node's client certificate is unusable ({e})"
        if pair is None:
            return "the node has no client certificate yet"
        try:
            serial = facts.serial(pair.certificate)
            why = machine.judge(self.cfg.paths.state_dir, self.cfg.node.fingerprint_files, serial)
        except StoreError as e:
            why = str(e)
        if why is None:
            why = _unfit(pair.certificate, identity, self.now(), self.cfg.renewal.clock_skew)
        if why is None and not self._ca_file_cas():
            why = f"{self.cfg.paths.ca_file} holds no CA that signer.kubernetes.ca_pins vouches for"
        return why

    def _node_auth(self) -> Auth:
        server = self.cfg.cluster.server
        if not server:  # the discovery file names it; reading it needs no token
            server = self._discover(None).server
        return Auth(
            server=server,
            cas=self._ca_file_cas(),
            who="the node's client certificate",
            client_pem=PairStore(self.cfg.paths.pki_dir, CLIENT_PREFIX).current,
        )

    def _ca_file_cas(self) -> tuple[x509.Certificate, ...]:
        try:
            data = guard.read(self.cfg.paths.ca_file, "the CA file", cap=guard.PEM_CAP)
            return discovery.accept_cas(
                data,
                self.pins,
                now=self.now(),
                clock_skew=self.cfg.renewal.clock_skew,
                what=str(self.cfg.paths.ca_file),
            )
        except (OSError, JoinAgentError):
            return ()

    def _bootstrap_token(self, why: str) -> BootstrapToken:
        if self._token is None:
            try:
                self._token = credentials.bootstrap_token(self.k.bootstrap_token_file, self.environ)
            except ConfigError as e:
                raise ConfigError(f"{why}, so the bootstrap token is needed, but {e}") from None
            self._token_origin = str(
                credentials.secret_path(
                    credentials.BOOTSTRAP_TOKEN, self.k.bootstrap_token_file, self.environ
                )
            )
        log.register_secret(self._token.secret)
        log.register_secret(self._token.bearer)
        return self._token

    def _discover(self, token: BootstrapToken | None) -> discovery.Cluster:
        now, skew = self.now(), self.cfg.renewal.clock_skew
        if self.k.discovery_file:
            return discovery.file_discovery(
                self.k.discovery_file, self.pins, self.limits, now=now, clock_skew=skew
            )
        if token is None or self.pins is None:  # config validation rules both out
            raise ConfigError("token discovery needs signer.kubernetes.ca_pins and a token")
        try:
            return discovery.token_discovery(
                self.cfg.cluster.server,
                token,
                self.pins,
                self.limits,
                now=now,
                clock_skew=skew,
                token_origin=self._token_origin,
            )
        except discovery.NoSignature:
            detail = f"cluster-info at {self.cfg.cluster.server} carries no signature for it"
            raise CredentialsRefused(self._token_gone(token, detail)) from None

    def _token_gone(self, token: BootstrapToken, detail: str) -> str:
        return (
            f"bootstrap token {token.id!r} expired or was deleted ({detail}): create one "
            f"with `kubeadm token create` and put it in {self._token_origin}"
        )

    # ------------------------------------------------------------------ the CSR API

    def _obtain(self, csr: x509.CertificateSigningRequest, auth: Auth) -> Issued:
        with auth.client(self.limits) as client:
            name = self.create(client, auth, csr, csr_api.CLIENT_SIGNER, csr_api.CLIENT_USAGES)
            result = self._approval().wait(client, auth, name, _what(auth))
        return self._issued(result, auth)

    def create(
        self,
        client: httpx.Client,
        auth: Auth,
        csr: x509.CertificateSigningRequest,
        signer: str,
        usages: tuple[str, ...],
    ) -> str:
        """Create a CertificateSigningRequest; returns the name the server gave it."""
        what = _what(auth)
        r = transport.post(
            client,
            auth.server.rstrip("/") + csr_api.CSR_PATH,
            csr_api.request_body(csr, signer, usages),
            self.limits,
            what=what,
            headers=auth.headers(),
        )
        if r.status != 201:
            raise self._refused(r, auth, what, "create a certificate request")
        name = csr_api.created_name(r.body, what)
        _log.info("csr_created", name=name, signer=signer, auth=auth.who)
        return name

    def read(self, client: httpx.Client, auth: Auth, name: str) -> csr_api.Outcome | None:
        """Where the request ``name`` stands; None when the server no longer has it."""
        what = _what(auth)
        r = transport.get(
            client, csr_api.object_url(auth.server, name), self.limits, what=what,
            headers=auth.headers(),
        )  # fmt: skip
        if r.status == 404:
            return None
        if r.status != 200:
            raise self._refused(r, auth, what, f"read certificate request {name}")
        return csr_api.outcome(csr_api.parse_object(r.body, what), what)

    def registered_machine(self, node: str) -> tuple[str, str] | None:
        """The machine that the API server's Node ``node`` reports (its kubelet's
        ``nodeInfo``: machineID, systemUUID), read as the node; None when there is none."""
        auth = self.node_auth()
        what = _what(auth)
        with auth.client(self.limits) as client:
            url = f"{auth.server.rstrip('/')}/api/v1/nodes/{node}"
            r = transport.get(client, url, self.limits, what=what, headers=auth.headers())
        if r.status == 404:
            return None
        if r.status != 200:
            raise self._refused(r, auth, what, f"read its Node {node}")
        status = csr_api.parse_object(r.body, what).get("status")
        info = status.get("nodeInfo") if isinstance(status, dict) else None
        info = info if isinstance(info, dict) else {}
        return str(info.get("machineID") or ""), str(info.get("systemUUID") or "")

    def node_auth(self) -> Auth:
        """The node's own credentials; a JoinAgentError saying why when they are unusable."""
        why = self._why_not_node()
        if why is not None:
            raise CredentialsRefused(why)
        return self._node_auth()

    def _refused(self, r: transport.Response, auth: Auth, what: str, action: str) -> JoinAgentError:
        message = csr_api.status_message(r.body)
        detail = f" ({message})" if message else ""
        if r.status == 401:
            if auth.token is not None:
                return CredentialsRefused(
                    self._token_gone(auth.token, f"{what} answered 401 Unauthorized")
                )
            return CredentialsRefused(f"{what} does not accept {auth.who} (401 Unauthorized)")
        if r.status == 403:
            return CAResponseError(
                f"{what} does not allow {auth.who} to {action}{detail}: apply the RBAC "
                "bindings in docs/kubernetes/rbac.yaml"
            )
        return CAResponseError(f"{what} answered HTTP {r.status} to {action}{detail}")

    def _approval(self) -> approval.Approval:
        return approval.Approval(
            read=self.read,
            limits=self.limits,
            timeout=self.k.csr_timeout,
            monotonic=self.monotonic,
            sleep=self.sleep,
        )

    def _issued(self, found: csr_api.Outcome, auth: Auth) -> Issued:
        leaf = found.certificates[0]
        issuer = next((c for c in auth.cas if compat.signed_by(leaf, c)), None)
        if issuer is None:
            # Per-signer CAs exist since 1.19: the API server vouches for what it returns
            # over TLS we verified, so this is logged, not refused.
            _log.info(
                "per_signer_ca",
                issuer=leaf.issuer.rfc4514_string(),
                msg="the certificate is not signed by the cluster CA; trusting the API server",
            )
        return Issued(
            certificate=leaf,
            ca=issuer or auth.cas[0],
            ca_bundle=auth.cas,
            verify_with=issuer,
            source=f"{auth.server} (certificate request {found.name})",
            server=auth.server,
        )
