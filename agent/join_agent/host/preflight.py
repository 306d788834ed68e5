"""What the agent trusts on this node, for one config: guard's rule applied to its
directories and to everything it runs as root (docs/security.md, "On the node").

``run`` refuses to start and a reload is refused while any of these stands; ``check``
reports each; ``join``, ``reset`` and the worker refuse the node's directories. Reading
the file system is all this does; the rule itself is ``guard``'s.
"""

from __future__ import annotations

from pathlib import Path

from join_agent.config.model import Config
from join_agent.storage import guard


def node_directories(cfg: Config) -> list[tuple[Path, str]]:
    """The directories the agent writes the node's files into, with the key naming each."""
    return [
        (cfg.paths.state_dir, "paths.state_dir"),
        (cfg.paths.pki_dir, "paths.pki_dir"),
        (cfg.paths.kubeconfig.parent, "the directory of paths.kubeconfig"),
        (cfg.paths.ca_file.parent, "the directory of paths.ca_file"),
        *(
            [(cfg.metrics_textfile.parent, "the directory of metrics.textfile")]
            if cfg.metrics_textfile is not None
            else []
        ),
    ]


def directory_problems(cfg: Config) -> list[str]:
    """One sentence for each node directory (existing, or the part of its path that
    exists) that someone but root could change."""
    found: list[str] = []
    for path, what in node_directories(cfg):
        problem = guard.problem(path, what, "dir")
        if problem is not None and problem not in found:
            found.append(problem)
    return found


def command_problems(cfg: Config) -> list[str]:
    """One sentence for each thing the config runs as root that someone else could have
    chosen: the kubelet command (when managed), each [[certificate]] action's command."""
    found: list[str] = []
    if cfg.kubelet.manage:
        found += guard.command_problems(cfg.kubelet.command, "kubelet.command")
    for spec in cfg.certificates:
        if spec.action.kind == "command" and not spec.action.shell:
            found += guard.command_problems(
                spec.action.argv, f"certificate.{spec.name}.action.command"
            )
    return found


def file_problems(cfg: Config) -> list[str]:
    """The files the config names for trust decisions: the CA bundle the kubeconfig will
    embed and a discovery kubeconfig given as a path."""
    found: list[str] = []
    if cfg.cluster.ca_bundle is not None:
        found.append(guard.problem(cfg.cluster.ca_bundle, "cluster.ca_bundle") or "")
    source = cfg.kubernetes.discovery_file
    if cfg.signer_kind == "kubernetes" and source.startswith("/"):
        found.append(guard.problem(Path(source), "signer.kubernetes.discovery_file") or "")
    return [p for p in found if p]


def problems(cfg: Config) -> list[str]:
    """Everything above, in that order."""
    return directory_problems(cfg) + command_problems(cfg) + file_problems(cfg)


def require_directories(cfg: Config) -> None:
    """Raise UnsafePath for the node directories' problems (``join``, ``reset``, workers)."""
    found = directory_problems(cfg)
    if found:
        raise guard.UnsafePath("; ".join(found))
