"""What differs between Linux/systemd and illumos/SMF, as data in one place.

``status`` reads the defaults on its fast path, which does without pathlib and typing
(docs/benchmarks.md): paths are plain strings (the config makes them ``Path`` objects),
and the defaults a plain class.
"""

from __future__ import annotations

import datetime as dt
import sys

CONFIG_ENV = "JOIN_AGENT_CONFIG"  # names the config file where --config does not

# smf_method(7): a method that exits 96 puts the service into maintenance at once, with
# "configuration error" in `svcs -x`; any other failure is restarted, and a config that
# fails every start reaches maintenance only as "restarting too quickly".
SMF_EXIT_ERR_CONFIG = 96


class PlatformDefaults:
    """Default paths and behaviour of one operating system family."""

    def __init__(
        self,
        *,
        config_file: str,
        pki_dir: str,
        kubeconfig: str,
        ca_file: str,
        state_dir: str,
        runtime_dir: str,
        secrets_dir: str,
        manage_kubelet: bool,
        kubelet_command: tuple[str, ...],
        examples: str,
        restart_command: str,
        stop_command: str,
        start_command: str,
        log_command: str,
        fingerprint_files: tuple[str, ...],
        addresses_from: str,
    ) -> None:
        self.config_file = config_file
        self.pki_dir = pki_dir
        self.kubeconfig = kubeconfig
        self.ca_file = ca_file
        self.state_dir = state_dir
        self.secrets_dir = secrets_dir  # cfssl-auth-key and bootstrap-token, by default
        self.runtime_dir = runtime_dir  # a running daemon's record for `status` (runtime.py)
        self.manage_kubelet = manage_kubelet
        self.kubelet_command = kubelet_command
        self.examples = examples  # where the packages install the example configs
        self.restart_command = restart_command  # how an operator restarts the agent's service
        self.stop_command = stop_command  # … and stops it (until the next boot, on illumos)
        self.start_command = start_command  # … starts it
        self.log_command = log_command  # … and reads its log
        self.fingerprint_files = fingerprint_files  # [node] fingerprint_files (host/machine.py)
        self.addresses_from = addresses_from  # "netlink" or "ipadm" (host/identity.py)


LINUX = PlatformDefaults(
    config_file="/etc/join-agent/config.toml",
    pki_dir="/var/lib/kubelet/pki",
    kubeconfig="/etc/kubernetes/kubelet.conf",
    ca_file="/etc/kubernetes/pki/ca.crt",
    state_dir="/var/lib/join-agent",
    runtime_dir="/run/join-agent",
    secrets_dir="/etc/join-agent",
    manage_kubelet=True,
    kubelet_command=("/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"),
    examples="/usr/share/doc/join-agent/examples",
    restart_command="systemctl restart join-agent",
    stop_command="systemctl stop join-agent",
    start_command="systemctl start join-agent",
    log_command="journalctl -u join-agent",
    # machine-id(5), and the firmware's UUID (readable by root only), which a hypervisor
    # changes on a clone even where the image kept its machine-id.
    fingerprint_files=("/etc/machine-id", "/sys/class/dmi/id/product_uuid"),
    addresses_from="netlink",
)

# OmniOS-extra layout (/etc/opt/ooce, /var/opt/ooce). The upstream kubelet does not run on
# illumos, so the agent keeps credentials for whatever runs beside it.
ILLUMOS = PlatformDefaults(
    config_file="/etc/opt/ooce/join-agent/config.toml",
    pki_dir="/var/opt/ooce/join-agent/pki",
    kubeconfig="/etc/opt/ooce/join-agent/kubelet.conf",
    ca_file="/etc/opt/ooce/join-agent/ca.crt",
    state_dir="/var/opt/ooce/join-agent",
    runtime_dir="/var/run/join-agent",
    secrets_dir="/etc/opt/ooce/join-agent",
    manage_kubelet=False,
    kubelet_command=("/opt/ooce/bin/kubelet",),
    examples="/opt/ooce/join-agent/share/doc/join-agent/examples",
    restart_command="svcadm restart join-agent",
    stop_command="svcadm disable -t join-agent",
    start_command="svcadm enable join-agent",
    log_command='tail "$(svcs -L join-agent)"',
    fingerprint_files=("/etc/hostid",),  # the host id, which x86 illumos keeps there
    addresses_from="ipadm",  # no netlink: what `ipadm show-addr` reports (host/ipadm.py)
)


# The tools the agent runs, by absolute path: never looked up in PATH. The first that
# exists wins (merged /usr or not; illumos keeps svcadm in /usr/sbin).
TOOLS: dict[str, tuple[str, ...]] = {
    "systemctl": ("/usr/bin/systemctl", "/bin/systemctl"),
    "svcadm": ("/usr/sbin/svcadm",),
    "svcs": ("/usr/bin/svcs",),  # whether an action's service came back (worker/actions.py)
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
