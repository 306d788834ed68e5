"""What differs between Linux/systemd and illumos/SMF, as data in one place."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import NamedTuple


class PlatformDefaults(NamedTuple):
    """Default paths and behaviour of one operating system family."""

    config_file: Path
    pki_dir: Path
    kubeconfig: Path
    ca_file: Path
    state_dir: Path
    manage_kubelet: bool
    kubelet_command: tuple[str, ...]
    examples: Path  # where the packages install the example configs
    restart_command: str  # how an operator restarts the agent's service
    fingerprint_files: tuple[Path, ...]  # [node] fingerprint_files (host/machine.py)


LINUX = PlatformDefaults(
    config_file=Path("/etc/join-agent/config.toml"),
    pki_dir=Path("/var/lib/kubelet/pki"),
    kubeconfig=Path("/etc/kubernetes/kubelet.conf"),
    ca_file=Path("/etc/kubernetes/pki/ca.crt"),
    state_dir=Path("/var/lib/join-agent"),
    manage_kubelet=True,
    kubelet_command=("/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"),
    examples=Path("/usr/share/doc/join-agent/examples"),
    restart_command="systemctl restart join-agent",
    # machine-id(5), and the firmware's UUID (readable by root only), which a hypervisor
    # changes on a clone even where the image kept its machine-id.
    fingerprint_files=(Path("/etc/machine-id"), Path("/sys/class/dmi/id/product_uuid")),
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
    restart_command="svcadm restart join-agent",
    fingerprint_files=(Path("/etc/hostid"),),  # the host id, which x86 illumos keeps there
)


# The tools the agent runs, by absolute path: never looked up in PATH. The first that
# exists wins (merged /usr or not; illumos keeps svcadm in /usr/sbin).
TOOLS: dict[str, tuple[str, ...]] = {
    "systemctl": ("/usr/bin/systemctl", "/bin/systemctl"),
    "svcadm": ("/usr/sbin/svcadm",),
    "ps": ("/usr/bin/ps", "/bin/ps"),
    "sh": ("/bin/sh", "/usr/bin/sh"),
    "ipadm": ("/usr/sbin/ipadm",),  # illumos: the node's addresses (host/ipadm.py)
}


def tool(name: str) -> str | None:
    """The absolute path of one of TOOLS on this machine, or None where it is missing."""
    import os

    return next((p for p in TOOLS[name] if os.path.exists(p)), None)


def installed_at() -> dt.datetime:
    """When this package's files were written (a .deb keeps its build's times; pip writes
    them at install): a clock that reads earlier is obviously wrong (schedule.clock_floor)."""
    import os

    import join_agent

    return dt.datetime.fromtimestamp(os.stat(join_agent.__file__).st_mtime, dt.timezone.utc)


def current() -> PlatformDefaults:
    """The defaults of the system we run on (illumos reports itself as SunOS)."""
    return ILLUMOS if sys.platform.startswith("sunos") else LINUX
