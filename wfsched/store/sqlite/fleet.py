"""SQLite SQL for the dashboard's reads of the fleet (a mixin of ``SqliteStore``): one page of
deployments found by id or name, and the trigger tables of deployments read in SQL, so a
page at fleet size decodes no document."""

from __future__ import annotations

import sqlite3
from typing import Any

from wfsched.store.common import like_pattern
from wfsched.store.sqlite.connection import SqliteConnection


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


class SqliteFleet(SqliteConnection):
    """``find_deployments`` and ``scan_trigger_field`` of the Store protocol."""

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
