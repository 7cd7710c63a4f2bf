"""SQLite retention: delete expired events in short transactions and give the space back.

The file is in ``auto_vacuum = INCREMENTAL`` mode (set before the first table of a new file,
or by a one-time ``VACUUM`` of an older file when it is first opened): deleting rows only
moves their pages to the free list, and ``PRAGMA incremental_vacuum(N)`` after each batch
moves up to N pages from the end of the file into free slots and truncates it. N is bounded
so that a batch, vacuum included, holds the write lock for milliseconds: the one connection
is shared with the group commit, which waits for it.
"""

from __future__ import annotations

import logging
import sqlite3

from wfsched.store import Pruned, Retention
from wfsched.store.common import fmt_ts
from wfsched.store.sqlite.connection import SqliteConnection

log = logging.getLogger("wfsched.store")
VACUUM_PAGES = 256
"""Pages (4 KiB each by default) given back per batch at most: about 1 MiB."""

# ``status IN (...)`` repeats the partial index's condition (``events_age``) so SQLite uses it.
_EXPIRED = (
    "SELECT rowid FROM events WHERE status IN ('dispatched', 'failed') AND status = ?"
    " AND fired_at < ?"
)


def _cutoffs(retention: Retention) -> list[tuple[str, str]]:
    out = []
    if retention.dispatched_before is not None:
        out.append(("dispatched", str(fmt_ts(retention.dispatched_before))))
    if retention.failed_before is not None:
        out.append(("failed", str(fmt_ts(retention.failed_before))))
    return out


def enable_incremental_vacuum(conn: sqlite3.Connection, path: object) -> None:
    """Switch a file made before retention existed to incremental auto-vacuum (once).

    SQLite can change ``auto_vacuum`` only on a file without tables or by rebuilding it with
    ``VACUUM``: a new file got the mode at connect; an older one is rebuilt here, once. The
    rebuild needs free disk about the size of the file and takes about a second per 100 MB.
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        log.warning(f"{path}: one-time VACUUM to turn on incremental auto-vacuum")
        conn.execute("VACUUM")


class SqliteRetention(SqliteConnection):
    """``prune`` and ``count_prunable`` of the Store protocol."""

    async def prune(self, retention: Retention, *, limit: int) -> Pruned:
        cutoffs = _cutoffs(retention)
        if not cutoffs or limit <= 0:
            return Pruned(0, False)
        deleted = await self._run(
            lambda c: self._tx(c, lambda conn: self._batch(conn, cutoffs, limit))
        )
        return Pruned(deleted, deleted >= limit)

    @staticmethod
    def _batch(conn: sqlite3.Connection, cutoffs: list[tuple[str, str]], limit: int) -> int:
        deleted = 0
        for status, before in cutoffs:
            if deleted >= limit:
                break
            cur = conn.execute(
                f"DELETE FROM events WHERE rowid IN ({_EXPIRED} LIMIT ?)",
                (status, before, limit - deleted),
            )
            deleted += cur.rowcount
        if deleted:
            conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
        return deleted

    async def count_prunable(self, retention: Retention) -> int:
        def count(conn: sqlite3.Connection) -> int:
            total = 0
            for status, before in _cutoffs(retention):
                sql = f"SELECT count(*) FROM ({_EXPIRED})"
                total += conn.execute(sql, (status, before)).fetchone()[0]
            return total

        return await self._run(count)
