"""When a ``[[certificate]]`` table needs a new certificate or its action again (pure): the
table's record on disk in, a Plan out. The same schedule as the node's own certificate
(core.schedule): a deadline in 70-90 % of the lifetime, capped jittered retries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from join_agent.core import schedule
from join_agent.core.wire import parse_iso

if TYPE_CHECKING:
    from join_agent.core.records import TableRecord


@dataclass(frozen=True)
class Plan:
    """What one pass does for one certificate, and when the next pass is due."""

    issue: str  # why a new certificate is needed now; "" = none
    run_action: bool  # a rotation's action has not succeeded yet and is due again
    next_attempt: dt.datetime


def decide(
    record: TableRecord,
    mismatch: str,
    *,
    now: dt.datetime,
    retry_min: dt.timedelta,
    retry_max: dt.timedelta,
    draw: float,
) -> Plan:
    """The pure decision for one certificate from its record (see ``_record``).

    ``mismatch`` says why the current pair no longer serves the table ("" when it does).
    """
    nb, na = when(record.get("not_before")), when(record.get("not_after"))
    deadline = None if nb is None or na is None else schedule.renewal_deadline(nb, na, draw)
    if mismatch:
        deadline = None
    at = schedule.next_attempt(
        now,
        deadline=deadline,
        not_after=na,
        failures=int(record.get("failures") or 0),
        last_attempt=when(record.get("last_attempt")),
        retry_min=retry_min,
        retry_max=retry_max,
        draw=draw,
    )
    issue = ""
    if now >= at:
        issue = mismatch or ("no certificate yet" if deadline is None else "renewal deadline")
    action = record.get("action") or {}
    run_action = False
    if action.get("pending"):
        action_at = schedule.next_attempt(
            now,
            deadline=now,
            not_after=None,
            failures=int(action.get("failures") or 0),
            last_attempt=when(action.get("at")),
            retry_min=retry_min,
            retry_max=retry_max,
            draw=draw,
        )
        run_action = now >= action_at and not issue
        at = min(at, action_at)
    return Plan(issue=issue, run_action=run_action, next_attempt=at if now < at else now)


def when(value: object) -> dt.datetime | None:
    """A recorded timestamp, or None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None
