"""Which CA pins to trust: the configured ones, or the one recorded on first use."""

from __future__ import annotations

from pathlib import Path

from join_agent.config.model import PIN_PATTERN
from join_agent.errors import StoreError
from join_agent.storage import guard, names

TOFU_FILE = names.TOFU_FILE


def recorded_pin(state_dir: Path) -> str | None:
    """The pin recorded by trust on first use, or None before the first join."""
    path = state_dir / TOFU_FILE
    try:
        text = guard.read_text(path, "the recorded CA pin", cap=guard.SMALL_CAP).strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read the recorded CA pin {path}: {e.strerror}") from None
    if not PIN_PATTERN.match(text):
        raise StoreError(
            f"the recorded CA pin {path} is damaged: remove it only if you trust the CA "
            "that answers now, or put the right pin into signer.cfssl.ca_pins"
        )
    return text


def effective_pins(
    configured: tuple[str, ...], insecure_skip: bool, state_dir: Path
) -> tuple[str, ...] | None:
    """Pins to check, or None for "accept any CA once and record it"."""
    if configured:
        return configured
    if not insecure_skip:  # config validation makes this unreachable; fail closed anyway
        return ()
    pin = recorded_pin(state_dir)
    return None if pin is None else (pin,)
