"""CFSSL's remote API: ``info`` for the CA, ``authsign`` with an HMAC token.

Wire format (verified against cfssl 1.2.0): both endpoints take a JSON POST and answer
with the envelope ``{"success", "result", "errors": [{"code", "message"}], "messages"}``.
``authsign``'s token is HMAC-SHA256 over the exact request bytes, both base64-encoded.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from join_agent.config.model import CfsslConfig
from join_agent.errors import CAResponseError, TransportError, TrustError
from join_agent.host.identity import Identity
from join_agent.log import get_logger
from join_agent.net.transport import Limits, Response, post
from join_agent.pki import compat, keys, pinning
from join_agent.signers.base import Issued

if TYPE_CHECKING:
    from join_agent.net.transport import Client

log = get_logger("join_agent.cfssl")

INFO = "/api/v1/cfssl/info"
AUTHSIGN = "/api/v1/cfssl/authsign"

T = TypeVar("T")


class CfsslSigner:
    """Signs through one of several CFSSL servers, tried in order."""

    name = "cfssl"
    client_sans = True

    def __init__(
        self,
        cfg: CfsslConfig,
        auth_key: bytes,
        client: Client,
        *,
        pins: Sequence[str] | None,
        pins_origin: str = "signer.cfssl.ca_pins",
        limits: Limits | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        clock_skew: dt.timedelta = dt.timedelta(minutes=2),
    ) -> None:
        """``pins=None`` accepts any CA (trust on first use); the caller records its pin."""
        self.cfg = cfg
        self.pins_origin = pins_origin
        self.now = now
        self.clock_skew = clock_skew
        self._key = auth_key
        self.client = client
        self.pins = None if pins is None else tuple(pins)
        self.limits = limits or Limits()

    def sign(self, csr: x509.CertificateSigningRequest, identity: Identity) -> Issued:
        hosts = keys.hosts_for(identity)
        return self._each_url(lambda url: self._sign_at(url, csr, hosts, self.cfg.profile))

    def sign_with_profile(
        self, csr: x509.CertificateSigningRequest, hosts: list[str], profile: str
    ) -> Issued:
        """Sign with another profile of the same CA (a ``[[certificate]]`` table)."""
        return self._each_url(lambda url: self._sign_at(url, csr, hosts, profile))

    def fetch_ca(self) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], str]:
        """The pinned CA (issuing CA, bundle, URL) from the first server that answers."""
        return self._each_url(lambda url: (*self._ca_at(url), url))

    def _each_url(self, attempt: Callable[[str], T]) -> T:
        # Like cloud-init's data sources: try each in order, log each failure, and raise
        # one error naming all of them. Only "unreachable" moves on: a CA that answers
        # and refuses, or fails its pin, would do the same at the next URL or is an attack.
        tried: list[str] = []
        for url in self.cfg.urls:
            try:
                return attempt(url)
            except TransportError as e:
                log.warning("ca_unavailable", url=url, error=str(e))
                tried.append(f"{url} ({_strip_what(str(e), url)})")
        raise TransportError(
            f"no CFSSL server answered: {'; '.join(tried)}; check that the CA is running and "
            "reachable from this node"
        )

    def _ca_at(self, url: str) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
        bundle = fetch_info(self.client, url, self.limits, self.cfg.profile, self.cfg.label)
        ca = bundle[0]
        return ca, self._check_pin(ca, bundle, url)

    def _check_pin(
        self, ca: x509.Certificate, bundle: Sequence[x509.Certificate], url: str
    ) -> tuple[x509.Certificate, ...]:
        """The trusted path from the issuing CA to a pin; nothing else is kept."""
        if self.pins is None:
            log.warning(
                "ca_not_pinned",
                url=url,
                pin=pinning.spki_pin(ca),
                msg="insecure_skip_ca_pin is set: trusting this CA on first use; "
                "put its pin into signer.cfssl.ca_pins",
            )
        try:
            return pinning.trusted_path(
                ca,
                bundle,
                self.pins,
                now=self.now(),
                clock_skew=self.clock_skew,
                origin=self.pins_origin,
            )
        except TrustError as e:
            raise TrustError(f"the CA at {url}: {e}") from None

    def _sign_at(
        self, url: str, csr: x509.CertificateSigningRequest, hosts: list[str], profile: str
    ) -> Issued:
        ca, bundle = self._ca_at(url)
        inner = json.dumps(
            {
                "certificate_request": csr.public_bytes(serialization.Encoding.PEM).decode(),
                "profile": profile,
                "label": self.cfg.label,
                "hosts": hosts,
            }
        ).encode()
        token = hmac.new(self._key, inner, hashlib.sha256).digest()
        body = json.dumps(
            {
                "token": base64.b64encode(token).decode(),
                "request": base64.b64encode(inner).decode(),
            }
        ).encode()
        response = post(self.client, url + AUTHSIGN, body, self.limits, what=f"the CA at {url}")
        certs = certificates(unwrap(response, url, AUTHSIGN, profile), url, AUTHSIGN)
        return Issued(certificate=certs[0], ca=ca, ca_bundle=bundle, verify_with=ca, source=url)


def fetch_info(
    client: Client, url: str, limits: Limits, profile: str = "", label: str = ""
) -> list[x509.Certificate]:
    """The CA bundle a CFSSL server announces at ``info`` (not yet checked against a pin)."""
    request: dict[str, str] = {}
    if profile:
        request["profile"] = profile
    if label:
        request["label"] = label
    response = post(
        client, url + INFO, json.dumps(request).encode(), limits, what=f"the CA at {url}"
    )
    return certificates(unwrap(response, url, INFO, profile), url, INFO)


def certificates(result: dict[str, Any], url: str, path: str) -> list[x509.Certificate]:
    """The non-empty list of certificates in a result's ``certificate`` PEM."""
    pem = _field(result, "certificate", url, path)
    try:
        certs = compat.load_pem_certificates(pem.encode())
    except ValueError:
        certs = []
    if not certs:
        raise CAResponseError(f"the CA at {url} sent no readable certificate from {path}")
    try:
        for c in certs:
            c.extensions  # noqa: B018 - parsed lazily: a malformed one must fail here
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise CAResponseError(
            f"the CA at {url}: a certificate it sent from {path} has malformed extensions: "
            "refusing it"
        ) from None
    return certs


def unwrap(response: Response, url: str, path: str, profile: str) -> dict[str, Any]:
    """Unwrap CFSSL's envelope; turn its errors into one sentence for a person."""
    status = response.status
    if 300 <= status < 400:
        target = _clean(response.headers.get("location", "?"))
        raise TransportError(
            f"the CA at {url} answered {path} with a redirect to {target}; join-agent "
            "follows no redirects: put the final URL into signer.cfssl.urls"
        )
    try:
        doc = json.loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is an attack
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("success"), bool):
        if status >= 500 or status == 404:
            raise TransportError(f"the CA at {url} answered {path} with HTTP {status}")
        raise CAResponseError(
            f"the CA at {url} answered {path} with HTTP {status} and no CFSSL response: "
            "is this a CFSSL server?"
        )
    if doc["success"] and status == 200:
        result = doc.get("result")
        if not isinstance(result, dict):
            raise CAResponseError(f"the CA at {url} sent a malformed result from {path}")
        return result
    errors = doc.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else {}
    message = _clean(first.get("message", "")) if isinstance(first, dict) else ""
    code = first.get("code") if isinstance(first, dict) else None
    if status >= 500:
        raise TransportError(f"the CA at {url} failed ({message or f'HTTP {status}'})")
    if message == "invalid token":
        raise CAResponseError(
            f"the CA at {url} rejected our auth key (invalid token): check "
            "signer.cfssl.auth_key_file against the profile's auth_key on the CA"
        )
    if message == "no authentication provider":
        raise CAResponseError(
            f"the CA at {url} has no auth_key for profile {profile!r}, so it refuses "
            "authenticated requests: give that profile an auth_key on the CA"
        )
    detail = f"{message} (code {code})" if isinstance(code, int) else message or "no reason given"
    raise CAResponseError(f"the CA at {url} refused {path}: {detail}")


def _field(result: dict[str, Any], name: str, url: str, path: str) -> str:
    value = result.get(name)
    if not isinstance(value, str) or not value:
        raise CAResponseError(f"the CA at {url} sent no {name!r} string in its answer to {path}")
    return value


def _clean(text: object) -> str:
    """A peer's text, made safe for one log line: printable, short."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return s[:200] + ("…" if len(s) > 200 else "")


def _strip_what(message: str, url: str) -> str:
    for prefix in (f"cannot connect to the CA at {url}: ", f"the CA at {url} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
