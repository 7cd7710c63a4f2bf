"""SQLite SQL for deployments and per-trigger state (a mixin of ``SqliteStore``).

Instants are stored as ``fmt_ts`` text and JSON as text; the revision lives in ``meta``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any

from wfsched.jsontext import dumps, loads
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
    fmt_ts,
    not_deployed,
    parse_ts,
    plan_deploy,
    stale_fence,
    trigger_rows,
)
from wfsched.store.sqlite.connection import SqliteConnection


def _deployment(row: Sequence[Any]) -> Deployment:
    return Deployment(
        workflow_id=row[0],
        name=row[1],
        document=loads(row[2]),
        spec_hash=row[3],
        state=row[4],
        revision=row[5],
        updated_at=parse_ts(row[6]) or utcnow(),
        active_since=parse_ts(row[7]) or utcnow(),
    )


STATE_COLS = "workflow_id, trigger_id, type, cursor, health, last_error, fence"


def trigger_state(r: Sequence[Any]) -> TriggerState:
    """A row of ``STATE_COLS`` of ``trigger_state``."""
    return TriggerState(
        workflow_id=r[0],
        trigger_id=r[1],
        type=r[2],
        cursor=loads(r[3]) if r[3] is not None else None,
        health=r[4],
        last_error=r[5],
        fence=r[6],
    )


class SqliteDeployments(SqliteConnection):
    """Deployments and trigger state of the Store protocol, plus the bulk start-up scan."""

    # deployments -------------------------------------------------------------------------
    async def apply(self, specs: Sequence[WorkflowSpec]) -> list[str]:
        return await self._run(lambda c: self._tx(c, partial(self._apply, specs)))

    def _apply(self, specs: Sequence[WorkflowSpec], conn: sqlite3.Connection) -> list[str]:
        now = fmt_ts(utcnow())
        actions = []
        revision = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
        for spec in specs:
            row = conn.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM deployments WHERE workflow_id=?", (spec.id,)
            ).fetchone()
            current = _deployment(row) if row else None
            types = dict(
                conn.execute(
                    "SELECT trigger_id, type FROM trigger_state WHERE workflow_id=?", (spec.id,)
                ).fetchall()
            )
            plan = plan_deploy(spec, current, types)
            actions.append(plan.action)
            if plan.action == "unchanged":
                continue
            revision += 1
            doc = dumps(spec.document)
            if current is None:
                conn.execute(
                    "INSERT INTO deployments VALUES (?, ?, ?, ?, 'active', ?, ?, ?)",
                    (spec.id, spec.name, doc, spec.spec_hash, revision, now, now),
                )
                conn.execute(
                    "INSERT INTO deployment_log (workflow_id, at, state) VALUES (?, ?, 'active')",
                    (spec.id, now),
                )
            else:
                conn.execute(
                    "UPDATE deployments SET name=?, document=?, spec_hash=?, revision=?,"
                    " updated_at=? WHERE workflow_id=?",
                    (spec.name, doc, spec.spec_hash, revision, now, spec.id),
                )
            for trigger_id in set(types) - plan.keep_triggers:
                conn.execute(
                    "DELETE FROM trigger_state WHERE workflow_id=? AND trigger_id=?",
                    (spec.id, trigger_id),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO trigger_state (workflow_id, trigger_id, type)"
                " VALUES (?, ?, ?)",
                trigger_rows(spec),
            )
        conn.execute("UPDATE meta SET value=? WHERE key='revision'", (revision,))
        return actions

    def _known(self, conn: sqlite3.Connection, ids: Sequence[str]) -> None:
        for workflow_id in ids:
            if (
                conn.execute(
                    "SELECT 1 FROM deployments WHERE workflow_id=?", (workflow_id,)
                ).fetchone()
                is None
            ):
                raise not_deployed(workflow_id)

    def _bump(self, conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE meta SET value=value+1 WHERE key='revision'")
        return int(conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0])

    async def undeploy(self, workflow_ids: Sequence[str]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            self._known(conn, workflow_ids)
            conn.executemany(
                "DELETE FROM deployments WHERE workflow_id=?", [(w,) for w in workflow_ids]
            )
            conn.executemany(
                "DELETE FROM deployment_log WHERE workflow_id=?", [(w,) for w in workflow_ids]
            )
            self._bump(conn)

        await self._run(lambda c: self._tx(c, body))

    async def set_state(self, workflow_ids: Sequence[str], state: DeploymentState) -> None:
        def body(conn: sqlite3.Connection) -> None:
            self._known(conn, workflow_ids)
            revision = self._bump(conn)
            now = fmt_ts(utcnow())
            for workflow_id in workflow_ids:
                # The history explain reads: only an actual change of state is one.
                conn.execute(
                    "INSERT INTO deployment_log (workflow_id, at, state) SELECT workflow_id,"
                    " ?, ? FROM deployments WHERE workflow_id=? AND state<>?",
                    (now, state, workflow_id, state),
                )
                # Resuming restarts time: a paused workflow accumulates no catch-up.
                conn.execute(
                    "UPDATE deployments SET state=?, revision=?, updated_at=?,"
                    " active_since=CASE WHEN state=? THEN active_since ELSE ? END"
                    " WHERE workflow_id=?",
                    (state, revision, now, state, now, workflow_id),
                )

        await self._run(lambda c: self._tx(c, body))

    async def get_deployment(self, workflow_id: str) -> Deployment:
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM deployments WHERE workflow_id=?", (workflow_id,)
            ).fetchone()
        )
        if row is None:
            raise not_deployed(workflow_id)
        return _deployment(row)

    async def list_deployments(self) -> list[Deployment]:
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM deployments ORDER BY workflow_id"
            ).fetchall()
        )
        return [_deployment(r) for r in rows]

    async def get_deployments(self, workflow_ids: Sequence[str]) -> list[Deployment]:
        ids = dumps(list(workflow_ids))
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {DEPLOYMENT_COLS} FROM deployments WHERE workflow_id IN"
                " (SELECT value FROM json_each(?)) ORDER BY workflow_id",
                (ids,),
            ).fetchall()
        )
        return [_deployment(r) for r in rows]

    async def revision(self) -> int:
        return int(
            await self._run(
                lambda c: c.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            )
        )

    # trigger state -----------------------------------------------------------------------
    async def trigger_states(self, workflow_id: str | None = None) -> list[TriggerState]:
        sql = f"SELECT {STATE_COLS} FROM trigger_state"
        args: tuple[Any, ...] = ()
        if workflow_id is not None:
            sql += " WHERE workflow_id=?"
            args = (workflow_id,)
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY 1, 2", args).fetchall())
        return [trigger_state(r) for r in rows]

    async def get_cursor(self, workflow_id: str, trigger_id: str) -> Any:
        row = await self._run(
            lambda c: c.execute(
                "SELECT cursor FROM trigger_state WHERE workflow_id=? AND trigger_id=?",
                (workflow_id, trigger_id),
            ).fetchone()
        )
        return loads(row[0]) if row and row[0] is not None else None

    async def set_cursor(
        self, workflow_id: str, trigger_id: str, value: Any, *, fence: int | None = None
    ) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if fence is None:
                conn.execute(
                    "UPDATE trigger_state SET cursor=? WHERE workflow_id=? AND trigger_id=?",
                    (dumps(value), workflow_id, trigger_id),
                )
                return
            cur = conn.execute(
                "UPDATE trigger_state SET cursor=?, fence=? WHERE workflow_id=? AND"
                " trigger_id=? AND fence<=?",
                (dumps(value), fence, workflow_id, trigger_id, fence),
            )
            if cur.rowcount == 0:
                raise stale_fence(workflow_id, trigger_id, fence)

        await self._run(lambda c: self._tx(c, body))

    async def set_cursors(self, cursors: Sequence[tuple[str, str, Any]]) -> None:
        rows = [(dumps(v), w, t) for w, t, v in cursors]
        await self._run(
            lambda c: self._tx(
                c,
                lambda conn: conn.executemany(
                    "UPDATE trigger_state SET cursor=? WHERE workflow_id=? AND trigger_id=?", rows
                ),
            )
        )

    async def set_health(
        self, workflow_id: str, trigger_id: str, health: Health, error: str | None
    ) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE trigger_state SET health=?, last_error=?"
                " WHERE workflow_id=? AND trigger_id=?",
                (health, error, workflow_id, trigger_id),
            )
        )

    # bulk start-up (see wfsched/timer/rearm.py) -------------------------------------------
    async def deployment_ids(self) -> set[str]:
        """Return the id of every deployment."""
        rows = await self._run(
            lambda c: c.execute("SELECT workflow_id FROM deployments").fetchall()
        )
        return {r[0] for r in rows}

    async def scan_deployed(
        self,
        after: str,
        limit: int,
        *,
        cursor_fields: Sequence[str] = (),
        changed_since: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """Return the deployments after id ``after`` (at most ``limit``), without documents;
        with ``changed_since``, only those changed at a later store revision.

        One row per trigger, ``(workflow_id, spec_hash, state, active_since, trigger_id, type,
        health, *cursor_fields)``, ``active_since`` as stored (ISO 8601 text), ordered by
        workflow and trigger id; the trigger columns are None for a deployment without
        triggers. Each cursor field is that top-level member of the trigger's JSON cursor
        (None if absent), extracted without decoding the rest.
        """
        fields = "".join(
            f", CASE WHEN json_valid(t.cursor) THEN json_extract(t.cursor, '$.{name}') END"
            for name in cursor_fields
            if name.isidentifier()
        )
        sql = (
            "SELECT d.workflow_id, d.spec_hash, d.state, d.active_since, t.trigger_id, t.type,"
            f" t.health{fields} FROM (SELECT * FROM deployments WHERE workflow_id > ?"
            " AND revision > ? ORDER BY workflow_id LIMIT ?) AS d LEFT JOIN trigger_state AS t"
            " ON t.workflow_id = d.workflow_id ORDER BY d.workflow_id, t.trigger_id"
        )
        since = -1 if changed_since is None else changed_since
        rows: list[tuple[Any, ...]] = await self._run(
            lambda c: c.execute(sql, (after, since, limit)).fetchall()
        )
        return rows
