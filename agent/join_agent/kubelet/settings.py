"""What the kubelet will do with its credentials, read from its command and its
KubeletConfiguration file (JSON or YAML): whatever would fight join-agent over them
(conflicts), and the certificate it serves from a file (serving_cert_file).

Reading the file may load PyYAML, so this runs in a short-lived child (`join-agent worker
kubelet`, see facts) and in `check`, never in the resident daemon.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from join_agent.config.model import Config
from join_agent.core.protocol import WorkerResult
from join_agent.core.wire import WORKER_SCHEMA
from join_agent.host import children, platform
from join_agent.kubelet.command import flag_value
from join_agent.storage import guard, names


def _is_true(flag: str | None) -> bool | None:
    if flag is None:
        return None
    return flag.strip().lower() in ("true", "1", "t")


def load_kubelet_config(text: str) -> dict[str, Any]:
    """A KubeletConfiguration file, JSON or YAML; ValueError for anything else."""
    try:
        doc: Any = json.loads(text)
    except ValueError:
        import yaml  # only here: the resident daemon must not hold yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"it is neither JSON nor YAML ({_first_line(str(e))})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("it is not a mapping of settings")
    return doc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _config_file(argv: Sequence[str]) -> Path | None:
    value = flag_value(argv, "config")
    return Path(value) if value and value != "true" else None


def _read_config(
    argv: Sequence[str], read_file: Callable[[Path], str | None]
) -> tuple[Path | None, dict[str, Any] | None, str | None]:
    """(path, settings, problem): the kubelet's --config file, parsed, or why it cannot be."""
    path = _config_file(argv)
    if path is None:
        return None, {}, None
    text = read_file(path)
    if text is None:
        return path, None, f"cannot read the kubelet config file {path} given by --config"
    try:
        return path, load_kubelet_config(text), None
    except ValueError as e:
        return path, None, f"the kubelet config file {path} is invalid: {e}"


def conflicts(
    argv: Sequence[str],
    *,
    read_file: Callable[[Path], str | None],
    unit_active: Callable[[str], bool],
) -> list[str]:
    """One sentence for each thing that would fight us over the node's credentials.

    Flags override the config file, as in the kubelet. ``read_file`` returns None for a
    file it cannot read; ``unit_active`` asks the service manager about a unit.
    """
    found: list[str] = []
    if flag_value(argv, "bootstrap-kubeconfig") is not None:
        found.append(
            "the kubelet command has --bootstrap-kubeconfig: the kubelet would request its "
            "own client certificate; remove the flag, join-agent writes the kubeconfig"
        )
    path, settings, problem = _read_config(argv, read_file)
    if problem is not None:
        found.append(problem + "; join-agent must see it to know the kubelet will not rotate")
    checks = (
        ("rotateCertificates", "rotate-certificates", "its client certificate"),
        ("serverTLSBootstrap", "rotate-server-certificates", "its serving certificate"),
    )
    for key, flag, what in checks:
        from_flag = _is_true(flag_value(argv, flag, boolean=True))
        if from_flag:
            found.append(
                f"the kubelet command has --{flag}: the kubelet would rotate {what} itself; "
                "remove the flag"
            )
        elif from_flag is None and settings is not None and settings.get(key) is True:
            found.append(
                f"{key} is true in {path}: the kubelet would rotate {what} itself; set {key}: false"
            )
    if unit_active("kubelet.service"):
        found.append(
            "kubelet.service is active: a second kubelet would fight ours; "
            "run `systemctl disable --now kubelet.service`"
        )
    return found


def serving_cert_file(argv: Sequence[str], read_file: Callable[[Path], str | None]) -> Path | None:
    """The certificate the kubelet serves from a file: ``--tls-cert-file`` or the config's
    ``tlsCertFile`` (relative to the config file, as the kubelet resolves it). None when it
    serves a self-signed or bootstrapped one, or the config cannot be read.
    """
    flag = flag_value(argv, "tls-cert-file")
    if flag and flag != "true":
        return Path(flag)
    path, settings, _ = _read_config(argv, read_file)
    value = (settings or {}).get("tlsCertFile")
    if path is None or not isinstance(value, str) or not value:
        return None
    return path.parent / value  # an absolute value stays as it is


def read_text(path: Path) -> str | None:
    """The ``read_file`` of ``conflicts``: a settings file's text, or None."""
    return guard.read_text_or_none(path)


def systemd_unit_active(unit: str) -> bool:
    """``systemctl is-active`` for one unit; False where there is no systemd."""
    systemctl = platform.tool("systemctl")
    if systemctl is None:
        return False
    try:
        done = children.run_tool([systemctl, "is-active", "--quiet", unit])
    except OSError:
        return False
    return done.returncode == 0


def facts(cfg: Config) -> WorkerResult:
    """What the daemon needs to know of the kubelet's settings, for `join-agent worker
    kubelet`: what would fight us (only when the kubelet is ours to run), and whether it
    serves one of our certificates from a file (a rotation then restarts it)."""
    argv = list(cfg.kubelet.command)
    found = (
        conflicts(argv, read_file=read_text, unit_active=systemd_unit_active)
        if cfg.kubelet.manage
        else []
    )
    served = serving_cert_file(argv, read_text)
    ours = [cfg.paths.pki_dir / n for n in (names.CLIENT_CURRENT, names.SERVER_CURRENT)]
    serves = served is not None and any(
        served == p or served.resolve() == p.resolve() for p in ours
    )
    return {
        "schema": WORKER_SCHEMA,
        "ok": True,
        "mode": "kubelet",
        "conflicts": found,
        "serves_our_certificate": serves,
    }
