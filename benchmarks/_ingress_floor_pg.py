"""The durable floor on PostgreSQL: :mod:`benchmarks._ingress_floor`'s request, stored there.

Served by ``uvicorn benchmarks._ingress_floor_pg:app`` with ``FLOOR_PG_URL`` naming a fresh
schema. wfsched's own migrations make the schema (the partitioned ``wfsched_events`` and the
``wfsched_event_keys`` table whose primary key makes a fire unique), as ``wfsched serve`` would
at start. Per request, nothing of wfsched: one psycopg connection (autocommit,
``synchronous_commit = on``, so a commit returns once its WAL is on disk) inserts each group
commit as one statement (the key rows and the event rows, from binary arrays), the 202s follow
the commit, then one UPDATE marks the batch dispatched, as ``log`` mode does.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import psycopg

from benchmarks._ingress_floor import Floor, GroupCommit, Row
from wfsched.backends import open_store

_INSERT = """
WITH i AS MATERIALIZED (
    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                         %b::timestamptz[], %b::text[])
        AS i(execution_id, workflow_id, trigger_id, trigger_type, dedupe_key, fired_at, payload)
), k AS (
    INSERT INTO wfsched_event_keys (workflow_id, dedupe_key, execution_id, fired_at)
    SELECT workflow_id, dedupe_key, execution_id, fired_at FROM i
)
INSERT INTO wfsched_events (execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,
    fired_at, payload, status, next_attempt_at)
SELECT execution_id, workflow_id, trigger_id, trigger_type, dedupe_key, fired_at,
    payload::jsonb, 'pending', fired_at
FROM i
"""
_DISPATCHED = """
UPDATE wfsched_events AS e SET status = 'dispatched', attempts = 1, dispatched_at = %b
FROM unnest(%b::text[], %b::timestamptz[]) AS d(execution_id, fired_at)
WHERE e.execution_id = d.execution_id AND e.fired_at = d.fired_at
"""


async def _postgres() -> GroupCommit:
    url = os.environ["FLOOR_PG_URL"]
    store = open_store(url)  # migrations and the partitions ahead, as at wfsched's start
    await store.open()
    await store.close()
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute("SET synchronous_commit = on")

    async def insert(rows: list[Row]) -> None:
        columns = list(zip(*rows, strict=True))
        fired = [datetime.fromisoformat(t) for t in columns[5]]
        payloads = [p.decode() for p in columns[6]]
        await conn.execute(_INSERT, [*map(list, columns[:5]), fired, payloads])

    async def dispatched(rows: list[Row]) -> None:
        ids = [r[0] for r in rows]
        fired = [datetime.fromisoformat(r[5]) for r in rows]
        await conn.execute(_DISPATCHED, (datetime.now(UTC), ids, fired))

    return GroupCommit(insert, dispatched)


app = Floor(_postgres)
