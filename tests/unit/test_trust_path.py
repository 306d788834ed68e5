"""pinning.trusted_path: only the verified path from the issuing CA to a pin is a trust anchor.

Review finding: everything CFSSL's ``info`` answer carried was written to ca_file and the
kubeconfig, and nothing on the path was checked to be a CA. Each test here builds the
bundle a hostile or broken CA could send and checks what comes out (or that it is refused).
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from join_agent.errors import TrustError
from join_agent.pki import pinning
from tests.lab.certs import CA, NOW, authority, ca_key_usage

SKEW = dt.timedelta(minutes=2)


def path_of(
    issuing: CA, bundle: list[CA], pins: list[CA] | None, *, origin: str = "signer.cfssl.ca_pins"
) -> tuple[x509.Certificate, ...]:
    return pinning.trusted_path(
        issuing.cert,
        [c.cert for c in bundle],
        None if pins is None else [pinning.spki_pin(p.cert) for p in pins],
        now=NOW,
        clock_skew=SKEW,
        origin=origin,
    )


def refused(
    issuing: CA, bundle: list[CA], pins: list[CA] | None, *, origin: str = "signer.cfssl.ca_pins"
) -> str:
    with pytest.raises(TrustError) as info:
        path_of(issuing, bundle, pins, origin=origin)
    return str(info.value)


# -- what is kept ----------------------------------------------------------------------


def test_issuing_ca_pinned_directly_is_the_whole_path() -> None:
    ca = authority("Cluster CA")
    assert path_of(ca, [ca], [ca]) == (ca.cert,)


def test_intermediate_under_a_pinned_root() -> None:
    root = authority("Root CA")
    inter = authority("Intermediate CA", issuer=root)
    assert path_of(inter, [inter, root], [root]) == (inter.cert, root.cert)


def test_intermediate_under_a_pinned_root_whatever_the_bundle_order() -> None:
    root = authority("Root CA")
    inter = authority("Intermediate CA", issuer=root)
    assert path_of(inter, [root, inter], [root]) == (inter.cert, root.cert)


def test_an_extra_unrelated_ca_in_the_bundle_is_dropped() -> None:
    ca = authority("Cluster CA")
    evil = authority("EVIL CA")
    path = path_of(ca, [ca, evil], [ca])
    assert path == (ca.cert,)
    assert evil.cert not in path


def test_an_extra_ca_beside_a_pinned_chain_is_dropped() -> None:
    root = authority("Root CA")
    inter = authority("Intermediate CA", issuer=root)
    evil = authority("EVIL CA")
    # Even an extra CA signed by the pinned root is not on the path: it is not kept.
    sibling = authority("Sibling CA", issuer=root)
    path = path_of(inter, [inter, evil, sibling, root], [root])
    assert path == (inter.cert, root.cert)


def test_the_walk_stops_at_the_first_pin() -> None:
    root = authority("Root CA")
    inter = authority("Intermediate CA", issuer=root)
    # The intermediate is pinned itself: the root above it is not needed, so not kept.
    assert path_of(inter, [inter, root], [inter]) == (inter.cert,)


# -- end-entity certificates posing as CAs ---------------------------------------------


@pytest.mark.parametrize("is_ca", [False, None], ids=["CA-FALSE", "no-basic-constraints"])
def test_a_leaf_posing_as_the_issuing_ca_is_refused(is_ca: bool | None) -> None:
    fake = authority("Not A CA", is_ca=is_ca)
    message = refused(fake, [fake], [fake])
    assert "CN=Not A CA is not a CA" in message


@pytest.mark.parametrize("is_ca", [False, None], ids=["CA-FALSE", "no-basic-constraints"])
def test_a_leaf_posing_as_the_issuing_ca_under_a_pinned_root_is_refused(
    is_ca: bool | None,
) -> None:
    root = authority("Root CA")
    fake = authority("Leaf From Root", issuer=root, is_ca=is_ca)
    message = refused(fake, [fake, root], [root])
    assert "CN=Leaf From Root is not a CA" in message


@pytest.mark.parametrize("is_ca", [False, None], ids=["CA-FALSE", "no-basic-constraints"])
def test_a_leaf_posing_as_an_intermediate_is_refused(is_ca: bool | None) -> None:
    root = authority("Root CA")
    fake = authority("Leaf Posing As Intermediate", issuer=root, is_ca=is_ca)
    issuing = authority("Issuing CA", issuer=fake)
    message = refused(issuing, [issuing, fake, root], [root])
    assert "CN=Leaf Posing As Intermediate is not a CA" in message


def test_a_pinned_certificate_that_is_not_a_ca_is_refused() -> None:
    leaf = authority("Pinned Leaf", is_ca=False)
    assert "is not a CA" in refused(leaf, [leaf], [leaf])


# -- key usage and path length ---------------------------------------------------------


def test_key_usage_without_key_cert_sign_is_refused() -> None:
    ca = authority("No CertSign CA", key_usage=ca_key_usage(key_cert_sign=False))
    assert "CN=No CertSign CA may not sign certificates (no keyCertSign)" in refused(ca, [ca], [ca])


def test_an_intermediate_without_key_cert_sign_is_refused() -> None:
    root = authority("Root CA")
    inter = authority("Intermediate CA", issuer=root, key_usage=ca_key_usage(key_cert_sign=False))
    assert "no keyCertSign" in refused(inter, [inter, root], [root])


def test_a_root_without_key_cert_sign_above_an_intermediate_is_refused() -> None:
    root = authority("Root CA", key_usage=ca_key_usage(key_cert_sign=False))
    inter = authority("Intermediate CA", issuer=root)
    assert "CN=Root CA may not sign certificates" in refused(inter, [inter, root], [root])


def test_no_key_usage_at_all_is_allowed() -> None:
    ca = authority("Old Style CA", key_usage=None)
    assert path_of(ca, [ca], [ca]) == (ca.cert,)


def test_pathlen_zero_root_with_an_intermediate_below_is_refused() -> None:
    root = authority("Root CA", path_length=0)
    inter = authority("Intermediate CA", issuer=root)
    message = refused(inter, [inter, root], [root])
    assert "CN=Root CA may not have 1 CA(s) below it (pathlen 0)" in message


def test_pathlen_one_root_with_two_intermediates_below_is_refused() -> None:
    root = authority("Root CA", path_length=1)
    upper = authority("Upper CA", issuer=root)
    lower = authority("Lower CA", issuer=upper)
    assert "(pathlen 1)" in refused(lower, [lower, upper, root], [root])


def test_pathlen_within_limits_is_accepted() -> None:
    root = authority("Root CA", path_length=1)
    inter = authority("Intermediate CA", issuer=root, path_length=0)
    assert path_of(inter, [inter, root], [root]) == (inter.cert, root.cert)


def test_pathlen_zero_on_the_issuing_ca_is_fine() -> None:
    ca = authority("Cluster CA", path_length=0)
    assert path_of(ca, [ca], [ca]) == (ca.cert,)


# -- validity --------------------------------------------------------------------------


def test_an_expired_issuing_ca_is_refused() -> None:
    ca = authority("Old CA", not_before=NOW - dt.timedelta(days=800), not_after=NOW)
    assert "CN=Old CA is valid only from" in refused(ca, [ca], [ca])


def test_the_skew_does_not_excuse_an_expired_ca() -> None:
    # Expired 1 s ago, with a 2 min skew: still refused.
    ca = authority(
        "Just Expired CA",
        not_before=NOW - dt.timedelta(days=800),
        not_after=NOW - dt.timedelta(seconds=1),
    )
    assert "is valid only from" in refused(ca, [ca], [ca])


def test_the_skew_excuses_a_ca_that_is_not_valid_yet_by_less_than_it() -> None:
    ca = authority("Fresh CA", not_before=NOW + SKEW - dt.timedelta(seconds=1))
    assert path_of(ca, [ca], [ca]) == (ca.cert,)


def test_a_ca_not_valid_yet_beyond_the_skew_is_refused() -> None:
    ca = authority("Future CA", not_before=NOW + SKEW + dt.timedelta(seconds=1))
    assert "CN=Future CA is valid only from" in refused(ca, [ca], [ca])


def test_an_expired_root_above_a_valid_intermediate_is_refused() -> None:
    root = authority("Root CA", not_before=NOW - dt.timedelta(days=800), not_after=NOW)
    inter = authority("Intermediate CA", issuer=root)
    assert "CN=Root CA is valid only from" in refused(inter, [inter, root], [root])


def test_an_expired_intermediate_under_a_valid_root_is_refused() -> None:
    root = authority("Root CA")
    inter = authority(
        "Intermediate CA", issuer=root, not_before=NOW - dt.timedelta(days=30), not_after=NOW
    )
    assert "CN=Intermediate CA is valid only from" in refused(inter, [inter, root], [root])


# -- trust on first use ----------------------------------------------------------------


def test_first_use_trusts_the_issuing_ca_alone() -> None:
    root = authority("Root CA")
    inter = authority("Intermediate CA", issuer=root)
    evil = authority("EVIL CA")
    assert path_of(inter, [inter, root, evil], None) == (inter.cert,)


@pytest.mark.parametrize("is_ca", [False, None], ids=["CA-FALSE", "no-basic-constraints"])
def test_first_use_still_checks_the_issuing_ca_is_a_ca(is_ca: bool | None) -> None:
    fake = authority("Not A CA", is_ca=is_ca)
    assert "is not a CA" in refused(fake, [fake], None)


def test_first_use_still_checks_validity_and_key_usage() -> None:
    expired = authority("Old CA", not_before=NOW - dt.timedelta(days=800), not_after=NOW)
    assert "is valid only from" in refused(expired, [expired], None)
    no_sign = authority("No CertSign CA", key_usage=ca_key_usage(key_cert_sign=False))
    assert "no keyCertSign" in refused(no_sign, [no_sign], None)


# -- no chain to a pin -----------------------------------------------------------------


def test_no_chain_to_a_pin_names_the_origin() -> None:
    ca = authority("Cluster CA")
    other = authority("Pinned Elsewhere")
    origin = "the pin recorded on first use (/var/lib/join-agent/ca-pin)"
    message = refused(ca, [ca], [other], origin=origin)
    assert f"which is not in {origin}" in message
    assert pinning.spki_pin(ca.cert) in message
    assert "CN=Cluster CA" in message


def test_an_empty_pin_list_trusts_nothing() -> None:
    ca = authority("Cluster CA")
    assert "which is not in signer.cfssl.ca_pins" in refused(ca, [ca], [])


def test_a_pinned_root_that_did_not_sign_the_issuing_ca_is_no_chain() -> None:
    root = authority("Root CA")
    # Same issuer name as the root, but signed by another key: the signature decides.
    impostor_signer = authority("Root CA")
    inter = authority("Intermediate CA", issuer=impostor_signer)
    assert "no certificate it sent chains to one that is" in refused(inter, [inter, root], [root])


def test_a_cycle_in_the_bundle_ends_in_a_refusal() -> None:
    a_key, b_key = authority("A").key, authority("B").key
    # A signed by B and B signed by A: neither pinned; the walk must end, not loop.
    a_stub = CA(key=a_key, cert=authority("A", key=a_key).cert)
    b = authority("B", key=b_key, issuer=a_stub)
    a = authority("A", key=a_key, issuer=b)
    pinned = authority("Pinned")
    assert "not in signer.cfssl.ca_pins" in refused(a, [a, b], [pinned])
