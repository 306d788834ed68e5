"""`join-agent check`'s look at the machine: the name and addresses it enrolls with,
whether the credentials on disk were made on this one (host/machine.py), and, with the
Kubernetes signer, whether the cluster's Node of this name is this machine's
(docs/install.md, "Building a node image")."""

from __future__ import annotations

from collections.abc import Mapping

from join_agent.config.model import Config
from join_agent.errors import JoinAgentError
from join_agent.host import machine
from join_agent.verbs.check_result import Result


def identity(cfg: Config) -> list[Result]:
    """The name and addresses an enrollment puts in the certificate (and a table with
    ``node_addresses = true`` in its own), found as the worker finds them: netlink on
    Linux, ipadm on illumos, or ``[node] addresses``."""
    from join_agent.host import identity as node

    try:
        found = node.resolve(cfg.node)
    except JoinAgentError as e:
        return [Result("FAIL", "identity", str(e))]
    addresses = ", ".join(str(a) for a in found.addresses)
    return [Result("PASS", "identity", f"enrolls as {found.name} ({addresses})")]


def made_here(cfg: Config) -> list[Result]:  # noqa: PLR0911 - one verdict per case, in order
    """Whether the credentials on disk were made on this machine (host/machine.py)."""
    from join_agent.pki import facts
    from join_agent.storage import names, store

    sources = cfg.node.fingerprint_files
    if not sources:
        return [Result("SKIP", "machine", "node.fingerprint_files is empty: clones go unnoticed")]
    try:
        ids = machine.fingerprint(sources)
        pair = store.PairStore(cfg.paths.pki_dir, names.CLIENT_PREFIX).load_current()
        record = machine.read_record(cfg.paths.state_dir)
    except (JoinAgentError, OSError) as e:
        return [Result("FAIL", "machine", str(e))]
    if not ids:
        listed = ", ".join(str(s) for s in sources)
        return [Result("WARN", "machine", f"none of {listed} holds an id: clones go unnoticed")]
    said = f"identified by {', '.join(sorted(ids))}"
    if pair is None:
        return [Result("PASS", "machine", f"{said}; no credentials yet")]
    serial = facts.serial(pair.certificate)
    why = machine.foreign(record, serial, ids)
    if why:
        return [Result("FAIL", "machine", why)]
    if record is None or record["serial"] != serial:
        return [Result("WARN", "machine", f"{said}; the credentials carry no record of the "
                       "machine that made them (made by hand or by an older version): the "
                       "next enrollment records it")]  # fmt: skip
    return [Result("PASS", "machine", f"{said}; the credentials were made on this machine")]


def registered(cfg: Config, environ: Mapping[str, str]) -> list[Result]:
    """Whether the Node of this name is this machine's: two machines with one name (a clone
    that kept its hostname) fight over one Node, which no certificate can fix."""
    from join_agent.host import identity
    from join_agent.net import transport
    from join_agent.signers import factory
    from join_agent.signers.kubernetes.signer import KubernetesSigner

    try:
        name = identity.name_of(cfg.node)
        with factory.build(cfg, environ, transport.Limits(deadline=10.0)) as setup:
            assert isinstance(setup.signer, KubernetesSigner)  # noqa: S101 - by signer.kind
            seen = setup.signer.registered_machine(name)
        differ = (
            None
            if seen is None
            else machine.same_machine(seen, machine.ids(cfg.node.fingerprint_files))
        )
    except JoinAgentError as e:
        return [Result("SKIP", "node", f"cannot read this node's Node object: {e}")]
    if seen is None:
        return [Result("PASS", "node", f"no Node {name} is registered yet")]
    if differ:
        return [Result("FAIL", "node", f"Node {name} is another machine's ({differ}): two "
                       "machines share the name; give this one its own [node] name")]  # fmt: skip
    return [Result("PASS", "node", f"Node {name} is this machine's")]
