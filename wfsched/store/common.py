"""Pieces both store backends share: migrations, JSON, instants, deploy planning, column
lists, the events ``record`` returns, the rows ``finish`` writes, and not-found/fence errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from wfsched.errors import NotFound, StoreError
from wfsched.models import (
    Deployment,
    DispatchOutcome,
    NewEvent,
    TriggerEvent,
    WorkflowSpec,
    utc_text,
    utcnow,
)

# Both schemas name the columns alike; row converters index them in this order.
EVENT_COLS = (
    "execution_id, workflow_id, trigger_id, trigger_type, dedupe_key, scheduled_at, fired_at,"
    " payload, status, attempts, last_error, next_attempt_at, dispatched_at"
)
DEPLOYMENT_COLS = (
    "workflow_id, name, document, spec_hash, state, revision, updated_at, active_since"
)


def migrations(backend: str) -> list[tuple[int, str]]:
    """Return ``(version, sql)`` for a backend's migrations, in order."""
    folder = resources.files("wfsched.store") / "migrations" / backend
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def fmt_ts(value: datetime | None) -> str | None:
    """Render an instant as fixed-width UTC text (sorts as text)."""
    if value is None:
        return None
    # The same fixed-width text as strftime("%Y-%m-%dT%H:%M:%S.%fZ"), far cheaper.
    return utc_text(value)


def parse_ts(value: str | None) -> datetime | None:
    """Parse fixed-width UTC text back into an aware datetime."""
    if value is None:
        return None
    # fromisoformat reads the trailing Z as UTC (Python 3.11) at ~1 % of strptime's cost,
    # which matters on the dispatch hot path (every claimed row carries several instants).
    return datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class PlannedDeploy:
    """What ``apply`` does to one spec, decided from the current row."""

    spec: WorkflowSpec
    action: str  # created | updated | unchanged
    keep_triggers: frozenset[str]


def plan_deploy(
    spec: WorkflowSpec, current: Deployment | None, current_types: Mapping[str, str]
) -> PlannedDeploy:
    """Decide create/update/unchanged; trigger state survives when id and type stay."""
    if current is None:
        return PlannedDeploy(spec, "created", frozenset())
    if current.spec_hash == spec.spec_hash:
        return PlannedDeploy(spec, "unchanged", frozenset(t.id for t in spec.triggers))
    keep = frozenset(t.id for t in spec.triggers if current_types.get(t.id) == t.type)
    return PlannedDeploy(spec, "updated", keep)


def trigger_rows(spec: WorkflowSpec) -> Sequence[tuple[str, str, str]]:
    """Return ``(workflow_id, trigger_id, type)`` for each trigger of a spec."""
    return [(spec.id, t.id, t.type) for t in spec.triggers]


def fresh_event(e: NewEvent) -> TriggerEvent:
    """The event ``record`` returns for a row it just created (its input, not read back)."""
    return TriggerEvent(
        execution_id=e.execution_id,
        workflow_id=e.workflow_id,
        trigger_id=e.trigger_id,
        trigger_type=e.trigger_type,
        dedupe_key=e.dedupe_key,
        scheduled_at=e.scheduled_at,
        fired_at=e.fired_at,
        payload=e.payload,
        status="pending",
        next_attempt_at=e.fired_at,
    )


def finish_rows(
    owner: str, outcomes: Sequence[DispatchOutcome], stamp: Callable[[datetime | None], Any]
) -> list[tuple[Any, ...]]:
    """``(status, error, next_attempt_at, dispatched_at, execution_id, owner)`` per outcome,
    instants converted by ``stamp``; only a dispatched event gets a dispatch time."""
    now = utcnow()
    return [
        (
            o.status,
            o.error,
            stamp(o.next_attempt_at),
            stamp(_dispatch_time(o, now)),
            o.execution_id,
            owner,
        )
        for o in outcomes
    ]


def _dispatch_time(o: DispatchOutcome, now: datetime) -> datetime | None:
    """The dispatch time written: a dispatched event's (``now`` if it has none), else None."""
    return (o.dispatched_at or now) if o.status == "dispatched" else None


def finish_groups(
    outcomes: Sequence[DispatchOutcome], stamp: Callable[[datetime | None], Any]
) -> dict[tuple[Any, ...], list[str]]:
    """The execution ids of ``outcomes`` by what is written for each, ``(status, error,
    next_attempt_at, dispatched_at)``, instants converted by ``stamp`` as in
    :func:`finish_rows`. A batch settled at once (``log`` mode) is one group."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    now = utcnow()
    for o in outcomes:
        key = (o.status, o.error, o.next_attempt_at, _dispatch_time(o, now))
        ids = groups.get(key)
        if ids is None:
            groups[key] = [o.execution_id]
        else:
            ids.append(o.execution_id)
    return {
        (status, error, stamp(next_at), stamp(dispatched)): ids
        for (status, error, next_at, dispatched), ids in groups.items()
    }


_STATUSES = ("pending", "dispatched", "failed")


def history_where(
    mark: str,
    stamp: Callable[[datetime], Any],
    *,
    workflow_id: str | None,
    status: str | None,
    trigger_id: str | None,
    since: datetime | None,
    until: datetime | None,
    before: str | None,
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (empty or with a leading space) and arguments of ``history``;
    ``mark`` is the backend's placeholder, ``stamp`` its instant conversion."""
    if status is not None and status not in _STATUSES:
        raise ValueError(f"unknown event status {status!r}")
    terms = (
        ("workflow_id = ", workflow_id),
        ("trigger_id = ", trigger_id),
        ("fired_at >= ", None if since is None else stamp(since)),
        ("fired_at < ", None if until is None else stamp(until)),
        ("execution_id < ", before),
    )
    used = [(sql, value) for sql, value in terms if value is not None]
    # The status as a literal: a partial index on it (events_failed, events_due) is usable
    # only when the query states its condition, which a bound parameter does not.
    clauses = [f"status = '{status}'"] if status is not None else []
    clauses += [sql + mark for sql, _ in used]
    if not clauses:
        return "", []
    return " WHERE " + " AND ".join(clauses), [v for _, v in used]


def like_pattern(needle: str) -> str:
    """A LIKE pattern (escape character ``\\``) matching text that contains ``needle``."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def not_deployed(workflow_id: str) -> NotFound:
    """The error for an unknown workflow id."""
    return NotFound(f"workflow {workflow_id!r} is not deployed")


def no_event(execution_id: str) -> NotFound:
    """The error for an unknown execution id."""
    return NotFound(f"no event with execution id {execution_id!r}")


def require_all(wanted: Iterable[str], found: set[str], missing: Callable[[str], NotFound]) -> None:
    """Raise ``missing(id)`` for the first id of ``wanted`` (in order) not in ``found``."""
    for item in wanted:
        if item not in found:
            raise missing(item)


def stale_fence(workflow_id: str, trigger_id: str, fence: int) -> StoreError:
    """The error for a cursor write whose fencing token a newer lock holder has passed."""
    return StoreError(
        f"stale fencing token {fence} for {workflow_id}/{trigger_id}:"
        " a newer lock holder has written"
    )
