"""SQLite SQL for the dashboard's reads of the fleet (a mixin of ``SqliteStore``): one page of
deployments found by id or name, the trigger tables of deployments read in SQL, so a page at
fleet size decodes no document, and the last events and trigger states of a page's
workflows in one query each."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from wfsched.jsontext import dumps
from wfsched.models import TriggerEvent, TriggerState
from wfsched.store.common import EVENT_COLS, like_pattern
from wfsched.store.sqlite.connection import SqliteConnection
from wfsched.store.sqlite.deployments import STATE_COLS, trigger_state
from wfsched.store.sqlite.events import _event

# Index seeks only (``events_trigger``: workflow, trigger, execution id): each workflow's
# trigger ids in turn (a skip scan), then each trigger's newest event, however many events
# the workflows have.
_LAST_EVENTS = (
    "WITH RECURSIVE t(workflow_id, trigger_id) AS ("
    " SELECT w.value, (SELECT min(trigger_id) FROM events WHERE workflow_id=w.value)"
    " FROM json_each(?) AS w"
    " UNION ALL SELECT t.workflow_id, (SELECT min(trigger_id) FROM events"
    " WHERE workflow_id=t.workflow_id AND trigger_id>t.trigger_id) FROM t"
    " WHERE t.trigger_id IS NOT NULL)"
    f" SELECT {EVENT_COLS} FROM events WHERE execution_id IN (SELECT (SELECT max(execution_id)"
    " FROM events WHERE workflow_id=t.workflow_id AND trigger_id=t.trigger_id) FROM t"
    " WHERE t.trigger_id IS NOT NULL)"
)


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


class SqliteFleet(SqliteConnection):
    """``find_deployments``, ``scan_trigger_field``, ``last_events_of`` and
    ``trigger_states_of`` of the Store protocol."""

    async def find_deployments(
        self, needle: str, *, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """See ``Store.find_deployments``: LIKE folds ASCII letters in C; a needle with other
        letters is matched on Python's ``casefold`` of both columns instead."""

        def body(conn: sqlite3.Connection) -> tuple[list[str], int]:
            where = ""
            args: tuple[str, ...] = ()
            if needle and needle.isascii():
                where = " WHERE workflow_id LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\'"
                args = (like_pattern(needle),) * 2
            elif needle:
                conn.create_function("casefold", 1, _casefold, deterministic=True)
                where = " WHERE instr(casefold(workflow_id), ?) OR instr(casefold(name), ?)"
                args = (needle.casefold(),) * 2
            total = conn.execute(f"SELECT count(*) FROM deployments{where}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT workflow_id FROM deployments{where} ORDER BY workflow_id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            return [r[0] for r in rows], int(total)

        return await self._run(body)

    async def scan_trigger_field(
        self, name: str, after: str, limit: int, *, changed_since: int | None = None
    ) -> list[tuple[Any, ...]]:
        """See ``Store.scan_trigger_field``."""
        field = f"json_extract(j.value, '$.{name}')" if name.isidentifier() else "NULL"
        sql = (
            "SELECT d.workflow_id, json_extract(j.value, '$.id'), json_extract(j.value, '$.type'),"
            f" {field} FROM (SELECT workflow_id, document FROM deployments WHERE workflow_id > ?"
            " AND revision > ? ORDER BY workflow_id LIMIT ?) AS d"
            " LEFT JOIN json_each(d.document, '$.triggers') AS j"
            " ORDER BY d.workflow_id, j.key"
        )
        since = -1 if changed_since is None else changed_since
        rows: list[tuple[Any, ...]] = await self._run(
            lambda c: c.execute(sql, (after, since, limit)).fetchall()
        )
        return rows

    async def last_events(self, workflow_id: str) -> dict[str, TriggerEvent]:
        return (await self.last_events_of([workflow_id])).get(workflow_id, {})

    async def last_events_of(
        self, workflow_ids: Sequence[str]
    ) -> dict[str, dict[str, TriggerEvent]]:
        """See ``Store.last_events_of``."""
        ids = dumps(list(workflow_ids))
        rows = await self._run(lambda c: c.execute(_LAST_EVENTS, (ids,)).fetchall())
        found: dict[str, dict[str, TriggerEvent]] = {}
        for row in rows:
            found.setdefault(row[1], {})[row[2]] = _event(row)
        return found

    async def trigger_states_of(self, workflow_ids: Sequence[str]) -> list[TriggerState]:
        """See ``Store.trigger_states_of``."""
        sql = (
            f"SELECT {STATE_COLS} FROM trigger_state WHERE workflow_id IN"
            " (SELECT value FROM json_each(?)) ORDER BY 1, 2"
        )
        ids = dumps(list(workflow_ids))
        rows = await self._run(lambda c: c.execute(sql, (ids,)).fetchall())
        return [trigger_state(r) for r in rows]
