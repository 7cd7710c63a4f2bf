"""SQLite connection plumbing under ``SqliteStore``: one connection, one worker thread.

Every call runs in a worker thread behind a one-slot limiter, so statements never interleave
and the event loop never blocks on disk. The daemon also holds a per-file lock.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread

from wfsched.errors import StoreError
from wfsched.store import Sync

T = TypeVar("T")
_PRAGMA_SYNC: dict[Sync, str] = {"full": "FULL", "normal": "NORMAL"}


class SqliteConnection:
    """The connection to one SQLite file; the base the store's query mixins share.

    ``_run`` calls ``fn(conn, *args)`` in the worker thread; ``_tx`` wraps a body in one
    write transaction. Lock and I/O errors become StoreError naming the file.
    """

    def __init__(self, path: Path, *, sync: Sync = "full") -> None:
        self.path = path
        self.sync = sync
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._lockfile: IO[str] | None = None

    def change_token(self) -> tuple[int, ...]:
        """A cheap fingerprint of the files that changes whenever anyone commits.

        Every commit (ours, the CLI's) appends to the WAL; a stat on the event loop costs a few
        microseconds, where polling the database would cost a thread hop and a query.
        """
        token: list[int] = []
        for suffix in ("-wal", ""):
            try:
                st = os.stat(f"{self.path}{suffix}")
            except OSError:
                token += [0, 0]
                continue
            token += [st.st_mtime_ns, st.st_size]
        return tuple(token)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(
            partial(self._guarded, fn, *args), limiter=self._limiter
        )

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise StoreError("store is not open")
        try:
            return fn(self._conn, *args)
        except sqlite3.OperationalError as exc:
            self._conn.rollback()
            raise StoreError(f"SQLite {self.path}: {exc}") from exc

    @staticmethod
    def _tx(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _connect(self) -> None:
        """Open the file (creating its folder) in WAL mode; runs in a worker thread."""
        try:
            if self.path.parent != Path("."):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode FULL syncs the WAL at every commit (one fsync per group commit), so an
        # acknowledged event survives a power loss; NORMAL syncs only at checkpoints.
        conn.execute(f"PRAGMA synchronous={_PRAGMA_SYNC[self.sync]}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn

    async def close(self) -> None:
        """Release the connection and the daemon lock."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    def lock_exclusive(self) -> None:
        """Take the per-file daemon lock; raise StoreError if another daemon holds it."""
        handle = open(f"{self.path}.lock", "w")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StoreError(
                f"another wfsched daemon already serves {self.path}; SQLite supports one daemon"
                " per file (use PostgreSQL for replicas)"
            ) from None
        handle.write(str(os.getpid()))
        handle.flush()
        self._lockfile = handle
