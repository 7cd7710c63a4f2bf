"""PostgreSQL SQL for heartbeats, daemon runs, the occurrence ledger and the deployment history
(a mixin of ``PostgresStore``); what ``explain`` and ``status`` read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from wfsched.models import DaemonRun, DeploymentState, Occurrence, TriggerEvent, execution_id_floor
from wfsched.store.common import EVENT_COLS
from wfsched.store.postgres.connection import PgConnections
from wfsched.store.postgres.rows import event_from_row, utc

ID_SLACK = timedelta(minutes=1)
"""Margin below a window's start for the execution-id and partition bounds."""
HARD_CAP_FACTOR = 100
"""Ledger entries per trigger kept at most, in multiples of ``keep_per_trigger``."""

_BEAT_SQL = """
WITH h AS (
    INSERT INTO wfsched_heartbeats (replica_id, listen, started_at, last_seen)
    VALUES (%(id)s, %(listen)s, %(started)s, %(seen)s)
    ON CONFLICT (replica_id) DO UPDATE SET listen = EXCLUDED.listen,
        started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen
)
INSERT INTO wfsched_daemon_runs (replica_id, started_at, last_seen)
VALUES (%(id)s, %(started)s, %(seen)s)
ON CONFLICT (replica_id, started_at) DO UPDATE SET last_seen = EXCLUDED.last_seen
"""
_END_SQL = """
WITH h AS (
    DELETE FROM wfsched_heartbeats WHERE replica_id = %(id)s AND started_at = %(started)s
)
UPDATE wfsched_daemon_runs SET last_seen = %(seen)s
WHERE replica_id = %(id)s AND started_at = %(started)s
"""
_PRUNE_SQL = """
DELETE FROM wfsched_occurrences WHERE id IN (
    SELECT id FROM (
        SELECT id, at, row_number() OVER (PARTITION BY workflow_id, trigger_id
                                          ORDER BY id DESC) AS rn
        FROM wfsched_occurrences) AS ranked
    WHERE rn > %(keep)s AND (at < %(cutoff)s OR rn > %(cap)s))
"""


class PgLedger(PgConnections):
    """Heartbeats and the ledger of the Store protocol."""

    @staticmethod
    def _run_args(run: DaemonRun) -> dict[str, Any]:
        return {
            "id": run.replica_id,
            "listen": run.listen,
            "started": utc(run.started_at),
            "seen": utc(run.last_seen),
        }

    async def beat(self, run: DaemonRun) -> None:
        async with self._conn() as conn:
            await conn.execute(_BEAT_SQL, self._run_args(run))

    async def end_beat(self, run: DaemonRun) -> None:
        async with self._conn() as conn:
            await conn.execute(_END_SQL, self._run_args(run))

    async def daemon_runs(self, since: datetime) -> list[DaemonRun]:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT r.replica_id, r.started_at, r.last_seen, h.listen,"
                " h.replica_id IS NOT NULL FROM wfsched_daemon_runs AS r"
                " LEFT JOIN wfsched_heartbeats AS h"
                " ON h.replica_id = r.replica_id AND h.started_at = r.started_at"
                " WHERE r.last_seen >= %s ORDER BY r.started_at, r.replica_id",
                (utc(since),),
            )
            rows = await cur.fetchall()
        return [
            DaemonRun(
                replica_id=r[0],
                started_at=utc(r[1]),
                last_seen=utc(r[2]),
                listen=r[3] or "",
                live=bool(r[4]),
            )
            for r in rows
        ]

    async def add_occurrences(self, rows: Sequence[Occurrence]) -> None:
        if not rows:
            return
        async with self._tx() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO wfsched_occurrences (workflow_id, trigger_id, trigger_type, at,"
                " outcome, reason, execution_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        o.workflow_id,
                        o.trigger_id,
                        o.trigger_type,
                        utc(o.at),
                        o.outcome,
                        o.reason,
                        o.execution_id,
                    )
                    for o in rows
                ],
            )

    async def occurrences(
        self, workflow_id: str, since: datetime, until: datetime
    ) -> list[Occurrence]:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT workflow_id, trigger_id, trigger_type, at, outcome, reason, execution_id"
                " FROM wfsched_occurrences WHERE workflow_id = %s AND at >= %s AND at < %s"
                " ORDER BY at, id",
                (workflow_id, utc(since), utc(until)),
            )
            rows = await cur.fetchall()
        return [
            Occurrence(
                workflow_id=r[0],
                trigger_id=r[1],
                trigger_type=r[2],
                at=utc(r[3]),
                outcome=r[4],
                reason=r[5],
                execution_id=r[6],
            )
            for r in rows
        ]

    async def events_between(
        self, workflow_id: str, since: datetime, until: datetime
    ) -> list[TriggerEvent]:
        lo, hi = utc(since), utc(until)
        # An event is created at its fired_at, never before its scheduled_at: the id and
        # fired_at bounds hold for both (the latter lets PostgreSQL skip older partitions).
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {EVENT_COLS} FROM wfsched_events WHERE workflow_id = %(w)s"
                " AND execution_id >= %(id)s AND fired_at >= %(floor)s"
                " AND ((fired_at >= %(lo)s AND fired_at < %(hi)s)"
                " OR (scheduled_at >= %(lo)s AND scheduled_at < %(hi)s))"
                " ORDER BY execution_id",
                {
                    "w": workflow_id,
                    "id": execution_id_floor(since - ID_SLACK),
                    "floor": lo - ID_SLACK,
                    "lo": lo,
                    "hi": hi,
                },
            )
            rows = await cur.fetchall()
        return [event_from_row(r) for r in rows]

    async def deployment_log(self, workflow_id: str) -> list[tuple[datetime, DeploymentState]]:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT at, state FROM wfsched_deployment_log WHERE workflow_id = %s ORDER BY at",
                (workflow_id,),
            )
            rows = await cur.fetchall()
        return [(utc(r[0]), r[1]) for r in rows]

    async def pending_events(self, workflow_id: str) -> tuple[int, datetime | None]:
        return (await self.pending_events_of([workflow_id])).get(workflow_id, (0, None))

    async def pending_events_of(
        self, workflow_ids: Sequence[str]
    ) -> dict[str, tuple[int, datetime | None]]:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT workflow_id, count(*), min(fired_at) FROM wfsched_events"
                " WHERE status = 'pending' AND workflow_id = ANY(%s::text[])"
                " GROUP BY workflow_id",
                (list(workflow_ids),),
            )
            rows = await cur.fetchall()
        return {r[0]: (int(r[1]), None if r[2] is None else utc(r[2])) for r in rows}

    async def prune_ledger(self, older_than: datetime, keep_per_trigger: int) -> int:
        cutoff = utc(older_than)
        keep = max(0, keep_per_trigger)
        async with self._tx() as conn:
            cur = await conn.execute(
                _PRUNE_SQL, {"keep": keep, "cutoff": cutoff, "cap": keep * HARD_CAP_FACTOR}
            )
            deleted = cur.rowcount
            await conn.execute("DELETE FROM wfsched_daemon_runs WHERE last_seen < %s", (cutoff,))
            await conn.execute("DELETE FROM wfsched_heartbeats WHERE last_seen < %s", (cutoff,))
            await conn.execute(
                "DELETE FROM wfsched_deployment_log AS l WHERE l.at < %s AND l.at <"
                " (SELECT max(m.at) FROM wfsched_deployment_log AS m"
                " WHERE m.workflow_id = l.workflow_id)",
                (cutoff,),
            )
        return max(0, deleted)
