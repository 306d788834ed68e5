"""What differs between Linux/systemd and illumos/SMF, as data in one place."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlatformDefaults:
    """Default paths and behaviour of one operating system family."""

    config_file: Path
    pki_dir: Path
    kubeconfig: Path
    ca_file: Path
    state_dir: Path
    manage_kubelet: bool
    kubelet_command: tuple[str, ...]
    examples: Path  # where the packages install the example configs


LINUX = PlatformDefaults(
    config_file=Path("/etc/join-agent/config.toml"),
    pki_dir=Path("/var/lib/kubelet/pki"),
    kubeconfig=Path("/etc/kubernetes/kubelet.conf"),
    ca_file=Path("/etc/kubernetes/pki/ca.crt"),
    state_dir=Path("/var/lib/join-agent"),
    manage_kubelet=True,
    kubelet_command=("/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"),
    examples=Path("/usr/share/doc/join-agent/examples"),
)

# OmniOS-extra layout (/etc/opt/ooce, /var/opt/ooce). The upstream kubelet does not run on
# illumos, so the agent keeps credentials for whatever runs beside it.
ILLUMOS = PlatformDefaults(
    config_file=Path("/etc/opt/ooce/join-agent/config.toml"),
    pki_dir=Path("/var/opt/ooce/join-agent/pki"),
    kubeconfig=Path("/etc/opt/ooce/join-agent/kubelet.conf"),
    ca_file=Path("/etc/opt/ooce/join-agent/ca.crt"),
    state_dir=Path("/var/opt/ooce/join-agent"),
    manage_kubelet=False,
    kubelet_command=("/opt/ooce/bin/kubelet",),
    examples=Path("/opt/ooce/join-agent/share/doc/join-agent/examples"),
)


def current() -> PlatformDefaults:
    """The defaults of the system we run on (illumos reports itself as SunOS)."""
    return ILLUMOS if sys.platform.startswith("sunos") else LINUX
