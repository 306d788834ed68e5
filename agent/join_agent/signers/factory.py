"""Build the configured signer for one enrollment: its transport, its secret, its pins."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from join_agent import log
from join_agent.config.model import Config
from join_agent.net import transport
from join_agent.signers import credentials
from join_agent.signers.base import Signer
from join_agent.signers.kubernetes.bootstrap_token import BootstrapToken
from join_agent.storage import trust


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
        from join_agent.signers.kubernetes.signer import KubernetesSigner

        yield SignerSetup(
            signer=KubernetesSigner(
                cfg, environ, limits=limits, token=token, token_origin=token_origin
            ),
            record_tofu_pin=False,
            pins=cfg.kubernetes.ca_pins or None,
        )
        return
    from join_agent.signers.cfssl import CfsslSigner

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
