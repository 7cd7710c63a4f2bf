"""SQLite store: the embedded default. WAL, one connection, its calls one at a time in
worker threads; the dashboard reads through a second, read-only connection (``reader``) whose
calls run behind a one-slot limiter of its own, not the writer's; WAL lets it read while the
first one writes.

Durability: ``sync="full"`` (the default, ``store.sync``) runs ``synchronous=FULL``, so a
commit, and the 202 that follows it, survives a power loss; ``"normal"`` is the opt-out.

SQLite allows one writer, so this backend serves exactly one daemon per file (the daemon
holds a file lock); the CLI may write alongside it thanks to WAL and ``busy_timeout``.

The class is assembled from ``connection`` (connection, worker thread, daemon lock),
``deployments`` (deployments and trigger state SQL), ``events`` (event SQL) and ``fleet``
(the dashboard's reads of the fleet); its ChangeFeed is the file poll of ``changes``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import anyio.to_thread

from wfsched.errors import StoreError
from wfsched.store import ChangeFeed, Store, Sync
from wfsched.store.common import migrations
from wfsched.store.sqlite.changes import FilePoll
from wfsched.store.sqlite.connection import SqliteConnection
from wfsched.store.sqlite.deployments import SqliteDeployments
from wfsched.store.sqlite.events import SqliteEvents
from wfsched.store.sqlite.fleet import SqliteFleet
from wfsched.store.sqlite.ledger import SqliteLedger
from wfsched.store.sqlite.retention import SqliteRetention, enable_incremental_vacuum


def path_from_url(url: str) -> Path:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    rest = url.removeprefix("sqlite://").removeprefix("/")
    if not rest:
        raise StoreError(f"store.url {url!r} names no file")
    return Path(rest)


class SqliteStore(SqliteDeployments, SqliteEvents, SqliteRetention, SqliteLedger, SqliteFleet):
    """Store on one SQLite file."""

    def __init__(self, url: str, *, sync: Sync = "full") -> None:
        super().__init__(path_from_url(url), sync=sync)
        self._reader: SqliteStore | None = None

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        self._check_length()
        try:
            self._connect()
            self._guarded(enable_incremental_vacuum, self.path)
            self._guarded(self._migrate)
        except sqlite3.Error as exc:  # a damaged file: "file is not a database", "malformed"
            raise self.unusable(exc) from exc
        if str(self.path) != ":memory:":  # a second connection would see another database
            reader = _Reader(self.path)
            reader._connect_reader()
            self._reader = reader

    @property
    def single_daemon(self) -> bool:
        return True

    def reader(self) -> Store:
        return self._reader or self

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
        await super().close()

    def _check_length(self) -> None:
        """Refuse a database file shorter than its header says, before SQLite reads garbage.

        The header (https://www.sqlite.org/fileformat.html) records the page size (offset 16)
        and the page count (offset 28), valid when the change counter (offset 24) equals
        offset 92. Only when there is no WAL to replay must the file hold every page.
        """
        wal = Path(f"{self.path}-wal")
        try:
            if wal.exists() and wal.stat().st_size > 0:
                return
            with open(self.path, "rb") as handle:
                header = handle.read(100)
                size = os.fstat(handle.fileno()).st_size
        except OSError:
            return  # missing or unreadable: connecting reports it
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return  # empty (new) or not a database at all: SQLite says which
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        if header[24:28] == header[92:96] and pages * page_size > size:
            raise StoreError(
                f"SQLite store {self.path} cannot be used: the file is truncated "
                f"({size} bytes, its header says {pages * page_size}); restore it from a backup"
            )

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

    def changes(self) -> ChangeFeed:
        return FilePoll(self.path)

    async def check_writable(self) -> None:
        await self._run(self._writable)

    def _writable(self, conn: sqlite3.Connection) -> None:
        try:
            self._probe_write(conn)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"SQLite store {self.path} cannot write: {exc}") from exc


class _Reader(SqliteStore):
    """The store's reader: the same file through a read-only connection, whose calls run in
    anyio's worker threads behind a one-slot limiter of its own, never queued behind the
    writer's. Opened and closed by the store it reads for."""

    def __init__(self, path: Path) -> None:
        SqliteConnection.__init__(self, path)  # the writer's path as is, no URL to parse
        self._reader = None
