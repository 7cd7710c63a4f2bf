"""PostgreSQL SQL for the dashboard's reads of the fleet (a mixin of ``PostgresStore``): one
page of deployments found by id or name, the trigger tables of deployments read in SQL, so
a page at fleet size decodes no document, and the last events and trigger states of a
page's workflows in one query each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wfsched.models import TriggerEvent, TriggerState
from wfsched.store.common import EVENT_COLS, like_pattern
from wfsched.store.postgres.connection import PgConnections
from wfsched.store.postgres.deployments import STATE_COLS, trigger_state
from wfsched.store.postgres.rows import event_from_row

# Index seeks only (workflow, trigger, execution id): each workflow's trigger ids in turn (a
# skip scan), then each trigger's newest event, however many events the workflows have.
_LAST_EVENTS = (
    "WITH RECURSIVE t(workflow_id, trigger_id) AS ("
    " SELECT w, (SELECT min(trigger_id) FROM wfsched_events WHERE workflow_id = w)"
    " FROM unnest(%(ids)s::text[]) AS w"
    " UNION ALL SELECT t.workflow_id, (SELECT min(e.trigger_id) FROM wfsched_events AS e"
    " WHERE e.workflow_id = t.workflow_id AND e.trigger_id > t.trigger_id) FROM t"
    " WHERE t.trigger_id IS NOT NULL)"
    f" SELECT {EVENT_COLS} FROM wfsched_events WHERE workflow_id = ANY(%(ids)s::text[])"
    " AND execution_id IN (SELECT (SELECT max(e.execution_id) FROM wfsched_events AS e"
    " WHERE e.workflow_id = t.workflow_id AND e.trigger_id = t.trigger_id) FROM t"
    " WHERE t.trigger_id IS NOT NULL)"
)


class PgFleet(PgConnections):
    """``find_deployments``, ``scan_trigger_field``, ``last_events_of`` and
    ``trigger_states_of`` of the Store protocol."""

    async def find_deployments(
        self, needle: str, *, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """See ``Store.find_deployments`` (ILIKE: the database's case folding)."""
        where = ""
        args: tuple[str, ...] = ()
        if needle:
            where = " WHERE workflow_id ILIKE %s OR name ILIKE %s"
            args = (like_pattern(needle),) * 2
        async with self._conn() as conn:
            cur = await conn.execute(f"SELECT count(*) FROM wfsched_deployments{where}", args)
            row = await cur.fetchone()
            cur = await conn.execute(
                f"SELECT workflow_id FROM wfsched_deployments{where} ORDER BY workflow_id"
                " LIMIT %s OFFSET %s",
                (*args, limit, offset),
            )
            ids = [r[0] for r in await cur.fetchall()]
        return ids, int(row[0]) if row else 0

    async def scan_trigger_field(
        self, name: str, after: str, limit: int, *, changed_since: int | None = None
    ) -> list[tuple[Any, ...]]:
        """See ``Store.scan_trigger_field``."""
        field = "j.value ->> %(name)s" if name.isidentifier() else "NULL"
        sql = (
            "WITH d AS MATERIALIZED (SELECT workflow_id, document FROM wfsched_deployments"
            " WHERE workflow_id > %(after)s AND revision > %(since)s"
            " ORDER BY workflow_id LIMIT %(limit)s)"
            f" SELECT d.workflow_id, j.value ->> 'id', j.value ->> 'type', {field} FROM d"
            " LEFT JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(d.document -> 'triggers')"
            " WHEN 'array' THEN d.document -> 'triggers' ELSE '[]'::jsonb END)"
            " WITH ORDINALITY AS j(value, n) ON true ORDER BY d.workflow_id, j.n"
        )
        since = -1 if changed_since is None else changed_since
        async with self._conn() as conn:
            cur = await conn.execute(
                sql, {"after": after, "since": since, "limit": limit, "name": name}
            )
            return list(await cur.fetchall())

    async def last_events(self, workflow_id: str) -> dict[str, TriggerEvent]:
        return (await self.last_events_of([workflow_id])).get(workflow_id, {})

    async def last_events_of(
        self, workflow_ids: Sequence[str]
    ) -> dict[str, dict[str, TriggerEvent]]:
        """See ``Store.last_events_of``."""
        async with self._conn() as conn:
            cur = await conn.execute(_LAST_EVENTS, {"ids": list(workflow_ids)})
            rows = await cur.fetchall()
        found: dict[str, dict[str, TriggerEvent]] = {}
        for row in rows:
            found.setdefault(row[1], {})[row[2]] = event_from_row(row)
        return found

    async def trigger_states_of(self, workflow_ids: Sequence[str]) -> list[TriggerState]:
        """See ``Store.trigger_states_of``."""
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {STATE_COLS} FROM wfsched_trigger_state"
                " WHERE workflow_id = ANY(%s::text[]) ORDER BY workflow_id, trigger_id",
                (list(workflow_ids),),
            )
            rows = await cur.fetchall()
        return [trigger_state(r) for r in rows]
