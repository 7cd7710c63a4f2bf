"""SQLite connection plumbing under ``SqliteStore``: one connection, one call at a time.

Every call runs in the connection's own thread, one at a time (:mod:`.worker`), so statements
never interleave and the event loop never blocks on disk. The daemon also holds a per-file
lock. The store's reader (``Store.reader``) is a second, read-only connection with a thread of
its own.

The event outbox's writes (record, claim, outcomes, renewals) share a transaction when they
queue together (``_shared_tx``): one commit, one fsync, for whatever queued while the last one
was written. Each caller still returns only once its own writes are committed.

The database holds webhook secrets in clear, so its files are private to their owner: the
database is created mode 0600 whatever the umask (SQLite then gives its ``-wal`` and ``-shm``
files the database's mode), and files found with wider modes are tightened to 0600 at open.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import anyio

from wfsched.errors import StoreError
from wfsched.store import Sync
from wfsched.store.sqlite.worker import Worker

T = TypeVar("T")
MIN_SQLITE = (3, 35, 0)
"""The oldest SQLite library the store runs on (``UPDATE … RETURNING`` came in 3.35)."""
_STORE_FAULTS = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)
"""Primary result codes that fail the store itself (every caller), not one caller's rows."""
_PRAGMA_SYNC: dict[Sync, str] = {"full": "FULL", "normal": "NORMAL"}
log = logging.getLogger("wfsched.store")
FILE_MODE = 0o600
SUFFIXES = ("", "-wal", "-shm")
"""The database and the two files SQLite keeps next to it in WAL mode."""


class _Write(Generic[T]):
    """One caller's body for a shared write transaction, and what it gets back."""

    __slots__ = ("body", "done", "error", "result")

    def __init__(self, body: Callable[[sqlite3.Connection], T]) -> None:
        self.body = body
        self.done = False
        self.result: T | None = None
        self.error: Exception | None = None


def _store_fault(exc: Exception) -> bool:
    """An error of the store itself, which fails every caller of a shared write alike."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # none when Python raised it
    return code is None or (code & 0xFF) in _STORE_FAULTS


class SqliteConnection:
    """The connection to one SQLite file; the base the store's query mixins share.

    ``_run`` calls ``fn(conn, *args)`` in the worker thread; ``_tx`` wraps a body in one
    write transaction. Lock and I/O errors become StoreError naming the file.
    """

    def __init__(self, path: Path, *, sync: Sync = "full") -> None:
        self.path = path
        self.sync = sync
        self._conn: sqlite3.Connection | None = None
        self._worker = Worker(f"sqlite {path.name}")
        self._lockfile: IO[str] | None = None
        self._writes: list[_Write[Any]] = []
        """Bodies queued for the next shared write transaction."""
        self._write_turn = anyio.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.call(partial(self._guarded, fn, *args))

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

    async def _shared_tx(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in a write transaction together with the bodies queued meanwhile.

        Whoever holds the turn takes every body queued so far and commits them at once; a
        caller whose body an earlier turn already committed just collects its result. When
        one body fails, each is run again in its own transaction, so only its caller sees
        the error (a bad row, or an outage that fails them all alike).
        """
        write = _Write(body)
        self._writes.append(write)
        try:
            async with self._write_turn:
                if not write.done:
                    if write not in self._writes:
                        raise StoreError(f"SQLite {self.path}: a queued write was lost")
                    writes, self._writes = self._writes, []
                    # Once taken, the batch completes even if this caller is cancelled
                    # meanwhile: the other callers' writes are theirs to see committed.
                    with anyio.CancelScope(shield=True):
                        try:
                            await self._run(self._commit_writes, writes)
                        except Exception as exc:  # noqa: BLE001 - the store's: everyone's
                            for w in writes:
                                if not w.done:
                                    w.error, w.done = exc, True
        except BaseException:
            if not write.done and write in self._writes:
                self._writes.remove(write)  # cancelled before its turn: never written
            raise
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _commit_writes(self, conn: sqlite3.Connection, writes: list[_Write[Any]]) -> None:
        if len(writes) > 1:
            try:
                results = self._tx(conn, lambda c: [w.body(c) for w in writes])
            except Exception as exc:  # one caller's rows: told apart below, or the store's
                if _store_fault(exc):
                    raise  # the store's fault (locked, I/O, full): every caller's
                if conn.in_transaction:
                    conn.rollback()
            else:
                for w, result in zip(writes, results, strict=True):
                    w.result, w.done = result, True
                return
        for w in writes:
            try:
                w.result = self._guarded(partial(self._tx, body=w.body))
            except Exception as exc:  # noqa: BLE001 - this caller's answer
                w.error = exc
            w.done = True

    def _connect(self) -> None:
        """Open the file in WAL mode; runs in a worker thread.

        The folder must exist: a mistyped path would otherwise start an empty store elsewhere.
        """
        if str(self.path) != ":memory:" and not self.path.parent.is_dir():
            raise StoreError(
                f"SQLite store {self.path}: folder {self.path.parent} does not exist; "
                "create it or fix store.url"
            )
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"SQLite store {self.path}: the SQLite library is {sqlite3.sqlite_version}; "
                f"wfsched needs {'.'.join(map(str, MIN_SQLITE))} or newer"
            )
        try:
            if str(self.path) != ":memory:":
                self._create_private()
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        # Before WAL mode writes the header of a new file: only a file without pages takes
        # it without a VACUUM (see retention.enable_incremental_vacuum); a no-op otherwise.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode FULL syncs the WAL at every commit (one fsync per group commit), so an
        # acknowledged event survives a power loss; NORMAL syncs only at checkpoints.
        conn.execute(f"PRAGMA synchronous={_PRAGMA_SYNC[self.sync]}")
        # Statement journals (an UPDATE of many rows inside a shared write transaction) and
        # temporary b-trees in memory: as files each was opened, written page by page, and
        # unlinked again, one more write per event on a busy webhook.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn
        self._tighten()

    def _connect_reader(self) -> None:
        """Open the file read-only (the store's reader, beside the writer); runs in a worker
        thread. It reads the WAL the writer keeps, so it sees every committed write."""
        try:
            conn = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=10.0,
            )
            conn.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path} to read: {exc}") from exc
        self._conn = conn

    def unusable(self, exc: BaseException) -> StoreError:
        """The one-line error for a store that cannot be used: the file, and SQLite's reason."""
        return StoreError(f"SQLite store {self.path} cannot be used: {exc}")

    def _create_private(self) -> None:
        """Create the database file mode 0600 before SQLite does (SQLite would use 0644 minus
        the umask, and copies the database's mode to the ``-wal`` and ``-shm`` files)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            return
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have cleared bits of 0600 itself
        finally:
            os.close(fd)

    def _tighten(self) -> None:
        """Narrow files left readable by others (by an older version, or a copy) to 0600."""
        for suffix in SUFFIXES:
            path = f"{self.path}{suffix}"
            try:
                current = stat.S_IMODE(os.stat(path).st_mode)
                if current & 0o077:
                    os.chmod(path, current & ~0o077)
                    log.warning(
                        f"{path} was open to other users (mode {current:o}); "
                        f"changed to {current & ~0o077:o}"
                    )
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning(
                    f"{path} is open to other users and its mode cannot be changed: {exc}; "
                    f"run chmod go-rwx {path}"
                )

    def _probe_write(self, conn: sqlite3.Connection) -> None:
        # The smallest real write: rewriting the header's user_version commits one page to
        # the WAL (and syncs it as every commit does), so a full disk, a read-only file or
        # folder, or a damaged database fails here.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {int(version)}")

    async def close(self) -> None:
        """Release the connection and the daemon lock."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._worker.call(conn.close)  # after every call queued before it
            self._worker.stop()
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
