"""core/renewal.py: the renewal policy, through its public interface only."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from join_agent import errors
from join_agent.core.protocol import ErrorKind
from join_agent.core.renewal import AFTER_DENIAL, RenewalPolicy, identity_mismatch
from join_agent.core.schedule import Held, renew_at

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
S10, M1, M5 = dt.timedelta(seconds=10), dt.timedelta(minutes=1), dt.timedelta(minutes=5)


def policy(salt: float = 0.25) -> RenewalPolicy:
    return RenewalPolicy(retry_min=S10, retry_max=M5, salt=salt)


def held(days: int = 100, serial: str = "abc123") -> Held:
    nb = NOW - dt.timedelta(days=1)
    return Held(serial=serial, not_before=nb, not_after=nb + dt.timedelta(days=days))


def test_a_certificate_is_due_inside_70_to_90_percent_and_the_same_everywhere() -> None:
    cert = held(days=100)
    at = policy().next_attempt(NOW, cert)
    assert cert.not_before + dt.timedelta(days=70) <= at <= cert.not_before + dt.timedelta(days=90)
    assert at == renew_at(cert)  # what `status` shows
    assert policy(salt=0.9).next_attempt(NOW, cert) == at  # another process, same certificate
    assert renew_at(held(serial="other")) != at  # another certificate, another point


def test_without_a_certificate_the_first_attempt_is_now() -> None:
    assert policy().next_attempt(NOW, None) == NOW


def test_failures_back_off_capped_and_success_resets() -> None:
    p = policy()
    p.begin(NOW)
    p.failed(NOW, "no CFSSL server answered: x", ErrorKind.TRANSPORT)
    assert p.failures == 1 and p.last_ok is False
    assert p.last_error is not None
    assert p.last_error.to_json() == {
        "message": "no CFSSL server answered: x",
        "kind": "TransportError",
        "at": "2026-11-22T12:00:00Z",
    }
    first = p.next_attempt(NOW, held())
    assert NOW + S10 <= first <= NOW + 2 * S10
    assert p.next_attempt(NOW, held()) == first  # recomputing does not move it
    for _ in range(10):
        p.begin(NOW)
        p.failed(NOW, "again", ErrorKind.TRANSPORT)
    assert p.next_attempt(NOW, held()) <= NOW + M5
    p.begin(NOW)
    p.succeeded(NOW)
    assert (p.failures, p.last_ok, p.reason) == (0, True, "")
    assert p.last_error is not None  # kept after a success, as status.json documents


def test_an_early_renewal_is_due_at_once_and_a_request_outranks_the_splay() -> None:
    p = policy()
    p.first_look(NOW, joined=False, splay=dt.timedelta(minutes=10), draw=0.5)
    assert p.next_attempt(NOW, None) == NOW + dt.timedelta(minutes=5)
    p.request("the node's addresses changed (192.0.2.99)")
    assert p.next_attempt(NOW, held()) == NOW
    assert p.reason == "the node's addresses changed (192.0.2.99)"


def test_the_splay_is_drawn_once_for_an_unjoined_node_only() -> None:
    p = policy()
    delay = p.first_look(NOW, joined=False, splay=dt.timedelta(minutes=10), draw=0.5)
    assert delay == dt.timedelta(minutes=5)
    assert p.splay_left(NOW) == dt.timedelta(minutes=5)
    assert p.first_look(NOW, joined=False, splay=dt.timedelta(minutes=10), draw=0.9) is None
    assert p.reason == "no credentials yet"
    assert p.splay_left(NOW + dt.timedelta(minutes=5)) is None
    joined = policy()
    assert joined.first_look(NOW, joined=True, splay=dt.timedelta(minutes=10), draw=0.3) is None
    assert joined.next_attempt(NOW, held()) == renew_at(held())


def test_a_denial_holds_new_requests_and_an_ask_goes_now_whatever_waits() -> None:
    p = policy()
    for _ in range(6):
        p.begin(NOW)
        p.failed(NOW, "down", ErrorKind.TRANSPORT)
    p.begin(NOW)
    p.failed(NOW, "denied by admin", ErrorKind.DENIED)
    assert p.next_attempt(NOW, held()) >= NOW + AFTER_DENIAL
    p.ask("requested (SIGUSR1 / join-agent renew)")
    assert p.next_attempt(NOW, held()) == NOW
    p.begin(NOW)  # the attempt answers the ask; its failure backs off again
    p.failed(NOW, "down", ErrorKind.TRANSPORT)
    assert p.next_attempt(NOW, held()) > NOW


def test_a_reload_changes_the_bounds() -> None:
    p = policy()
    p.begin(NOW)
    p.failed(NOW, "down", ErrorKind.TRANSPORT)
    p.configure(dt.timedelta(minutes=1), dt.timedelta(minutes=2))
    assert p.next_attempt(NOW, held()) >= NOW + dt.timedelta(minutes=1)


@given(
    failures=st.integers(0, 40),
    salt=st.floats(0, 1, exclude_max=True),
    asked=st.booleans(),
    requested=st.booleans(),
    offset=st.integers(-(10**6), 10**6),
)
def test_never_before_now_and_an_ask_is_always_now(
    failures: int, salt: float, asked: bool, requested: bool, offset: int
) -> None:
    p = policy(salt)
    p.failures = failures
    p.last_attempt = NOW + dt.timedelta(seconds=offset)
    if requested:
        p.request("x")
    if asked:
        p.ask("y")
    at = p.next_attempt(NOW, held())
    assert at >= NOW
    if asked:
        assert at == NOW


@pytest.mark.parametrize(
    ("certificate", "node", "sans", "said"),
    [
        (("n1", ["192.0.2.10"]), ("n1", ["192.0.2.10"]), True, None),
        (("n1", ["192.0.2.10"]), ("n1", ["192.0.2.99"]), True, "addresses changed (192.0.2.99)"),
        (("n1", ["192.0.2.10"]), ("n1", ["192.0.2.99"]), False, None),  # no SANs: name only
        (("old", []), ("n1", []), False, "name changed (old -> n1)"),
        (("n1", ["b", "a"]), ("n1", ["a", "b"]), True, None),  # order does not matter
    ],
)
def test_identity_mismatch(
    certificate: tuple[str, list[str]], node: tuple[str, list[str]], sans: bool, said: str | None
) -> None:
    why = identity_mismatch(*certificate, *node, addresses_in_certificate=sans)
    if said is None:
        assert why is None
    else:
        assert why is not None and said in why


def _subclasses(cls: type) -> set[type]:
    subs: list[type] = cls.__subclasses__()
    out: set[type] = set(subs)
    for sub in subs:
        out |= _subclasses(sub)
    return out


def test_every_error_class_has_its_kind() -> None:
    """The worker reports an error's class name; each of ours must map to a kind, or a
    denial (say) would be recorded as UNKNOWN and not held."""
    import join_agent.kubelet.processes
    import join_agent.net.transport
    import join_agent.signers.kubernetes.approval
    import join_agent.signers.kubernetes.discovery
    import join_agent.signers.kubernetes.signer
    import join_agent.storage.guard

    del join_agent  # imported for their error classes
    names = {c.__name__ for c in _subclasses(errors.JoinAgentError)} | {"JoinAgentError"}
    unknown = sorted(n for n in names if ErrorKind.of(n) is ErrorKind.UNKNOWN)
    assert unknown == []
    assert ErrorKind.of("SomethingNew") is ErrorKind.UNKNOWN
    assert ErrorKind.of("RequestDenied") is ErrorKind.DENIED


def test_without_a_certificate_the_backoff_stops_at_join_retry_max() -> None:
    """A node that is not in the cluster at all waits at most join_retry_max after its CA
    comes back; a renewal, with a certificate still valid, waits up to retry_max."""
    joining = RenewalPolicy(retry_min=S10, retry_max=M5, join_retry_max=M1, salt=0.25)
    renewing = RenewalPolicy(retry_min=S10, retry_max=M5, join_retry_max=M1, salt=0.25)
    for p in (joining, renewing):
        for _ in range(12):
            p.begin(NOW)
            p.failed(NOW, "no CFSSL server answered: x", ErrorKind.TRANSPORT)
    waits = []
    for salt in (0.1, 0.5, 0.9):
        joining.salt = renewing.salt = salt
        assert NOW + S10 <= joining.next_attempt(NOW, None) <= NOW + M1
        waits.append(renewing.next_attempt(NOW, held()) - NOW)
    assert max(waits) > M1  # the renewal's cap is retry_max: some draw lands past a minute
    assert all(w <= M5 for w in waits)
    # Without join_retry_max (a policy built without one), retry_max caps both.
    assert policy().join_retry_max is None
