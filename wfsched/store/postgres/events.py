"""PostgreSQL SQL for trigger events, the dispatch outbox (a mixin of ``PostgresStore``).

Claims use ``FOR UPDATE SKIP LOCKED`` so replicas never share an event, and every recorded
batch sends a NOTIFY on ``EVENTS_CHANNEL`` that wakes the dispatchers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb

from wfsched.errors import StoreError
from wfsched.jsontext import dumpb
from wfsched.models import (
    Claim,
    DispatchOutcome,
    EventStatus,
    NewEvent,
    TriggerEvent,
    utc_text,
    utcnow,
)
from wfsched.store.common import (
    EVENT_COLS,
    finish_rows,
    fresh_event,
    history_where,
    no_event,
    require_all,
)
from wfsched.store.postgres.connection import EVENTS_CHANNEL, Conn
from wfsched.store.postgres.retention import PgRetention
from wfsched.store.postgres.rows import (
    event_from_row,
    opt_utc,
    sql_limit,
    stored_event,
    utc,
)

# One statement, one round trip: claim each batch's dedupe keys in the unpartitioned
# ``wfsched_event_keys`` (its primary key is the exactly-once guarantee: a unique index on the
# partitioned events table would have to include ``fired_at``), insert the events whose key
# was new, and queue a NOTIFY when at least one row was created unclaimed (the ``wake`` CTE is
# scanned only through the UNION, and yields a row only if ``ins`` returned one; a claimed row
# is already in its dispatcher's hands). Keys go in key order so two batches with overlapping
# keys lock the unique index in the same order and cannot deadlock; a batch that meets a key
# another one is inserting waits for it to commit, then skips the key.
# The batch is one JSON document, an array per row, read as jsonb: parsed once, each field
# then taken by position (read as json text, ``->>`` parsed each row again up to the field it
# took: twice the server's CPU per event). The answer is the number of events created: when
# it is the batch's size, every key was new and nothing more is read (the common case); when
# less, the events behind the batch's keys are read in a second statement.
_RECORD_SQL = f"""
WITH i AS MATERIALIZED (
    SELECT r->>0 AS execution_id, r->>1 AS workflow_id, r->>2 AS trigger_id,
        r->>3 AS trigger_type, r->>4 AS dedupe_key, (r->>5)::timestamptz AS scheduled_at,
        (r->>6)::timestamptz AS fired_at, (r->>7)::bool AS claimed, r->8 AS payload
    FROM jsonb_array_elements(%s::jsonb) AS r
), k AS (
    INSERT INTO wfsched_event_keys (workflow_id, dedupe_key, execution_id, fired_at)
    SELECT workflow_id, dedupe_key, execution_id, fired_at FROM i
    ORDER BY workflow_id, dedupe_key
    ON CONFLICT (workflow_id, dedupe_key) DO NOTHING
    RETURNING execution_id
), ins AS (
    INSERT INTO wfsched_events (execution_id, workflow_id, trigger_id, trigger_type,
        dedupe_key, scheduled_at, fired_at, payload, status, next_attempt_at, claimed_by,
        claimed_until)
    SELECT i.execution_id, i.workflow_id, i.trigger_id, i.trigger_type, i.dedupe_key,
        i.scheduled_at, i.fired_at, i.payload, 'pending', i.fired_at,
        CASE WHEN i.claimed THEN %s::text END, CASE WHEN i.claimed THEN %s::timestamptz END
    FROM i JOIN k USING (execution_id)
    RETURNING execution_id, claimed_by
), wake AS (
    SELECT pg_notify('{EVENTS_CHANNEL}', '')
    FROM (SELECT 1 FROM ins WHERE claimed_by IS NULL LIMIT 1) AS unclaimed
)
SELECT count(execution_id) FROM (
    SELECT execution_id FROM ins
    UNION ALL
    SELECT NULL FROM wake
) AS created
"""

_E_COLS = ", ".join(f"e.{c.strip()}" for c in EVENT_COLS.split(","))
# Whose each key of a batch is: the batch's own event (the key took its execution id: only the
# id is read) or another's, read whole through the key (its fired_at lets PostgreSQL look in
# one partition only); a key whose event is gone has the other id and no event.
_KEYS_SQL = f"""
SELECT q.eid, k.execution_id = q.eid, {_E_COLS}
FROM unnest(%s::text[], %s::text[], %s::text[]) AS q(wid, dkey, eid)
JOIN wfsched_event_keys k ON k.workflow_id = q.wid AND k.dedupe_key = q.dkey
LEFT JOIN wfsched_events e ON k.execution_id <> q.eid
    AND e.execution_id = k.execution_id AND e.fired_at = k.fired_at
"""

# A key whose event is gone (pruned by a partition drop after the key pass saw it alive):
# the fire may be recorded anew, as any delivery older than the retention may.
_STALE_KEYS_SQL = """
DELETE FROM wfsched_event_keys k USING unnest(%s::text[], %s::text[]) AS q(wid, dkey)
WHERE k.workflow_id = q.wid AND k.dedupe_key = q.dkey AND NOT EXISTS (
    SELECT 1 FROM wfsched_events e WHERE e.execution_id = k.execution_id
        AND e.fired_at = k.fired_at)
"""

# The inner SELECT picks due, unclaimed rows and locks them, skipping rows another replica
# is claiming right now; after the lock PostgreSQL re-checks the WHERE against the newest
# row version, so a claim that committed meanwhile is not taken twice. ``fired_at`` goes with
# the id so the UPDATE looks in the row's own time partition only.
_CLAIM_SQL = f"""
WITH claimed AS (
    UPDATE wfsched_events SET claimed_by = %(owner)s, claimed_until = %(until)s
    WHERE (execution_id, fired_at) IN (
        SELECT execution_id, fired_at FROM wfsched_events
        WHERE status = 'pending' AND next_attempt_at <= %(now)s
            AND (claimed_until IS NULL OR claimed_until < %(now)s)
        ORDER BY next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    RETURNING {EVENT_COLS}
)
SELECT {EVENT_COLS} FROM claimed ORDER BY next_attempt_at, execution_id
"""

# One statement for the whole batch of outcomes (an UPDATE per outcome costs a round trip
# each: 2,000 outcomes took 130 ms pipelined, against 25 ms as one statement).
# With each event's fired_at the row is found in its own time partition; without it (an
# outcome built by hand) in every partition's index.
_FINISH_SQL = """
UPDATE wfsched_events AS e SET status = o.status, attempts = e.attempts + 1,
    last_error = o.last_error, next_attempt_at = o.next_attempt_at,
    dispatched_at = o.dispatched_at, claimed_by = NULL, claimed_until = NULL
FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[],
            %b::timestamptz[])
    AS o(status, last_error, next_attempt_at, dispatched_at, execution_id, fired_at)
WHERE e.execution_id = o.execution_id AND e.fired_at = o.fired_at AND e.claimed_by = %b
"""
# The common batch, deliveries only (every one dispatched, no error, no retry): three arrays
# instead of six, the constant columns written as constants (psycopg dumps an array element
# by element in Python).
_DELIVERED_SQL = """
UPDATE wfsched_events AS e SET status = 'dispatched', attempts = e.attempts + 1,
    last_error = NULL, next_attempt_at = NULL, dispatched_at = o.dispatched_at,
    claimed_by = NULL, claimed_until = NULL
FROM unnest(%b::text[], %b::timestamptz[], %b::timestamptz[])
    AS o(execution_id, fired_at, dispatched_at)
WHERE e.execution_id = o.execution_id AND e.fired_at = o.fired_at AND e.claimed_by = %b
"""
_FINISH_ANY_SQL = """
UPDATE wfsched_events AS e SET status = o.status, attempts = e.attempts + 1,
    last_error = o.last_error, next_attempt_at = o.next_attempt_at,
    dispatched_at = o.dispatched_at, claimed_by = NULL, claimed_until = NULL
FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[])
    AS o(status, last_error, next_attempt_at, dispatched_at, execution_id)
WHERE e.execution_id = o.execution_id AND e.claimed_by = %b
"""


class PgEvents(PgRetention):
    """Trigger events of the Store protocol: record, claim, finish, history, requeue."""

    async def record(
        self, events: Sequence[NewEvent], claim: Claim | None = None
    ) -> list[tuple[TriggerEvent, bool]]:
        if not events:
            return []
        # A key repeated inside the batch is sent once; the later copies get the first one.
        first: dict[tuple[str, str], NewEvent] = {}
        claimed: set[str] = set()
        limit = claim.limit if claim is not None else 0
        for i, e in enumerate(events):
            if first.setdefault((e.workflow_id, e.dedupe_key), e) is e and i < limit:
                claimed.add(e.execution_id)
        unique = list(first.values())
        fired = [utc(e.fired_at) for e in unique]
        if self._uncovered(fired):
            await self._ensure_partitions(fired)
        async with self._conn() as conn:
            found = await self._insert(conn, unique, fired, claim, claimed)
            if found is None and len(unique) == len(events):
                return [(fresh_event(e), True) for e in events]  # every key new: the common case
            created, existing = found or ({e.execution_id for e in unique}, {})
            stale = [e for e in unique if e.execution_id not in created]
            stale = [e for e in stale if (e.workflow_id, e.dedupe_key) not in existing]
            if stale:
                await conn.execute(
                    _STALE_KEYS_SQL,
                    ([e.workflow_id for e in stale], [e.dedupe_key for e in stale]),
                )
                again = await self._insert(
                    conn, stale, [utc(e.fired_at) for e in stale], claim, claimed
                )
                if again is None:
                    created.update(e.execution_id for e in stale)
                else:
                    created |= again[0]
                    existing.update(again[1])
        out: list[tuple[TriggerEvent, bool]] = []
        for e in events:
            key = (e.workflow_id, e.dedupe_key)
            original = first[key]
            if original.execution_id in created:
                if e is original:
                    out.append((fresh_event(e), True))
                else:
                    out.append((stored_event(original), False))
            elif key in existing:
                out.append((existing[key], False))
            else:  # neither a new key nor an event behind the old one, even after a retry
                raise StoreError(
                    f"PostgreSQL {self.where}: event {e.workflow_id}/{e.dedupe_key} was neither"
                    " recorded nor found"
                )
        return out

    async def _insert(
        self,
        conn: Conn,
        unique: Sequence[NewEvent],
        fired: Sequence[datetime],
        claim: Claim | None,
        claimed: set[str],
    ) -> tuple[set[str], dict[tuple[str, str], TriggerEvent]] | None:
        """Insert events with new keys. None when every one was created; else the ids
        created and the events found behind the keys already taken."""
        # The batch as one JSON document, an array per row: one parameter, where an array per
        # column had psycopg dump every element (and every payload as a Jsonb) through Python
        # objects of its own, and an object per row built a dict per event.
        rows = [
            (
                e.execution_id,
                e.workflow_id,
                e.trigger_id,
                e.trigger_type,
                e.dedupe_key,
                None if e.scheduled_at is None else utc_text(e.scheduled_at),
                utc_text(at),
                e.execution_id in claimed,
                e.payload,
            )
            for e, at in zip(unique, fired, strict=True)
        ]
        cur = await conn.execute(
            _RECORD_SQL,
            (
                Jsonb(rows, dumpb),  # orjson's bytes as they are, no str in between
                claim.owner if claim is not None else None,
                utc(claim.until) if claim is not None else None,
            ),
        )
        row = await cur.fetchone()
        if row is not None and row[0] == len(unique):
            return None
        # Some keys were taken. A separate statement: its snapshot sees rows that concurrent
        # batches committed while the insert waited on them.
        cur = await conn.execute(
            _KEYS_SQL,
            (
                [e.workflow_id for e in unique],
                [e.dedupe_key for e in unique],
                [e.execution_id for e in unique],
            ),
        )
        created: set[str] = set()
        existing: dict[tuple[str, str], TriggerEvent] = {}
        for execution_id, mine, *columns in await cur.fetchall():
            if mine:
                created.add(execution_id)
            elif columns[0] is not None:
                event = event_from_row(columns)
                existing[(event.workflow_id, event.dedupe_key)] = event
        return created, existing

    async def claim(self, owner: str, limit: int, ttl: float, now: datetime) -> list[TriggerEvent]:
        params = {
            "owner": owner,
            "until": utc(now + timedelta(seconds=ttl)),
            "now": utc(now),
            "limit": sql_limit(limit),
        }
        async with self._conn() as conn:
            cur = await conn.execute(_CLAIM_SQL, params)
            rows = await cur.fetchall()
        return [event_from_row(r) for r in rows]

    async def renew(
        self, owner: str, execution_ids: Sequence[str], held_until: datetime, until: datetime
    ) -> set[str]:
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE wfsched_events SET claimed_until = %s WHERE execution_id = ANY(%s)"
                " AND claimed_by = %s AND claimed_until = %s AND status = 'pending'"
                " RETURNING execution_id",
                (utc(until), list(execution_ids), owner, utc(held_until)),
            )
            return {r[0] for r in await cur.fetchall()}

    async def release(self, owner: str, execution_ids: Sequence[str]) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE wfsched_events SET claimed_by = NULL, claimed_until = NULL"
                " WHERE execution_id = ANY(%s) AND claimed_by = %s",
                (list(execution_ids), owner),
            )

    async def finish(self, owner: str, outcomes: Sequence[DispatchOutcome]) -> None:
        if not outcomes:
            return
        located = [o for o in outcomes if o.fired_at is not None]
        unlocated = [o for o in outcomes if o.fired_at is None]
        async with self._conn() as conn:
            if located and _deliveries_only(located):
                now = utcnow()
                await conn.execute(
                    _DELIVERED_SQL,
                    (
                        [o.execution_id for o in located],
                        [opt_utc(o.fired_at) for o in located],
                        [utc(o.dispatched_at or now) for o in located],
                        owner,
                    ),
                )
            elif located:
                # Arrays, not one JSON document as ``record`` sends: the planner reads an array's
                # length and looks each row up in its own partition, where it plans a JSON set
                # of rows (estimated at 100) as a scan of every partition.
                # finish_rows ends each row with the owner; here it is one parameter.
                columns = list(zip(*finish_rows(owner, located, opt_utc), strict=True))
                fired = [opt_utc(o.fired_at) for o in located]
                await conn.execute(_FINISH_SQL, [list(c) for c in columns[:5]] + [fired, owner])
            if unlocated:
                columns = list(zip(*finish_rows(owner, unlocated, opt_utc), strict=True))
                await conn.execute(_FINISH_ANY_SQL, [list(c) for c in columns[:5]] + [owner])

    async def next_due(self) -> datetime | None:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT min(next_attempt_at) FROM wfsched_events WHERE status = 'pending'"
            )
            row = await cur.fetchone()
        return opt_utc(row[0]) if row else None

    async def history(
        self,
        workflow_id: str | None = None,
        *,
        limit: int = 50,
        status: EventStatus | None = None,
        trigger_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: str | None = None,
    ) -> list[TriggerEvent]:
        where, args = history_where(
            "%s",
            utc,
            workflow_id=workflow_id,
            status=status,
            trigger_id=trigger_id,
            since=since,
            until=until,
            before=before,
        )
        query = (
            f"SELECT {EVENT_COLS} FROM wfsched_events{where} ORDER BY execution_id DESC LIMIT %s"
        )
        async with self._conn() as conn:
            cur = await conn.execute(query, (*args, sql_limit(limit)))
            rows = await cur.fetchall()
        return [event_from_row(r) for r in rows]

    async def get_event(self, execution_id: str) -> TriggerEvent:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {EVENT_COLS} FROM wfsched_events WHERE execution_id = %s",
                (execution_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise no_event(execution_id)
        return event_from_row(row)

    async def requeue(self, execution_ids: Sequence[str], now: datetime) -> list[TriggerEvent]:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE wfsched_events SET status = 'pending', last_error = NULL,"
                " next_attempt_at = %s, claimed_by = NULL, claimed_until = NULL"
                f" WHERE execution_id = ANY(%s) RETURNING {EVENT_COLS}",
                (utc(now), list(execution_ids)),
            )
            found = {r[0]: event_from_row(r) for r in await cur.fetchall()}
            require_all(execution_ids, set(found), no_event)
        return [found[execution_id] for execution_id in execution_ids]


def _deliveries_only(outcomes: Sequence[DispatchOutcome]) -> bool:
    """Whether every outcome is a plain delivery: dispatched, no error kept, no retry (what
    ``_DELIVERED_SQL`` writes)."""
    for o in outcomes:
        if o.status != "dispatched" or o.error is not None or o.next_attempt_at is not None:
            return False
    return True
