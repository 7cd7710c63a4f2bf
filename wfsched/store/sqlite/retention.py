"""SQLite retention: delete expired events in short transactions and give the space back.

The file is in ``auto_vacuum = INCREMENTAL`` mode (set before the first table of a new file,
or by a one-time ``VACUUM`` of an older file when it is first opened): deleting rows only
moves their pages to the free list, where new events reuse them. Under constant load that
reuse alone keeps the file at a plateau, so pages are given back (``PRAGMA
incremental_vacuum``: move pages from the end of the file into free slots, truncate it) only
while more than a quarter of the file is free, as after a burst or a shorter retention:
moving pages writes them all to the WAL again, and in steady state that was most of a step's
cost. Each step, a vacuum one included, holds the write lock for milliseconds: the one
connection is shared with the group commit, which waits for it.
"""

from __future__ import annotations

import logging
import sqlite3

from wfsched.store import Pruned, Retention
from wfsched.store.common import fmt_ts
from wfsched.store.sqlite.connection import SqliteConnection

log = logging.getLogger("wfsched.store")
VACUUM_PAGES = 128
"""Pages (4 KiB each by default) given back per step at most: half a MiB of WAL."""
FREE_SHARE = 4
"""Space is given back while more than 1/FREE_SHARE of the file's pages are free."""

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


def _much_free(conn: sqlite3.Connection) -> bool:
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return bool(free * FREE_SHARE > conn.execute("PRAGMA page_count").fetchone()[0])


def _give_back(conn: sqlite3.Connection) -> bool:
    """Truncate up to VACUUM_PAGES free pages; return whether any were given back."""
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    # Python's sqlite3 steps ``incremental_vacuum(N)`` once, which frees one page whatever N
    # is (measured: 1,543 free pages -> 1,542); one page per call, called N times, frees N.
    for _ in range(min(free, VACUUM_PAGES)):
        conn.execute("PRAGMA incremental_vacuum(1)")
    # False if nothing moved (a file not in incremental mode), so the loop cannot spin.
    return bool(conn.execute("PRAGMA freelist_count").fetchone()[0] < free)


class SqliteRetention(SqliteConnection):
    """``prune`` and ``count_prunable`` of the Store protocol."""

    async def prune(self, retention: Retention, *, limit: int) -> Pruned:
        cutoffs = _cutoffs(retention)
        if not cutoffs or limit <= 0:
            return Pruned(0, False)
        return await self._run(lambda c: self._tx(c, lambda conn: self._step(conn, cutoffs, limit)))

    @classmethod
    def _step(cls, conn: sqlite3.Connection, cutoffs: list[tuple[str, str]], limit: int) -> Pruned:
        """Delete up to ``limit`` rows; when none are left and much of the file is free, give
        some pages back instead (a step of its own, so that no step does both)."""
        deleted = cls._batch(conn, cutoffs, limit)
        if deleted:
            return Pruned(deleted, deleted >= limit or _much_free(conn))
        return Pruned(0, _much_free(conn) and _give_back(conn))

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
        return deleted

    async def count_prunable(self, retention: Retention) -> int:
        def count(conn: sqlite3.Connection) -> int:
            total = 0
            for status, before in _cutoffs(retention):
                sql = f"SELECT count(*) FROM ({_EXPIRED})"
                total += conn.execute(sql, (status, before)).fetchone()[0]
            return total

        return await self._run(count)
