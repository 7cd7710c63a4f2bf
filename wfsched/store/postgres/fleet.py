"""PostgreSQL SQL for the dashboard's reads of the fleet (a mixin of ``PostgresStore``): one
page of deployments found by id or name, and the trigger tables of deployments read in SQL,
so a page at fleet size decodes no document."""

from __future__ import annotations

from typing import Any

from wfsched.store.common import like_pattern
from wfsched.store.postgres.connection import PgConnections


class PgFleet(PgConnections):
    """``find_deployments`` and ``scan_trigger_field`` of the Store protocol."""

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
