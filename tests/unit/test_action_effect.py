"""An action on a service counts as done once the service runs again (worker/actions.py):
`svcadm restart` and `refresh` only ask svc.startd and return at once, and a restart that
ends in maintenance must be retried and shown, not recorded as "ok". Run with stand-ins
for svcadm, svcs and systemctl that answer as the real ones do (`svcs -H -o state` prints
the state alone; `systemctl is-active` prints active, failed, …)."""

from __future__ import annotations

from pathlib import Path

import pytest

from join_agent.config import loading
from join_agent.config.model import CertificateSpec
from join_agent.host import platform
from join_agent.worker import actions

FMRI = "svc:/system/kubernetes/kube-apiserver:default"


def spec(action: dict[str, object]) -> CertificateSpec:
    table = {
        "name": "front-proxy", "profile": "front-proxy", "common_name": "front-proxy-client",
        "cert_file": "/etc/k/fp.crt", "key_file": "/etc/k/fp.key", "action": action,
    }  # fmt: skip
    cfssl = {"urls": ["http://10.0.0.5:8888"], "ca_pins": ["sha256:" + "ab" * 32]}
    doc = {"cluster": {"server": "https://10.0.0.5:6443"}, "signer": {"cfssl": cfssl}}
    (found,) = loading.parse({**doc, "certificate": [table]}).certificates
    return found


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins in tmp_path/bin; each logs its argv, and a state tool prints the next
    line of tmp_path/states (the last one for ever)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = (
        f'#!/bin/sh\necho "$0 $*" >>{tmp_path}/calls\n'
        f"n=$(wc -l <{tmp_path}/calls)\n"
        f'line=$(sed -n "${{n}}p" {tmp_path}/states)\n'
        f'[ -n "$line" ] || line=$(tail -n 1 {tmp_path}/states)\n'
        'echo "$line"\n'
    )
    asks = f'echo "$0 $*" >>{tmp_path}/asked'
    for name, text in {
        "svcadm": f"#!/bin/sh\n{asks}\n",
        "svcs": answer,
        # systemctl: reload-or-restart is asked; is-active answers like svcs
        "systemctl": f'#!/bin/sh\ncase "$1" in is-active) ;; *) {asks}; exit 0;; esac\n'
        + answer.split("\n", 1)[1],
    }.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(platform, "tool", lambda name: str(bin_dir / name))
    monkeypatch.setattr(actions, "POLL", 0.01)
    return tmp_path


def states(tmp: Path, *seen: str) -> None:
    (tmp / "states").write_text("".join(f"{s}\n" for s in seen))


def looks(tmp: Path) -> int:
    return len((tmp / "calls").read_text().splitlines())


def test_a_restart_is_done_once_the_service_is_online_again(tools: Path) -> None:
    states(tools, "online*", "offline*", "online")
    done = actions.run(spec({"smf_restart": FMRI}))
    assert done is not None and done.ok, done
    assert (tools / "asked").read_text() == f"{tools}/bin/svcadm restart {FMRI}\n"
    assert looks(tools) == 3  # until it said online


def test_a_restart_into_maintenance_is_a_failed_action(tools: Path) -> None:
    states(tools, "offline*", "maintenance")
    done = actions.run(spec({"smf_restart": FMRI}))
    assert done is not None and not done.ok
    assert done.output.startswith(f"{FMRI} is maintenance, not online, after svcadm restart")
    assert looks(tools) == 2  # maintenance stays: no use waiting for it


def test_a_service_that_does_not_come_back_in_time_fails_the_action(tools: Path) -> None:
    states(tools, "offline*")
    done = actions.run(spec({"smf_refresh": FMRI, "timeout": "0.3s"}))
    assert done is not None and not done.ok
    assert f"{FMRI} is offline*, not online, after svcadm refresh" in done.output


@pytest.mark.parametrize(("state", "ok"), [("active", True), ("failed", False)])
def test_a_systemd_reload_is_done_once_the_unit_is_active(
    tools: Path, state: str, ok: bool
) -> None:
    states(tools, state)
    done = actions.run(spec({"systemd_reload": "kube-apiserver.service"}))
    assert done is not None and done.ok is ok
    asked = f"{tools}/bin/systemctl reload-or-restart kube-apiserver.service\n"
    assert (tools / "asked").read_text() == asked


def test_a_command_is_done_when_it_exits_zero(tools: Path) -> None:
    script = tools / "bin" / "reload-it"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    done = actions.run(spec({"command": [str(script)]}))
    assert done is not None and done.ok
    assert not (tools / "calls").exists()  # nothing to look at: no service named
