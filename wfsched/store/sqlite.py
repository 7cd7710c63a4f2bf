"""SQLite store: the embedded default. WAL, one connection, calls run in one worker thread.

Durability: ``sync="full"`` (the default, ``store.sync``) runs ``synchronous=FULL``, so a
commit, and the 202 that follows it, survives a power loss; ``"normal"`` is the opt-out.

SQLite allows one writer, so this backend serves exactly one daemon per file (the daemon
holds a file lock); the CLI may write alongside it thanks to WAL and ``busy_timeout``.

The class is assembled from ``sqliteconn`` (connection, worker thread, daemon lock),
``sqlitedeploy`` (deployments and trigger state SQL) and ``sqliteevents`` (event SQL).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio.to_thread

from wfsched.errors import StoreError
from wfsched.store import Sync
from wfsched.store.common import migrations
from wfsched.store.sqlitedeploy import SqliteDeployments
from wfsched.store.sqliteevents import SqliteEvents


def path_from_url(url: str) -> Path:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    rest = url.removeprefix("sqlite://").removeprefix("/")
    if not rest:
        raise StoreError(f"store.url {url!r} names no file")
    return Path(rest)


class SqliteStore(SqliteDeployments, SqliteEvents):
    """Store on one SQLite file."""

    def __init__(self, url: str, *, sync: Sync = "full") -> None:
        super().__init__(path_from_url(url), sync=sync)

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        self._connect()
        self._guarded(self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migrations("sqlite"):
                if version in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())
