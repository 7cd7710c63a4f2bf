"""Values between Python and PostgreSQL: instants, jsonb, limits and row converters.

Rows are read in the column order of ``common.EVENT_COLS`` and ``common.DEPLOYMENT_COLS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from wfsched.jsontext import dumps, loads
from wfsched.models import Deployment, NewEvent, TriggerEvent


def utc(value: datetime) -> datetime:
    """An instant as an aware UTC datetime (naive values count as local time, as fmt_ts)."""
    return value.astimezone(UTC)


def opt_utc(value: datetime | None) -> datetime | None:
    """``utc`` passing None through."""
    return None if value is None else value.astimezone(UTC)


def to_json(value: Any) -> Jsonb:
    """Adapt a value as jsonb, serialised like the SQLite backend (``default=str``)."""
    return Jsonb(value, dumps)


def sql_limit(n: int) -> int | None:
    """SQLite's ``LIMIT n`` with a negative n means no limit; PostgreSQL spells it NULL."""
    return None if n < 0 else n


def event_from_row(row: Sequence[Any]) -> TriggerEvent:
    """A ``wfsched_events`` row as a TriggerEvent."""
    return TriggerEvent(
        execution_id=row[0],
        workflow_id=row[1],
        trigger_id=row[2],
        trigger_type=row[3],
        dedupe_key=row[4],
        scheduled_at=opt_utc(row[5]),
        fired_at=utc(row[6]),
        payload=row[7],
        status=row[8],
        attempts=row[9],
        last_error=row[10],
        next_attempt_at=opt_utc(row[11]),
        dispatched_at=opt_utc(row[12]),
    )


def deployment_from_row(row: Sequence[Any]) -> Deployment:
    """A ``wfsched_deployments`` row as a Deployment."""
    return Deployment(
        workflow_id=row[0],
        name=row[1],
        document=row[2],
        spec_hash=row[3],
        state=row[4],
        revision=row[5],
        updated_at=utc(row[6]),
        active_since=utc(row[7]),
    )


def stored_event(e: NewEvent) -> TriggerEvent:
    """The row a just-created event reads back as: UTC instants, JSON round-tripped payload.

    Returned for a duplicate key later in the same batch, which SQLite reads from the table.
    """
    return TriggerEvent(
        execution_id=e.execution_id,
        workflow_id=e.workflow_id,
        trigger_id=e.trigger_id,
        trigger_type=e.trigger_type,
        dedupe_key=e.dedupe_key,
        scheduled_at=opt_utc(e.scheduled_at),
        fired_at=utc(e.fired_at),
        payload=_json_roundtrip(e.payload),
        status="pending",
        next_attempt_at=utc(e.fired_at),
    )


def _json_roundtrip(value: Mapping[str, Any]) -> Any:
    return loads(dumps(value))
