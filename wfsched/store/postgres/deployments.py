"""PostgreSQL SQL for deployments and per-trigger state (a mixin of ``PostgresStore``).

Deployment changes serialise on the revision row of ``wfsched_meta`` and each sends a NOTIFY
on ``DEPLOYMENTS_CHANNEL`` carrying the new revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wfsched.errors import StoreError
from wfsched.models import (
    Deployment,
    DeploymentState,
    Health,
    TriggerState,
    WorkflowSpec,
    utcnow,
)
from wfsched.store.common import (
    DEPLOYMENT_COLS,
    not_deployed,
    plan_deploy,
    require_all,
    stale_fence,
)
from wfsched.store.postgres.connection import DEPLOYMENTS_CHANNEL, Conn, PgConnections
from wfsched.store.postgres.rows import deployment_from_row, to_json

_UPSERT_DEPLOYMENT_SQL = f"""
INSERT INTO wfsched_deployments ({DEPLOYMENT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (workflow_id) DO UPDATE SET name = EXCLUDED.name, document = EXCLUDED.document,
    spec_hash = EXCLUDED.spec_hash, revision = EXCLUDED.revision, updated_at = EXCLUDED.updated_at
"""


STATE_COLS = "workflow_id, trigger_id, type, cursor, health, last_error, fence"


def trigger_state(r: Sequence[Any]) -> TriggerState:
    """A row of ``STATE_COLS`` of ``wfsched_trigger_state`` (the cursor decoded by psycopg)."""
    return TriggerState(
        workflow_id=r[0],
        trigger_id=r[1],
        type=r[2],
        cursor=r[3],
        health=r[4],
        last_error=r[5],
        fence=r[6],
    )


class PgDeployments(PgConnections):
    """Deployments and trigger state of the Store protocol."""

    async def _notify_deployments(self, conn: Conn, revision: int) -> None:
        await conn.execute("SELECT pg_notify(%s, %s)", (DEPLOYMENTS_CHANNEL, str(revision)))

    # deployments -------------------------------------------------------------------------
    async def apply(self, specs: Sequence[WorkflowSpec]) -> list[str]:
        now = utcnow()
        ids = list(dict.fromkeys(spec.id for spec in specs))
        async with self._tx() as conn:
            # The revision row is the deployment lock: concurrent applies, undeploys and
            # state changes take it first and so run one after the other.
            cur = await conn.execute(
                "SELECT value FROM wfsched_meta WHERE key = 'revision' FOR UPDATE"
            )
            row = await cur.fetchone()
            if row is None:
                raise StoreError(f"PostgreSQL {self.where}: the revision row is missing")
            revision = int(row[0])
            cur = await conn.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM wfsched_deployments WHERE workflow_id = ANY(%s)",
                (ids,),
            )
            current = {r[0]: deployment_from_row(r) for r in await cur.fetchall()}
            before_ids = set(current)
            cur = await conn.execute(
                "SELECT workflow_id, trigger_id, type FROM wfsched_trigger_state"
                " WHERE workflow_id = ANY(%s)",
                (ids,),
            )
            types: dict[str, dict[str, str]] = {wid: {} for wid in ids}
            for wid, trigger_id, type_ in await cur.fetchall():
                types[wid][trigger_id] = type_

            # Plan every spec in order against the evolving state (as sqlite.py does one
            # statement at a time), then write only the net effect.
            actions: list[str] = []
            dropped: dict[str, set[str]] = {}  # trigger rows to delete (state reset)
            changed: dict[str, WorkflowSpec] = {}  # the last version written per workflow
            for spec in specs:
                known = types[spec.id]
                plan = plan_deploy(spec, current.get(spec.id), known)
                actions.append(plan.action)
                if plan.action == "unchanged":
                    continue
                revision += 1
                for trigger_id in set(known) - plan.keep_triggers:
                    del known[trigger_id]
                    dropped.setdefault(spec.id, set()).add(trigger_id)
                for trigger in spec.triggers:
                    known.setdefault(trigger.id, trigger.type)
                before = current.get(spec.id)
                current[spec.id] = Deployment(
                    workflow_id=spec.id,
                    name=spec.name,
                    document=spec.document,
                    spec_hash=spec.spec_hash,
                    state=before.state if before else "active",
                    revision=revision,
                    updated_at=now,
                    active_since=before.active_since if before else now,
                )
                changed[spec.id] = spec
            if not changed:
                return actions

            async with conn.pipeline(), conn.cursor() as cur:
                await conn.execute(
                    "UPDATE wfsched_meta SET value = %s WHERE key = 'revision'", (revision,)
                )
                await cur.executemany(
                    _UPSERT_DEPLOYMENT_SQL,
                    [
                        (
                            d.workflow_id,
                            d.name,
                            to_json(d.document),
                            d.spec_hash,
                            d.state,
                            d.revision,
                            d.updated_at,
                            d.active_since,
                        )
                        for d in (current[wid] for wid in changed)
                    ],
                )
                if dropped:
                    await cur.executemany(
                        "DELETE FROM wfsched_trigger_state"
                        " WHERE workflow_id = %s AND trigger_id = ANY(%s)",
                        [(wid, sorted(tids)) for wid, tids in dropped.items()],
                    )
                await cur.executemany(
                    "INSERT INTO wfsched_trigger_state (workflow_id, trigger_id, type)"
                    " VALUES (%s, %s, %s) ON CONFLICT (workflow_id, trigger_id) DO NOTHING",
                    [(wid, tid, type_) for wid in changed for tid, type_ in types[wid].items()],
                )
                created = [wid for wid in changed if wid not in before_ids]
                if created:
                    await cur.executemany(
                        "INSERT INTO wfsched_deployment_log (workflow_id, at, state)"
                        " VALUES (%s, %s, 'active')",
                        [(wid, now) for wid in created],
                    )
                await self._notify_deployments(conn, revision)
        return actions

    async def _bump(self, conn: Conn) -> int:
        """Increment the revision, taking the deployment lock; return the new revision."""
        cur = await conn.execute(
            "UPDATE wfsched_meta SET value = value + 1 WHERE key = 'revision' RETURNING value"
        )
        row = await cur.fetchone()
        if row is None:
            raise StoreError(f"PostgreSQL {self.where}: the revision row is missing")
        return int(row[0])

    async def undeploy(self, workflow_ids: Sequence[str]) -> None:
        async with self._tx() as conn:
            revision = await self._bump(conn)
            cur = await conn.execute(
                "DELETE FROM wfsched_deployments WHERE workflow_id = ANY(%s) RETURNING workflow_id",
                (list(workflow_ids),),
            )
            found = {r[0] for r in await cur.fetchall()}
            require_all(workflow_ids, found, not_deployed)  # rolls back
            await conn.execute(
                "DELETE FROM wfsched_deployment_log WHERE workflow_id = ANY(%s)",
                (list(workflow_ids),),
            )
            await self._notify_deployments(conn, revision)

    async def set_state(self, workflow_ids: Sequence[str], state: DeploymentState) -> None:
        now = utcnow()
        async with self._tx() as conn:
            revision = await self._bump(conn)
            # The history explain reads: only an actual change of state is one.
            await conn.execute(
                "INSERT INTO wfsched_deployment_log (workflow_id, at, state)"
                " SELECT workflow_id, %s, %s FROM wfsched_deployments"
                " WHERE workflow_id = ANY(%s) AND state <> %s",
                (now, state, list(workflow_ids), state),
            )
            # Resuming restarts time: a paused workflow accumulates no catch-up.
            cur = await conn.execute(
                "UPDATE wfsched_deployments SET state = %s, revision = %s, updated_at = %s,"
                " active_since = CASE WHEN state = %s THEN active_since ELSE %s END"
                " WHERE workflow_id = ANY(%s) RETURNING workflow_id",
                (state, revision, now, state, now, list(workflow_ids)),
            )
            found = {r[0] for r in await cur.fetchall()}
            require_all(workflow_ids, found, not_deployed)  # rolls back
            await self._notify_deployments(conn, revision)

    async def get_deployment(self, workflow_id: str) -> Deployment:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM wfsched_deployments WHERE workflow_id = %s",
                (workflow_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise not_deployed(workflow_id)
        return deployment_from_row(row)

    async def list_deployments(self) -> list[Deployment]:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM wfsched_deployments ORDER BY workflow_id"
            )
            rows = await cur.fetchall()
        return [deployment_from_row(r) for r in rows]

    async def get_deployments(self, workflow_ids: Sequence[str]) -> list[Deployment]:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM wfsched_deployments WHERE workflow_id = ANY(%s)"
                " ORDER BY workflow_id",
                (list(workflow_ids),),
            )
            rows = await cur.fetchall()
        return [deployment_from_row(r) for r in rows]

    async def revision(self) -> int:
        async with self._conn() as conn:
            cur = await conn.execute("SELECT value FROM wfsched_meta WHERE key = 'revision'")
            row = await cur.fetchone()
        if row is None:
            raise StoreError(f"PostgreSQL {self.where}: the revision row is missing")
        return int(row[0])

    # trigger state -----------------------------------------------------------------------
    async def trigger_states(self, workflow_id: str | None = None) -> list[TriggerState]:
        query = f"SELECT {STATE_COLS} FROM wfsched_trigger_state"
        args: tuple[Any, ...] = ()
        if workflow_id is not None:
            query += " WHERE workflow_id = %s"
            args = (workflow_id,)
        async with self._conn() as conn:
            cur = await conn.execute(query + " ORDER BY workflow_id, trigger_id", args)
            rows = await cur.fetchall()
        return [trigger_state(r) for r in rows]

    async def get_cursor(self, workflow_id: str, trigger_id: str) -> Any:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT cursor FROM wfsched_trigger_state WHERE workflow_id = %s"
                " AND trigger_id = %s",
                (workflow_id, trigger_id),
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def set_cursor(
        self, workflow_id: str, trigger_id: str, value: Any, *, fence: int | None = None
    ) -> None:
        async with self._conn() as conn:
            if fence is None:
                await conn.execute(
                    "UPDATE wfsched_trigger_state SET cursor = %s WHERE workflow_id = %s"
                    " AND trigger_id = %s",
                    (to_json(value), workflow_id, trigger_id),
                )
                return
            cur = await conn.execute(
                "UPDATE wfsched_trigger_state SET cursor = %s, fence = %s WHERE workflow_id = %s"
                " AND trigger_id = %s AND fence <= %s",
                (to_json(value), fence, workflow_id, trigger_id, fence),
            )
            if cur.rowcount == 0:
                raise stale_fence(workflow_id, trigger_id, fence)

    # bulk start-up (see wfsched/timer/rearm.py) -------------------------------------------
    async def deployment_ids(self) -> set[str]:
        """Return the id of every deployment."""
        async with self._conn() as conn:
            cur = await conn.execute("SELECT workflow_id FROM wfsched_deployments")
            return {r[0] for r in await cur.fetchall()}

    async def scan_deployed(
        self,
        after: str,
        limit: int,
        *,
        cursor_fields: Sequence[str] = (),
        changed_since: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """Return the deployments after id ``after`` (at most ``limit``), without documents:
        the rows of ``SqliteStore.scan_deployed``, ``active_since`` as a datetime."""
        fields = "".join(
            f", t.cursor ->> '{name}'" for name in cursor_fields if name.isidentifier()
        )
        # The trigger rows are bounded to the page's ids on both sides, so each page reads
        # its own range of the primary key instead of the table from the start.
        sql = (
            "WITH d AS MATERIALIZED (SELECT workflow_id, spec_hash, state, active_since"
            " FROM wfsched_deployments WHERE workflow_id > %(after)s AND revision > %(since)s"
            " ORDER BY workflow_id LIMIT %(limit)s)"
            " SELECT d.workflow_id, d.spec_hash, d.state, d.active_since, t.trigger_id, t.type,"
            f" t.health{fields} FROM d LEFT JOIN wfsched_trigger_state AS t"
            " ON t.workflow_id = d.workflow_id AND t.workflow_id > %(after)s"
            " AND t.workflow_id <= (SELECT max(workflow_id) FROM d)"
            " ORDER BY d.workflow_id, t.trigger_id"
        )
        async with self._conn() as conn:
            since = -1 if changed_since is None else changed_since
            cur = await conn.execute(sql, {"after": after, "since": since, "limit": limit})
            return list(await cur.fetchall())

    async def set_cursors(self, cursors: Sequence[tuple[str, str, Any]]) -> None:
        if not cursors:
            return
        rows = [(to_json(v), w, t) for w, t, v in cursors]
        async with self._tx() as conn, conn.cursor() as cur:
            await cur.executemany(
                "UPDATE wfsched_trigger_state SET cursor = %s WHERE workflow_id = %s"
                " AND trigger_id = %s",
                rows,
            )

    async def set_health(
        self, workflow_id: str, trigger_id: str, health: Health, error: str | None
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE wfsched_trigger_state SET health = %s, last_error = %s"
                " WHERE workflow_id = %s AND trigger_id = %s",
                (health, error, workflow_id, trigger_id),
            )
