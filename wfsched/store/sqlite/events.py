"""SQLite SQL for trigger events, the dispatch outbox (a mixin of ``SqliteStore``).

One daemon per file, so a claim is a plain SELECT then UPDATE inside one write transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from wfsched.jsontext import dumps, loads
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
    finish_groups,
    finish_rows,
    fmt_ts,
    fresh_event,
    history_where,
    no_event,
    parse_ts,
)
from wfsched.store.sqlite.connection import SqliteConnection

# The columns that are often NULL are sent as '' and turned back by NULLIF: sqlite3 binds a
# None through its adapter lookup (raising and dropping an AttributeError), a str at once.
_INSERT_EVENT = (
    "INSERT INTO events (execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,"
    " scheduled_at, fired_at, payload, status, next_attempt_at, claimed_by, claimed_until)"
    " VALUES (?, ?, ?, ?, ?, NULLIF(?, ''), ?, ?, 'pending', ?, NULLIF(?, ''), NULLIF(?, ''))"
    " ON CONFLICT (workflow_id, dedupe_key) DO NOTHING"
)

# Outcomes written alike (a batch settled at once), their execution ids as one JSON array.
_FINISH_ALIKE = (
    "UPDATE events SET status=?, attempts=attempts+1, last_error=?, next_attempt_at=?,"
    " dispatched_at=?, claimed_by=NULL, claimed_until=NULL"
    " WHERE execution_id IN (SELECT value FROM json_each(?)) AND claimed_by=?"
)
_ALIKE_STATEMENTS = 4
"""Groups of outcomes written alike by one statement each, at most; more go as one array."""

# Each element of the JSON array: [status, error, next_attempt_at, dispatched_at, execution_id].
_FINISH = (
    "UPDATE events SET status=json_extract(o.value,'$[0]'), attempts=attempts+1,"
    " last_error=json_extract(o.value,'$[1]'), next_attempt_at=json_extract(o.value,'$[2]'),"
    " dispatched_at=json_extract(o.value,'$[3]'), claimed_by=NULL, claimed_until=NULL"
    " FROM json_each(?) AS o"
    " WHERE events.execution_id=json_extract(o.value,'$[4]') AND events.claimed_by=?"
)


def _event(row: Sequence[Any]) -> TriggerEvent:
    return TriggerEvent(
        execution_id=row[0],
        workflow_id=row[1],
        trigger_id=row[2],
        trigger_type=row[3],
        dedupe_key=row[4],
        scheduled_at=parse_ts(row[5]),
        fired_at=parse_ts(row[6]) or utcnow(),
        payload=loads(row[7]),
        status=row[8],
        attempts=row[9],
        last_error=row[10],
        next_attempt_at=parse_ts(row[11]),
        dispatched_at=parse_ts(row[12]),
    )


class SqliteEvents(SqliteConnection):
    """Trigger events of the Store protocol: record, claim, finish, history, requeue."""

    async def record(
        self, events: Sequence[NewEvent], claim: Claim | None = None
    ) -> list[tuple[TriggerEvent, bool]]:
        return await self._shared_tx(partial(self._record, events, claim))

    def _record(
        self, events: Sequence[NewEvent], claim: Claim | None, conn: sqlite3.Connection
    ) -> list[tuple[TriggerEvent, bool]]:
        rows = []
        owner, until, claimed = "", "", 0
        if claim is not None:
            owner, until, claimed = claim.owner, utc_text(claim.until), claim.limit
        for i, e in enumerate(events):
            if i == claimed:
                owner = until = ""
            fired = utc_text(e.fired_at)
            scheduled = e.scheduled_at
            rows.append(
                (
                    e.execution_id,
                    e.workflow_id,
                    e.trigger_id,
                    e.trigger_type,
                    e.dedupe_key,
                    "" if scheduled is None else utc_text(scheduled),
                    fired,
                    dumps(e.payload),
                    fired,
                    owner,
                    until,
                )
            )
        # One statement for the whole group commit; the common case (no dedupe key already
        # taken) is then told by the summed rowcount alone.
        cur = conn.executemany(_INSERT_EVENT, rows)
        created: set[str] | None = None
        if cur.rowcount != len(rows):
            created = set()
            ids = [e.execution_id for e in events]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                created.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT execution_id FROM events WHERE execution_id IN ({marks})", chunk
                    )
                )
        out: list[tuple[TriggerEvent, bool]] = []
        for e in events:
            if created is None or e.execution_id in created:
                out.append((fresh_event(e), True))
            else:
                row = conn.execute(
                    f"SELECT {EVENT_COLS} FROM events WHERE workflow_id=? AND dedupe_key=?",
                    (e.workflow_id, e.dedupe_key),
                ).fetchone()
                out.append((_event(row), False))
        return out

    async def claim(self, owner: str, limit: int, ttl: float, now: datetime) -> list[TriggerEvent]:
        def body(conn: sqlite3.Connection) -> list[TriggerEvent]:
            stamp = fmt_ts(now)
            rows = conn.execute(
                f"SELECT {EVENT_COLS} FROM events WHERE status='pending' AND next_attempt_at<=?"
                " AND (claimed_until IS NULL OR claimed_until<?) ORDER BY next_attempt_at"
                " LIMIT ?",
                (stamp, stamp, limit),
            ).fetchall()
            until = fmt_ts(now + timedelta(seconds=ttl))
            conn.executemany(
                "UPDATE events SET claimed_by=?, claimed_until=? WHERE execution_id=?",
                [(owner, until, r[0]) for r in rows],
            )
            return [_event(r) for r in rows]

        return await self._shared_tx(body)

    async def renew(
        self, owner: str, execution_ids: Sequence[str], held_until: datetime, until: datetime
    ) -> set[str]:
        def body(conn: sqlite3.Connection) -> set[str]:
            renewed: set[str] = set()
            for i in range(0, len(execution_ids), 500):
                chunk = execution_ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                renewed.update(
                    r[0]
                    for r in conn.execute(
                        f"UPDATE events SET claimed_until=? WHERE execution_id IN ({marks})"
                        " AND claimed_by=? AND claimed_until=? AND status='pending'"
                        " RETURNING execution_id",
                        (fmt_ts(until), *chunk, owner, fmt_ts(held_until)),
                    )
                )
            return renewed

        return await self._shared_tx(body)

    async def release(self, owner: str, execution_ids: Sequence[str]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            for i in range(0, len(execution_ids), 500):
                chunk = execution_ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    "UPDATE events SET claimed_by=NULL, claimed_until=NULL"
                    f" WHERE execution_id IN ({marks}) AND claimed_by=?",
                    (*chunk, owner),
                )

        await self._shared_tx(body)

    async def finish(self, owner: str, outcomes: Sequence[DispatchOutcome]) -> None:
        groups = finish_groups(outcomes, fmt_ts)
        if len(groups) <= _ALIKE_STATEMENTS:
            # Mostly one group (a batch settled at once): per row, only its id is read.
            alike = [(*key, dumps(ids), owner) for key, ids in groups.items()]

            def write(conn: sqlite3.Connection) -> None:
                for args in alike:
                    conn.execute(_FINISH_ALIKE, args)

            await self._shared_tx(write)
            return
        # Sends' outcomes (each with its own dispatch time): one statement for the batch, its
        # rows as one JSON array; binding six parameters per row through ``executemany`` cost
        # about twice the instructions (callgrind).
        rows = dumps([row[:5] for row in finish_rows(owner, outcomes, fmt_ts)])
        await self._shared_tx(lambda conn: conn.execute(_FINISH, (rows, owner)))

    async def next_due(self) -> datetime | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT min(next_attempt_at) FROM events WHERE status='pending'"
            ).fetchone()
        )
        return parse_ts(row[0]) if row else None

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
            "?",
            fmt_ts,
            workflow_id=workflow_id,
            status=status,
            trigger_id=trigger_id,
            since=since,
            until=until,
            before=before,
        )
        # Failed and pending events are few beside the history: read them by their partial
        # index (then sort), never by walking a workflow's whole history for the status.
        hint = {"failed": " INDEXED BY events_failed", "pending": " INDEXED BY events_due"}
        table = "events" + hint.get(status or "", "")
        sql = f"SELECT {EVENT_COLS} FROM {table}{where} ORDER BY execution_id DESC LIMIT ?"
        rows = await self._run(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [_event(r) for r in rows]

    async def get_event(self, execution_id: str) -> TriggerEvent:
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {EVENT_COLS} FROM events WHERE execution_id=?", (execution_id,)
            ).fetchone()
        )
        if row is None:
            raise no_event(execution_id)
        return _event(row)

    async def requeue(self, execution_ids: Sequence[str], now: datetime) -> list[TriggerEvent]:
        def body(conn: sqlite3.Connection) -> list[TriggerEvent]:
            out = []
            for execution_id in execution_ids:
                cur = conn.execute(
                    "UPDATE events SET status='pending', last_error=NULL, next_attempt_at=?,"
                    " claimed_by=NULL, claimed_until=NULL WHERE execution_id=?",
                    (fmt_ts(now), execution_id),
                )
                if cur.rowcount == 0:
                    raise no_event(execution_id)
                out.append(
                    _event(
                        conn.execute(
                            f"SELECT {EVENT_COLS} FROM events WHERE execution_id=?",
                            (execution_id,),
                        ).fetchone()
                    )
                )
            return out

        return await self._run(lambda c: self._tx(c, body))
