"""SQLite store: the embedded default. WAL, one connection, calls run in one worker thread.

SQLite allows one writer, so this backend serves exactly one daemon per file (the daemon
holds a file lock); the CLI may write alongside it thanks to WAL and ``busy_timeout``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread

from wfsched.errors import NotFound, StoreError
from wfsched.models import (
    Deployment,
    DeploymentState,
    DispatchOutcome,
    EventStatus,
    Health,
    NewEvent,
    TriggerEvent,
    TriggerState,
    WorkflowSpec,
    utcnow,
)
from wfsched.store.common import dumps, fmt_ts, migrations, parse_ts, plan_deploy

T = TypeVar("T")
_EVENT_COLS = (
    "execution_id, workflow_id, trigger_id, trigger_type, dedupe_key, scheduled_at, fired_at,"
    " payload, status, attempts, last_error, next_attempt_at, dispatched_at"
)


_INSERT_EVENT = (
    "INSERT INTO events (execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,"
    " scheduled_at, fired_at, payload, status, next_attempt_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (workflow_id, dedupe_key) DO NOTHING"
)


def path_from_url(url: str) -> Path:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    rest = url.removeprefix("sqlite://")
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest:
        raise StoreError(f"store.url {url!r} names no file")
    return Path(rest)


def _event(row: Sequence[Any]) -> TriggerEvent:
    return TriggerEvent(
        execution_id=row[0],
        workflow_id=row[1],
        trigger_id=row[2],
        trigger_type=row[3],
        dedupe_key=row[4],
        scheduled_at=parse_ts(row[5]),
        fired_at=parse_ts(row[6]) or utcnow(),
        payload=json.loads(row[7]),
        status=row[8],
        attempts=row[9],
        last_error=row[10],
        next_attempt_at=parse_ts(row[11]),
        dispatched_at=parse_ts(row[12]),
    )


def _deployment(row: Sequence[Any]) -> Deployment:
    return Deployment(
        workflow_id=row[0],
        name=row[1],
        document=json.loads(row[2]),
        spec_hash=row[3],
        state=row[4],
        revision=row[5],
        updated_at=parse_ts(row[6]) or utcnow(),
        active_since=parse_ts(row[7]) or utcnow(),
    )


class SqliteStore:
    """Store on one SQLite file."""

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._lockfile: IO[str] | None = None

    # plumbing ----------------------------------------------------------------------------
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

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        try:
            if self.path.parent != Path("."):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn
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

    async def close(self) -> None:
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

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

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

    # deployments -------------------------------------------------------------------------
    async def apply(self, specs: Sequence[WorkflowSpec]) -> list[str]:
        return await self._run(lambda c: self._tx(c, partial(self._apply, specs)))

    def _apply(self, specs: Sequence[WorkflowSpec], conn: sqlite3.Connection) -> list[str]:
        now = fmt_ts(utcnow())
        actions = []
        revision = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
        for spec in specs:
            row = conn.execute(
                "SELECT workflow_id, name, document, spec_hash, state, revision, updated_at,"
                " active_since FROM deployments WHERE workflow_id=?",
                (spec.id,),
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
                [(spec.id, t.id, t.type) for t in spec.triggers],
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
                raise NotFound(f"workflow {workflow_id!r} is not deployed")

    def _bump(self, conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE meta SET value=value+1 WHERE key='revision'")
        return int(conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0])

    async def undeploy(self, workflow_ids: Sequence[str]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            self._known(conn, workflow_ids)
            conn.executemany(
                "DELETE FROM deployments WHERE workflow_id=?", [(w,) for w in workflow_ids]
            )
            self._bump(conn)

        await self._run(lambda c: self._tx(c, body))

    async def set_state(self, workflow_ids: Sequence[str], state: DeploymentState) -> None:
        def body(conn: sqlite3.Connection) -> None:
            self._known(conn, workflow_ids)
            revision = self._bump(conn)
            now = fmt_ts(utcnow())
            for workflow_id in workflow_ids:
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
                "SELECT workflow_id, name, document, spec_hash, state, revision, updated_at,"
                " active_since FROM deployments WHERE workflow_id=?",
                (workflow_id,),
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} is not deployed")
        return _deployment(row)

    async def list_deployments(self) -> list[Deployment]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT workflow_id, name, document, spec_hash, state, revision, updated_at,"
                " active_since FROM deployments ORDER BY workflow_id"
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
        sql = (
            "SELECT workflow_id, trigger_id, type, cursor, health, last_error, fence"
            " FROM trigger_state"
        )
        args: tuple[Any, ...] = ()
        if workflow_id is not None:
            sql += " WHERE workflow_id=?"
            args = (workflow_id,)
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY 1, 2", args).fetchall())
        return [
            TriggerState(
                workflow_id=r[0],
                trigger_id=r[1],
                type=r[2],
                cursor=json.loads(r[3]) if r[3] is not None else None,
                health=r[4],
                last_error=r[5],
                fence=r[6],
            )
            for r in rows
        ]

    async def get_cursor(self, workflow_id: str, trigger_id: str) -> Any:
        row = await self._run(
            lambda c: c.execute(
                "SELECT cursor FROM trigger_state WHERE workflow_id=? AND trigger_id=?",
                (workflow_id, trigger_id),
            ).fetchone()
        )
        return json.loads(row[0]) if row and row[0] is not None else None

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
                raise StoreError(
                    f"stale fencing token {fence} for {workflow_id}/{trigger_id}:"
                    " a newer lock holder has written"
                )

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
                "UPDATE trigger_state SET health=?, last_error=? WHERE workflow_id=? AND trigger_id=?",
                (health, error, workflow_id, trigger_id),
            )
        )

    # events ------------------------------------------------------------------------------
    async def record(self, events: Sequence[NewEvent]) -> list[tuple[TriggerEvent, bool]]:
        return await self._run(lambda c: self._tx(c, partial(self._record, events)))

    def _record(
        self, events: Sequence[NewEvent], conn: sqlite3.Connection
    ) -> list[tuple[TriggerEvent, bool]]:
        rows = []
        for e in events:
            fired = fmt_ts(e.fired_at)
            rows.append(
                (
                    e.execution_id,
                    e.workflow_id,
                    e.trigger_id,
                    e.trigger_type,
                    e.dedupe_key,
                    fmt_ts(e.scheduled_at),
                    fired,
                    dumps(e.payload),
                    fired,
                )
            )
        # One statement for the whole group commit; the common case (no dedupe key already
        # taken) is then told by the summed rowcount alone.
        cur = conn.executemany(_INSERT_EVENT, rows)
        created: set[str] | None = None
        if cur.rowcount != len(rows):
            created = set()
            ids = [e.execution_id for e in events]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                created.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT execution_id FROM events WHERE execution_id IN ({marks})", chunk
                    )
                )
        out: list[tuple[TriggerEvent, bool]] = []
        for e in events:
            if created is None or e.execution_id in created:
                fresh = TriggerEvent(
                    execution_id=e.execution_id,
                    workflow_id=e.workflow_id,
                    trigger_id=e.trigger_id,
                    trigger_type=e.trigger_type,
                    dedupe_key=e.dedupe_key,
                    scheduled_at=e.scheduled_at,
                    fired_at=e.fired_at,
                    payload=e.payload,
                    status="pending",
                    next_attempt_at=e.fired_at,
                )
                out.append((fresh, True))
            else:
                row = conn.execute(
                    f"SELECT {_EVENT_COLS} FROM events WHERE workflow_id=? AND dedupe_key=?",
                    (e.workflow_id, e.dedupe_key),
                ).fetchone()
                out.append((_event(row), False))
        return out

    async def claim(self, owner: str, limit: int, ttl: float, now: datetime) -> list[TriggerEvent]:
        def body(conn: sqlite3.Connection) -> list[TriggerEvent]:
            stamp = fmt_ts(now)
            rows = conn.execute(
                f"SELECT {_EVENT_COLS} FROM events WHERE status='pending' AND next_attempt_at<=?"
                " AND (claimed_until IS NULL OR claimed_until<?) ORDER BY next_attempt_at"
                " LIMIT ?",
                (stamp, stamp, limit),
            ).fetchall()
            until = fmt_ts(now + timedelta(seconds=ttl))
            conn.executemany(
                "UPDATE events SET claimed_by=?, claimed_until=? WHERE execution_id=?",
                [(owner, until, r[0]) for r in rows],
            )
            return [_event(r) for r in rows]

        return await self._run(lambda c: self._tx(c, body))

    async def finish(self, owner: str, outcomes: Sequence[DispatchOutcome]) -> None:
        now = fmt_ts(utcnow())
        rows = [
            (
                o.status,
                o.error,
                fmt_ts(o.next_attempt_at),
                now if o.status == "dispatched" else None,
                o.execution_id,
                owner,
            )
            for o in outcomes
        ]
        await self._run(
            lambda c: self._tx(
                c,
                lambda conn: conn.executemany(
                    "UPDATE events SET status=?, attempts=attempts+1, last_error=?, next_attempt_at=?,"
                    " dispatched_at=?, claimed_by=NULL, claimed_until=NULL"
                    " WHERE execution_id=? AND claimed_by=?",
                    rows,
                ),
            )
        )

    async def next_due(self) -> datetime | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT min(next_attempt_at) FROM events WHERE status='pending'"
            ).fetchone()
        )
        return parse_ts(row[0]) if row else None

    async def history(
        self, workflow_id: str | None = None, *, limit: int = 50, status: EventStatus | None = None
    ) -> list[TriggerEvent]:
        where, args = [], []
        if workflow_id is not None:
            where.append("workflow_id=?")
            args.append(workflow_id)
        if status is not None:
            where.append("status=?")
            args.append(status)
        sql = f"SELECT {_EVENT_COLS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY execution_id DESC LIMIT ?"
        rows = await self._run(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [_event(r) for r in rows]

    async def get_event(self, execution_id: str) -> TriggerEvent:
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {_EVENT_COLS} FROM events WHERE execution_id=?", (execution_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"no event with execution id {execution_id!r}")
        return _event(row)

    async def requeue(self, execution_ids: Sequence[str], now: datetime) -> list[TriggerEvent]:
        def body(conn: sqlite3.Connection) -> list[TriggerEvent]:
            out = []
            for execution_id in execution_ids:
                cur = conn.execute(
                    "UPDATE events SET status='pending', attempts=0, next_attempt_at=?,"
                    " claimed_by=NULL, claimed_until=NULL WHERE execution_id=?",
                    (fmt_ts(now), execution_id),
                )
                if cur.rowcount == 0:
                    raise NotFound(f"no event with execution id {execution_id!r}")
                out.append(
                    _event(
                        conn.execute(
                            f"SELECT {_EVENT_COLS} FROM events WHERE execution_id=?",
                            (execution_id,),
                        ).fetchone()
                    )
                )
            return out

        return await self._run(lambda c: self._tx(c, body))

    async def last_events(self, workflow_id: str) -> dict[str, TriggerEvent]:
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {_EVENT_COLS} FROM events WHERE execution_id IN (SELECT max(execution_id)"
                " FROM events WHERE workflow_id=? GROUP BY trigger_id)",
                (workflow_id,),
            ).fetchall()
        )
        return {r[2]: _event(r) for r in rows}

    # bulk start-up (optional store method, see wfsched/bulkload.py) ----------------------
    async def scan_deployed(
        self, after: str, limit: int, *, cursor_fields: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """Return the deployments after id ``after`` (at most ``limit``), without documents.

        One row per trigger, ``(workflow_id, spec_hash, state, active_since, trigger_id, type,
        health, *cursor_fields)``, ordered by workflow and trigger id; the trigger columns are
        None for a deployment without triggers. Each cursor field is that top-level member of
        the trigger's JSON cursor (None if absent), extracted without decoding the rest.
        """
        fields = "".join(
            f", CASE WHEN json_valid(t.cursor) THEN json_extract(t.cursor, '$.{name}') END"
            for name in cursor_fields
            if name.isidentifier()
        )
        sql = (
            "SELECT d.workflow_id, d.spec_hash, d.state, d.active_since, t.trigger_id, t.type,"
            f" t.health{fields} FROM (SELECT * FROM deployments WHERE workflow_id > ?"
            " ORDER BY workflow_id LIMIT ?) AS d LEFT JOIN trigger_state AS t"
            " ON t.workflow_id = d.workflow_id ORDER BY d.workflow_id, t.trigger_id"
        )
        rows = await self._run(lambda c: c.execute(sql, (after, limit)).fetchall())
        # fromisoformat reads the fixed-width text fmt_ts writes, far faster than strptime.
        return [(*r[:3], datetime.fromisoformat(r[3]), *r[4:]) for r in rows]
