"""The node's files as a worker (or `status` without a daemon) reads them: the client
pair, the kubeconfig, the CA file, parsed once (``snapshot``) and reduced to the plain
facts status.json records (``facts_of``). Loads cryptography: never the daemon's."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from join_agent.config.model import Config
from join_agent.core import judging
from join_agent.errors import KeyMismatch, StoreError
from join_agent.host import machine
from join_agent.storage import guard, store

if TYPE_CHECKING:
    from join_agent.core.protocol import CredentialFacts
    from join_agent.core.records import KubeconfigFacts

CAP = guard.PEM_CAP


@dataclass(frozen=True)
class Snapshot:
    """What is on disk, read once."""

    credentials: Path
    pair: store.Pair | None
    pair_error: str | None
    kubeconfig_path: Path
    kubeconfig: dict[str, Any] | None  # the YAML as parsed (Kubernetes' format: untyped)
    kubeconfig_error: str | None
    ca_file: Path
    ca: tuple[x509.Certificate, ...]
    ca_error: str | None
    # What the kubeconfig's CA data must be: cluster.ca_bundle's certificates when set,
    # else ca_file's (None: not checked, e.g. a snapshot built by hand).
    cluster_ca: tuple[x509.Certificate, ...] | None = None
    key_mismatch: bool = False
    foreign: str | None = None  # why the pair is another machine's (host/machine.py)


def snapshot(cfg: Config, credentials: Path) -> Snapshot:
    """Read and parse the files on disk (loads cryptography: the slow path)."""
    from join_agent.pki import compat
    from join_agent.worker import kubeconfig

    pair, pair_error, mismatch = None, None, False
    try:
        pair = store.PairStore(
            credentials.parent, credentials.name[: -len("-current.pem")]
        ).load_current()
    except StoreError as e:
        pair_error = str(e)
        mismatch = isinstance(e, KeyMismatch)
    foreign, pair_error = _machine(cfg, pair, pair_error)
    kc, kc_error = None, None
    try:
        kc = kubeconfig.parse(guard.read_text(cfg.paths.kubeconfig, "the kubeconfig", cap=CAP))
    except FileNotFoundError:
        pass
    except OSError as e:
        kc_error = f"cannot read the kubeconfig {cfg.paths.kubeconfig}: {e.strerror}"
    except StoreError as e:
        kc_error = str(e)
    except ValueError as e:
        kc_error = f"the kubeconfig {cfg.paths.kubeconfig} is {e}"
    ca: tuple[x509.Certificate, ...] = ()
    ca_error = None
    try:
        ca = tuple(
            compat.load_pem_certificates(guard.read(cfg.paths.ca_file, "the CA file", cap=CAP))
        )
    except FileNotFoundError:
        pass
    except StoreError as e:
        ca_error = str(e)
    except (OSError, ValueError) as e:
        ca_error = f"cannot read the CA file {cfg.paths.ca_file}: {e}"
    # Without a readable ca_file there is nothing to compare the kubeconfig with; the
    # missing file is reported on its own.
    cluster_ca: tuple[x509.Certificate, ...] | None = ca or None
    if cfg.cluster.ca_bundle is not None:
        try:
            bundle = guard.read(cfg.cluster.ca_bundle, "cluster.ca_bundle", cap=CAP)
            cluster_ca = tuple(compat.load_pem_certificates(bundle))
        except (OSError, ValueError, StoreError):
            cluster_ca = None  # config trouble, reported by join; nothing to compare here
    return Snapshot(
        foreign=foreign,
        key_mismatch=mismatch,
        cluster_ca=cluster_ca,
        credentials=credentials,
        pair=pair,
        pair_error=pair_error,
        kubeconfig_path=cfg.paths.kubeconfig,
        kubeconfig=kc,
        kubeconfig_error=kc_error,
        ca_file=cfg.paths.ca_file,
        ca=ca,
        ca_error=ca_error,
    )


def _machine(
    cfg: Config, pair: store.Pair | None, error: str | None
) -> tuple[str | None, str | None]:
    """Whether the pair was made on another machine, and the pair's error (a machine id
    that someone else could have written is one: host/machine.py)."""
    from join_agent.pki import facts

    if pair is None:
        return None, error
    serial = facts.serial(pair.certificate)
    try:
        return machine.judge(cfg.paths.state_dir, cfg.node.fingerprint_files, serial), error
    except StoreError as e:
        return None, str(e)


def facts_of(snap: Snapshot) -> CredentialFacts:
    """The snapshot as plain facts: the same shape the daemon records in status.json."""
    from join_agent.pki import compat, facts
    from join_agent.worker import kubeconfig

    f: CredentialFacts = {
        "credentials": str(snap.credentials),
        "present": snap.pair is not None,
        "error": snap.pair_error,
        "key_mismatch": snap.key_mismatch,
        "issued_by_ca_file": None,
        "foreign": snap.foreign,
    }
    if snap.pair is not None:
        f.update(facts.certificate(snap.pair.certificate))
        if snap.ca:
            leaf = snap.pair.certificate
            f["issued_by_ca_file"] = any(compat.signed_by(leaf, c) for c in snap.ca)
    kc: KubeconfigFacts = {
        "path": str(snap.kubeconfig_path),
        "present": snap.kubeconfig is not None,
        "error": snap.kubeconfig_error,
        "ca_matches": None,
    }
    if snap.kubeconfig is not None:
        kc.update(kubeconfig.facts(snap.kubeconfig))
        if snap.cluster_ca is not None:
            embedded = kubeconfig.ca_certificates(snap.kubeconfig)
            kc["ca_matches"] = embedded is not None and set(embedded) == set(snap.cluster_ca)
    f["kubeconfig"] = kc
    f["ca_file"] = {
        "path": str(snap.ca_file),
        "present": bool(snap.ca),
        "subjects": [c.subject.rfc4514_string() for c in snap.ca],
        "error": snap.ca_error,
    }
    f["ca"] = [facts.authority(c) for c in snap.ca]
    return f


def assess(snap: Snapshot, *, server: str, now: dt.datetime) -> judging.Report:
    """Judge a snapshot of the files at ``now`` (pure but for the conversion)."""
    return judging.judge(facts_of(snap), server=server, now=now)
