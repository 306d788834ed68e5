"""Certificate signers behind one small interface (see ``base``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .. import credentials, log, transport, trust
from ..bootstrap_token import BootstrapToken
from ..config import Config
from .base import Signer


@dataclass(frozen=True)
class SignerSetup:
    signer: Signer
    record_tofu_pin: bool  # the CA is accepted on first use; record its pin after success
    pins: tuple[str, ...] | None  # what the CA was checked against (None: first use)


@contextlib.contextmanager
def build(
    cfg: Config,
    environ: Mapping[str, str],
    limits: transport.Limits | None = None,
    *,
    token: BootstrapToken | None = None,
    token_origin: str = "",
) -> Iterator[SignerSetup]:
    """The configured signer with its secret and pins loaded, for the ``with`` block.

    ``token`` is a bootstrap token given on the command line (``join --token-file``); the
    Kubernetes signer otherwise reads its own only when it needs one.
    """
    if cfg.signer_kind == "kubernetes":
        from .kubernetes import KubernetesSigner

        yield SignerSetup(
            signer=KubernetesSigner(
                cfg, environ, limits=limits, token=token, token_origin=token_origin
            ),
            record_tofu_pin=False,
            pins=cfg.kubernetes.ca_pins or None,
        )
        return
    from .cfssl import CfsslSigner

    key = credentials.cfssl_auth_key(cfg.cfssl.auth_key_file, environ)
    log.register_secret(key)  # also covers both cases of its hex spelling
    pins = trust.effective_pins(
        cfg.cfssl.ca_pins, cfg.cfssl.insecure_skip_ca_pin, cfg.paths.state_dir
    )
    origin = "signer.cfssl.ca_pins"
    if not cfg.cfssl.ca_pins:
        origin = f"the pin recorded on first use ({cfg.paths.state_dir / trust.TOFU_FILE})"
    with transport.client_for(cfg.cfssl.urls, limits) as client:
        yield SignerSetup(
            signer=CfsslSigner(
                cfg.cfssl,
                key,
                client,
                pins=pins,
                pins_origin=origin,
                limits=limits,
                clock_skew=cfg.renewal.clock_skew,
            ),
            record_tofu_pin=pins is None,
            pins=pins,
        )
