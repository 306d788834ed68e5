"""enroll.enroll and enroll.merge_bundles: what a join writes, and what a failed join leaves.

Review findings covered: only the trusted path becomes ca_file / kubeconfig CA data; every
write is staged and renamed only when all are on disk (a failure part-way leaves the
earlier files exactly as they were, and no temp file); the pin recorded on first use is
written only with a successful join; an old CA stays trusted only while a pin vouches for
it and it has not expired.

The signer here is a stand-in (``StandInSigner``), not CFSSL: it issues from a local test CA
built with ``cryptography`` and, like the real CFSSL signer, hands back as ``ca_bundle``
only ``pinning.trusted_path`` over what it "received". The config is the real ``loading.parse``
with every path under ``tmp_path``; the files are real files.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from join_agent.config import loading, model
from join_agent.errors import CertificateRejected, StoreError
from join_agent.host.identity import Identity
from join_agent.pki import compat, pinning
from join_agent.signers.base import Issued
from join_agent.storage import files, trust
from join_agent.worker import enroll
from tests.lab.certs import CA, NOW, authority, cert_pem, ec_key, identity, node_subject

SKEW = dt.timedelta(minutes=2)
ME = identity()


@dataclass
class StandInSigner:
    """A stand-in for a real signer (CFSSL), issuing from a local test CA.

    ``sent`` is what the CA's ``info`` answer would carry (the issuing CA first, then
    anything else); like ``CfsslSigner`` it keeps only ``pinning.trusted_path`` of it as
    ``ca_bundle``. ``wrong_key`` issues for a stranger's key, which enroll must refuse.
    """

    ca: CA
    pins: tuple[str, ...] | None
    sent: list[CA] = field(default_factory=list)
    wrong_key: bool = False
    name: str = "stand-in"
    client_sans: bool = True
    calls: int = 0

    def sign(self, csr: x509.CertificateSigningRequest, identity: Identity) -> Issued:
        self.calls += 1
        public = ec_key().public_key() if self.wrong_key else csr.public_key()
        cert = self.ca.issue(
            public,  # type: ignore[arg-type]
            subject=node_subject(identity.name),
            dns=identity.dns_names,
            ips=identity.addresses,
        )
        bundle = [self.ca.cert] + [c.cert for c in self.sent if c.cert != self.ca.cert]
        path = pinning.trusted_path(self.ca.cert, bundle, self.pins, now=NOW, clock_skew=SKEW)
        return Issued(
            certificate=cert,
            ca=self.ca.cert,
            ca_bundle=path,
            verify_with=self.ca.cert,
            source="stand-in://ca",
        )


def pin(ca: CA) -> str:
    return pinning.spki_pin(ca.cert)


def make_config(tmp_path: Path, pins: tuple[str, ...] = ()) -> model.Config:
    cfssl: dict[str, Any] = {"urls": ["http://127.0.0.1:8888"]}
    if pins:
        cfssl["ca_pins"] = list(pins)
    else:
        cfssl["insecure_skip_ca_pin"] = True
    root = tmp_path / "node"
    return loading.parse(
        {
            "cluster": {"server": "https://10.0.0.5:6443", "name": "lab"},
            "node": {"name": ME.name},
            "signer": {"cfssl": cfssl},
            "paths": {
                "pki_dir": str(root / "pki"),
                "kubeconfig": str(root / "kubelet.conf"),
                "ca_file": str(root / "ca.crt"),
                "state_dir": str(root / "state"),
            },
        }
    )


def run(
    cfg: model.Config,
    signer: StandInSigner,
    *,
    record_tofu_pin: bool = False,
    pins: tuple[str, ...] | None = None,
) -> enroll.Enrolled:
    return enroll.enroll(
        cfg,
        signer,
        ME,
        now=lambda: NOW,
        record_tofu_pin=record_tofu_pin,
        pins=signer.pins if pins is None and not record_tofu_pin else pins,
    )


def certs_in(path: Path) -> list[x509.Certificate]:
    return compat.load_pem_certificates(path.read_bytes())


def kubeconfig_cas(path: Path) -> list[x509.Certificate]:
    doc = yaml.safe_load(path.read_text())
    data = doc["clusters"][0]["cluster"]["certificate-authority-data"]
    return compat.load_pem_certificates(base64.b64decode(data))


def picture(cfg: model.Config) -> dict[str, Any]:
    """Everything a failed join must leave exactly as it was."""
    pki_dir, parent = cfg.paths.pki_dir, cfg.paths.pki_dir.parent
    current = enroll.client_store(cfg).current

    def read(p: Path) -> bytes | None:
        return p.read_bytes() if p.exists() else None

    def listing(d: Path) -> list[str] | None:
        return sorted(os.listdir(d)) if d.exists() else None

    return {
        "ca_file": read(cfg.paths.ca_file),
        "kubeconfig": read(cfg.paths.kubeconfig),
        "current": os.readlink(current) if current.is_symlink() else None,
        "current_bytes": read(current),
        "pki_dir": listing(pki_dir),
        "parent": listing(parent),
        "state_dir": listing(cfg.paths.state_dir),
        "pki_files": {p.name: p.read_bytes() for p in pki_dir.glob("*")}
        if pki_dir.exists()
        else None,
    }


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(files.TMP_PREFIX)]


def fail_staging_of(monkeypatch: pytest.MonkeyPatch, victim: Path) -> list[Path]:
    """Make ``files.stage`` fail for ``victim`` only; returns every path staged."""
    real = files.stage
    staged: list[Path] = []

    def stage(path: Path, data: bytes, mode: int = 0o600) -> Path:
        staged.append(path)
        if path == victim:
            raise StoreError(f"cannot write {path}: no space left on the device")
        return real(path, data, mode)

    monkeypatch.setattr(files, "stage", stage)
    return staged


# -- success ---------------------------------------------------------------------------


def test_success_writes_the_trusted_path_the_kubeconfig_and_the_pair(tmp_path: Path) -> None:
    root = authority("Root CA")
    inter = authority("Intermediate CA", issuer=root)
    evil = authority("EVIL CA")
    signer = StandInSigner(ca=inter, pins=(pin(root),), sent=[evil, root])
    cfg = make_config(tmp_path, signer.pins or ())

    done = run(cfg, signer)

    # ca_file: the path from the issuing CA to the pin, and nothing else.
    assert certs_in(cfg.paths.ca_file) == [inter.cert, root.cert]
    assert cfg.paths.ca_file.read_bytes() == cert_pem(inter.cert) + cert_pem(root.cert)
    assert stat.S_IMODE(cfg.paths.ca_file.stat().st_mode) == 0o644
    # The kubeconfig: 0600, the same CA data, pointing at the current link.
    kc = cfg.paths.kubeconfig
    assert stat.S_IMODE(kc.stat().st_mode) == 0o600
    assert kubeconfig_cas(kc) == [inter.cert, root.cert]
    assert evil.cert not in kubeconfig_cas(kc)
    user = yaml.safe_load(kc.read_text())["users"][0]["user"]
    current = enroll.client_store(cfg).current
    assert user == {"client-certificate": str(current), "client-key": str(current)}
    # The versioned pair behind a relative symlink, 0600: leaf, intermediate, key.
    assert os.readlink(current) == done.version.name == "kubelet-client-2024-06-01-12-00-00.pem"
    assert stat.S_IMODE(done.version.stat().st_mode) == 0o600
    pair = enroll.client_store(cfg).load_current()
    assert pair is not None
    assert pair.chain == (done.certificate, inter.cert)
    assert done.ca_pin == pin(inter)
    assert done.ca_changed is False
    assert not (cfg.paths.state_dir / trust.TOFU_FILE).exists()
    assert temp_files(tmp_path) == []


def test_a_root_issuing_directly_is_not_appended_to_the_chain(tmp_path: Path) -> None:
    ca = authority("Cluster CA")
    signer = StandInSigner(ca=ca, pins=(pin(ca),))
    cfg = make_config(tmp_path, (pin(ca),))
    done = run(cfg, signer)
    pair = enroll.client_store(cfg).load_current()
    assert pair is not None
    assert pair.chain == (done.certificate,)
    assert certs_in(cfg.paths.ca_file) == [ca.cert]


# -- failure while staging -------------------------------------------------------------


def test_a_failure_staging_the_kubeconfig_leaves_everything_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CA rotation (both pinned) whose kubeconfig cannot be staged: nothing changes."""
    old, new = authority("Old CA"), authority("New CA")
    pins = (pin(old), pin(new))
    cfg = make_config(tmp_path, pins)
    run(cfg, StandInSigner(ca=old, pins=pins))
    before = picture(cfg)
    assert before["current"] is not None

    staged = fail_staging_of(monkeypatch, cfg.paths.kubeconfig)
    with pytest.raises(StoreError, match="no space left"):
        run(cfg, StandInSigner(ca=new, pins=pins))

    # The new version was written and ca_file (which would change) staged before the
    # kubeconfig failed: both had to be undone.
    assert staged[0].parent == cfg.paths.pki_dir
    assert staged[1:] == [cfg.paths.ca_file, cfg.paths.kubeconfig]
    assert picture(cfg) == before
    assert temp_files(tmp_path) == []


def test_a_failure_staging_the_first_ca_file_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = authority("Cluster CA")
    cfg = make_config(tmp_path, (pin(ca),))
    fail_staging_of(monkeypatch, cfg.paths.ca_file)
    with pytest.raises(StoreError):
        run(cfg, StandInSigner(ca=ca, pins=(pin(ca),)))
    assert not cfg.paths.ca_file.exists()
    assert not cfg.paths.kubeconfig.exists()
    assert not enroll.client_store(cfg).current.is_symlink()
    assert list(cfg.paths.pki_dir.glob("*")) == []  # the version written first is gone
    assert temp_files(tmp_path) == []


# -- trust on first use ----------------------------------------------------------------


def test_first_use_records_the_pin_on_success(tmp_path: Path) -> None:
    ca = authority("Cluster CA")
    cfg = make_config(tmp_path)
    done = run(cfg, StandInSigner(ca=ca, pins=None), record_tofu_pin=True)
    recorded = cfg.paths.state_dir / trust.TOFU_FILE
    assert recorded.read_text() == pin(ca) + "\n"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o644
    assert done.ca_pin == pin(ca)
    assert trust.recorded_pin(cfg.paths.state_dir) == pin(ca)


def test_first_use_records_no_pin_when_the_kubeconfig_cannot_be_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = authority("Cluster CA")
    cfg = make_config(tmp_path)
    fail_staging_of(monkeypatch, cfg.paths.kubeconfig)
    with pytest.raises(StoreError):
        run(cfg, StandInSigner(ca=ca, pins=None), record_tofu_pin=True)
    assert not (cfg.paths.state_dir / trust.TOFU_FILE).exists()
    assert not cfg.paths.ca_file.exists()
    assert not cfg.paths.kubeconfig.exists()
    assert temp_files(tmp_path) == []


def test_first_use_records_no_pin_when_the_pin_itself_cannot_be_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = authority("Cluster CA")
    cfg = make_config(tmp_path)
    staged = fail_staging_of(monkeypatch, cfg.paths.state_dir / trust.TOFU_FILE)
    with pytest.raises(StoreError):
        run(cfg, StandInSigner(ca=ca, pins=None), record_tofu_pin=True)
    assert staged[-1] == cfg.paths.state_dir / trust.TOFU_FILE
    assert not (cfg.paths.state_dir / trust.TOFU_FILE).exists()
    assert not cfg.paths.ca_file.exists()  # staged, then discarded
    assert not cfg.paths.kubeconfig.exists()
    assert not enroll.client_store(cfg).current.is_symlink()
    assert temp_files(tmp_path) == []


def test_first_use_records_no_pin_when_the_certificate_is_refused(tmp_path: Path) -> None:
    ca = authority("Cluster CA")
    cfg = make_config(tmp_path)
    with pytest.raises(CertificateRejected, match="public key that is not ours"):
        run(cfg, StandInSigner(ca=ca, pins=None, wrong_key=True), record_tofu_pin=True)
    assert not (cfg.paths.state_dir / trust.TOFU_FILE).exists()
    assert not cfg.paths.ca_file.exists()
    assert not cfg.paths.pki_dir.exists()


def test_no_pin_is_recorded_when_pins_are_configured(tmp_path: Path) -> None:
    ca = authority("Cluster CA")
    cfg = make_config(tmp_path, (pin(ca),))
    run(cfg, StandInSigner(ca=ca, pins=(pin(ca),)))
    assert not (cfg.paths.state_dir / trust.TOFU_FILE).exists()


# -- CA rotation through enroll --------------------------------------------------------


def test_ca_changed_when_the_issuing_ca_differs_from_ca_file(tmp_path: Path) -> None:
    old, new = authority("Old CA"), authority("New CA")
    pins = (pin(old), pin(new))
    cfg = make_config(tmp_path, pins)
    assert run(cfg, StandInSigner(ca=old, pins=pins)).ca_changed is False  # nothing before
    assert run(cfg, StandInSigner(ca=old, pins=pins)).ca_changed is False  # same CA
    done = run(cfg, StandInSigner(ca=new, pins=pins))
    assert done.ca_changed is True
    # Both pinned: the old CA stays trusted beside the new one, new first.
    assert certs_in(cfg.paths.ca_file) == [new.cert, old.cert]
    assert kubeconfig_cas(cfg.paths.kubeconfig) == [new.cert, old.cert]


def test_ca_changed_compares_with_the_first_certificate_of_ca_file(tmp_path: Path) -> None:
    ca, other = authority("Cluster CA"), authority("Other CA")
    cfg = make_config(tmp_path, (pin(ca),))
    cfg.paths.ca_file.parent.mkdir(parents=True)
    cfg.paths.ca_file.write_bytes(cert_pem(other.cert) + cert_pem(ca.cert))
    done = run(cfg, StandInSigner(ca=ca, pins=(pin(ca),)))
    assert done.ca_changed is True
    # The other CA has no pin: it is dropped from ca_file.
    assert certs_in(cfg.paths.ca_file) == [ca.cert]


def test_an_old_ca_whose_pin_was_removed_is_dropped(tmp_path: Path) -> None:
    old, new = authority("Old CA"), authority("New CA")
    cfg = make_config(tmp_path, (pin(old),))
    run(cfg, StandInSigner(ca=old, pins=(pin(old),)))
    run(cfg, StandInSigner(ca=new, pins=(pin(new),)), pins=(pin(new),))
    assert certs_in(cfg.paths.ca_file) == [new.cert]
    assert kubeconfig_cas(cfg.paths.kubeconfig) == [new.cert]


# -- merge_bundles ---------------------------------------------------------------------


def merged(
    current: list[CA], previous: list[CA], pins: list[CA] | None
) -> tuple[x509.Certificate, ...]:
    return enroll.merge_bundles(
        tuple(c.cert for c in current),
        tuple(c.cert for c in previous),
        None if pins is None else tuple(pin(p) for p in pins),
        NOW,
        SKEW,
    )


def test_merge_keeps_an_old_ca_a_pin_still_vouches_for() -> None:
    old, new = authority("Old CA"), authority("New CA")
    assert merged([new], [old], [new, old]) == (new.cert, old.cert)


def test_merge_keeps_an_old_intermediate_under_a_pinned_root() -> None:
    root = authority("Root CA")
    old = authority("Old Intermediate", issuer=root)
    new = authority("New Intermediate", issuer=root)
    assert merged([new, root], [old, root], [root]) == (new.cert, root.cert, old.cert)


def test_merge_drops_an_old_ca_no_pin_vouches_for() -> None:
    old, new = authority("Old CA"), authority("New CA")
    assert merged([new], [old], [new]) == (new.cert,)


def test_merge_drops_an_expired_old_ca_even_if_pinned() -> None:
    old = authority("Old CA", not_before=NOW - dt.timedelta(days=800), not_after=NOW)
    new = authority("New CA")
    assert merged([new], [old], [new, old]) == (new.cert,)


def test_merge_drops_an_old_certificate_that_is_not_a_ca() -> None:
    old = authority("Old Leaf", is_ca=False)
    new = authority("New CA")
    assert merged([new], [old], [new, old]) == (new.cert,)


def test_merge_keeps_nothing_old_on_first_use() -> None:
    old, new = authority("Old CA"), authority("New CA")
    assert merged([new], [old], None) == (new.cert,)


def test_merge_does_not_repeat_a_ca_already_current() -> None:
    ca = authority("Cluster CA")
    assert merged([ca], [ca], [ca]) == (ca.cert,)


def test_merge_with_nothing_before() -> None:
    ca = authority("Cluster CA")
    assert merged([ca], [], [ca]) == (ca.cert,)
