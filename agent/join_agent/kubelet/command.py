"""The kubelet's command line and environment, as join-agent starts it. Standard library
only: the resident daemon builds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def kubelet_argv(command: Sequence[str], kubeconfig: Path, node_name: str) -> list[str]:
    """``[kubelet] command`` with our kubeconfig and node name appended (the last flag wins)."""
    return [*command, f"--kubeconfig={kubeconfig}", f"--hostname-override={node_name}"]


def kubelet_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What the kubelet starts with (``children.kubelet_env``)."""
    from join_agent.host import children

    return children.kubelet_env(environ)


def flag_value(argv: Sequence[str], name: str, *, boolean: bool = False) -> str | None:
    """The value of ``--name=V`` or ``--name V`` in ``argv`` (the last one wins, as in pflag).
    A boolean flag takes no separate value: a bare ``--name`` reads as "true". Scanning
    stops at ``--``.
    """
    found: str | None = None
    flag = f"--{name}"
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith(flag + "="):
            found = arg[len(flag) + 1 :]
        elif arg == flag:
            nxt = args[i + 1] if i + 1 < len(args) and not boolean else None
            found = nxt if nxt is not None and not nxt.startswith("-") else "true"
    return found
