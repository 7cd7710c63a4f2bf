"""SQLite SQL for heartbeats, daemon runs, the occurrence ledger and the deployment history
(a mixin of ``SqliteStore``); what ``explain`` and ``status`` read."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from wfsched.jsontext import dumps
from wfsched.models import (
    DaemonRun,
    DeploymentState,
    Occurrence,
    TriggerEvent,
    execution_id_floor,
    utcnow,
)
from wfsched.store.common import EVENT_COLS, fmt_ts, parse_ts
from wfsched.store.sqlite.connection import SqliteConnection
from wfsched.store.sqlite.events import _event

ID_SLACK = timedelta(minutes=1)
"""Margin below a window's start for the execution-id bound (ids and fired_at come from the
same clock a moment apart)."""
HARD_CAP_FACTOR = 100
"""Ledger entries per trigger kept at most, in multiples of ``keep_per_trigger``, however
young: a flood of refused requests must not grow the table without bound."""


def _run_row(row: Sequence[Any]) -> DaemonRun:
    return DaemonRun(
        replica_id=row[0],
        started_at=parse_ts(row[1]) or utcnow(),
        last_seen=parse_ts(row[2]) or utcnow(),
        listen=row[3] or "",
        live=bool(row[4]),
    )


class SqliteLedger(SqliteConnection):
    """Heartbeats and the ledger of the Store protocol."""

    async def beat(self, run: DaemonRun) -> None:
        started, seen = fmt_ts(run.started_at), fmt_ts(run.last_seen)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO heartbeats (replica_id, listen, started_at, last_seen)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (replica_id) DO UPDATE SET"
                " listen=excluded.listen, started_at=excluded.started_at,"
                " last_seen=excluded.last_seen",
                (run.replica_id, run.listen, started, seen),
            )
            conn.execute(
                "INSERT INTO daemon_runs (replica_id, started_at, last_seen) VALUES (?, ?, ?)"
                " ON CONFLICT (replica_id, started_at) DO UPDATE SET last_seen=excluded.last_seen",
                (run.replica_id, started, seen),
            )

        await self._run(lambda c: self._tx(c, body))

    async def end_beat(self, run: DaemonRun) -> None:
        started, seen = fmt_ts(run.started_at), fmt_ts(run.last_seen)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM heartbeats WHERE replica_id=? AND started_at=?",
                (run.replica_id, started),
            )
            conn.execute(
                "UPDATE daemon_runs SET last_seen=? WHERE replica_id=? AND started_at=?",
                (seen, run.replica_id, started),
            )

        await self._run(lambda c: self._tx(c, body))

    async def daemon_runs(self, since: datetime) -> list[DaemonRun]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT r.replica_id, r.started_at, r.last_seen, h.listen,"
                " h.replica_id IS NOT NULL FROM daemon_runs AS r LEFT JOIN heartbeats AS h"
                " ON h.replica_id = r.replica_id AND h.started_at = r.started_at"
                " WHERE r.last_seen >= ? ORDER BY r.started_at, r.replica_id",
                (fmt_ts(since),),
            ).fetchall()
        )
        return [_run_row(r) for r in rows]

    async def add_occurrences(self, rows: Sequence[Occurrence]) -> None:
        values = [
            (o.workflow_id, o.trigger_id, o.trigger_type, fmt_ts(o.at), o.outcome, o.reason,
             o.execution_id)
            for o in rows
        ]  # fmt: skip
        await self._run(
            lambda c: self._tx(
                c,
                lambda conn: conn.executemany(
                    "INSERT INTO occurrences (workflow_id, trigger_id, trigger_type, at, outcome,"
                    " reason, execution_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    values,
                ),
            )
        )

    async def occurrences(
        self, workflow_id: str, since: datetime, until: datetime
    ) -> list[Occurrence]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT workflow_id, trigger_id, trigger_type, at, outcome, reason, execution_id"
                " FROM occurrences WHERE workflow_id=? AND at>=? AND at<? ORDER BY at, id",
                (workflow_id, fmt_ts(since), fmt_ts(until)),
            ).fetchall()
        )
        return [
            Occurrence(
                workflow_id=r[0],
                trigger_id=r[1],
                trigger_type=r[2],
                at=parse_ts(r[3]) or utcnow(),
                outcome=r[4],
                reason=r[5],
                execution_id=r[6],
            )
            for r in rows
        ]

    async def events_between(
        self, workflow_id: str, since: datetime, until: datetime
    ) -> list[TriggerEvent]:
        lo, hi = fmt_ts(since), fmt_ts(until)
        # An event is created at its fired_at, never before its scheduled_at: the id bound
        # holds for both, and keeps the scan on the (workflow_id, execution_id) index.
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {EVENT_COLS} FROM events WHERE workflow_id=? AND execution_id>=?"
                " AND ((fired_at>=? AND fired_at<?) OR (scheduled_at>=? AND scheduled_at<?))"
                " ORDER BY execution_id",
                (workflow_id, execution_id_floor(since - ID_SLACK), lo, hi, lo, hi),
            ).fetchall()
        )
        return [_event(r) for r in rows]

    async def deployment_log(self, workflow_id: str) -> list[tuple[datetime, DeploymentState]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT at, state FROM deployment_log WHERE workflow_id=? ORDER BY at, rowid",
                (workflow_id,),
            ).fetchall()
        )
        return [(parse_ts(r[0]) or utcnow(), r[1]) for r in rows]

    async def pending_events(self, workflow_id: str) -> tuple[int, datetime | None]:
        return (await self.pending_events_of([workflow_id])).get(workflow_id, (0, None))

    async def pending_events_of(
        self, workflow_ids: Sequence[str]
    ) -> dict[str, tuple[int, datetime | None]]:
        sql = (
            "SELECT workflow_id, count(*), min(fired_at) FROM events WHERE status='pending'"
            " AND workflow_id IN (SELECT value FROM json_each(?)) GROUP BY workflow_id"
        )
        ids = dumps(list(workflow_ids))
        rows = await self._run(lambda c: c.execute(sql, (ids,)).fetchall())
        return {r[0]: (int(r[1]), parse_ts(r[2])) for r in rows}

    async def prune_ledger(self, older_than: datetime, keep_per_trigger: int) -> int:
        cutoff = fmt_ts(older_than)
        keep = max(0, keep_per_trigger)

        def body(conn: sqlite3.Connection) -> int:
            deleted = conn.execute(
                "DELETE FROM occurrences WHERE id IN (SELECT id FROM (SELECT id, at,"
                " row_number() OVER (PARTITION BY workflow_id, trigger_id ORDER BY id DESC)"
                " AS rn FROM occurrences) WHERE rn > ? AND (at < ? OR rn > ?))",
                (keep, cutoff, keep * HARD_CAP_FACTOR),
            ).rowcount
            conn.execute("DELETE FROM daemon_runs WHERE last_seen < ?", (cutoff,))
            conn.execute("DELETE FROM heartbeats WHERE last_seen < ?", (cutoff,))
            conn.execute(
                "DELETE FROM deployment_log WHERE at < ? AND rowid NOT IN"
                " (SELECT max(rowid) FROM deployment_log GROUP BY workflow_id)",
                (cutoff,),
            )
            return int(deleted)

        return await self._run(lambda c: self._tx(c, body))
