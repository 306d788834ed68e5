"""Certificate signers behind one small interface (see ``base``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from .. import credentials, log, trust
from ..config import Config
from ..errors import ConfigError
from ..transport import Limits
from .base import Signer


@dataclass(frozen=True)
class SignerSetup:
    signer: Signer
    record_tofu_pin: bool  # the CA is accepted on first use; record its pin after success
    pins: tuple[str, ...] | None  # what the CA was checked against (None: first use)


def build(
    cfg: Config, environ: Mapping[str, str], client: httpx.Client, limits: Limits | None = None
) -> SignerSetup:
    """The configured signer with its secret and pins loaded."""
    if cfg.signer_kind != "cfssl":
        raise ConfigError(
            f"{cfg.source}: signer.kind = {cfg.signer_kind!r} is not supported by this "
            'version of join-agent yet; use "cfssl"'
        )
    from .cfssl import CfsslSigner

    key = credentials.cfssl_auth_key(cfg.cfssl.auth_key_file, environ)
    log.register_secret(key)  # also covers both cases of its hex spelling
    pins = trust.effective_pins(
        cfg.cfssl.ca_pins, cfg.cfssl.insecure_skip_ca_pin, cfg.paths.state_dir
    )
    origin = "signer.cfssl.ca_pins"
    if not cfg.cfssl.ca_pins:
        origin = f"the pin recorded on first use ({cfg.paths.state_dir / trust.TOFU_FILE})"
    return SignerSetup(
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
