"""PostgreSQL store: several daemon replicas share one database.

Semantics mirror ``sqlite.py`` exactly; what differs is how the work is spread: claims use
``FOR UPDATE SKIP LOCKED`` so replicas never share an event, deployment changes serialise on
the revision row, and every deployment change (``wfsched_deployments``) or recorded batch
(``wfsched_events``) sends a NOTIFY that ``listen`` turns into wake-ups.

Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit mode: a
single-statement call is one round trip (plus the pool's liveness check), and multi-statement
calls run inside an explicit ``conn.transaction()``. Table names are unqualified so that a
``search_path`` (e.g. ``options=-csearch_path=wfsched`` in the URL) selects the schema.

Outages: when a pooled connection turns out dead and a fresh connection attempt fails too, the
server counts as down until a call gets a connection again; meanwhile calls wait
``DOWN_POOL_TIMEOUT`` instead of ``POOL_TIMEOUT``, so webhooks get their 503 within a second
or so, and each wait lets the pool reconnect as soon as the server is back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from wfsched.errors import ConfigError, NotFound, StoreError
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
from wfsched.store.common import dumps, migrations, plan_deploy

Conn = psycopg.AsyncConnection[TupleRow]

CONNECT_TIMEOUT = 5
"""Seconds libpq may spend opening one connection (unless the URL sets connect_timeout)."""
POOL_TIMEOUT = 10.0
"""Seconds a call waits for a pooled connection before failing with StoreError."""
DOWN_POOL_TIMEOUT = 0.5
"""The wait instead while the server is known unreachable. A webhook may wait out the failing
group-commit batch ahead of it and then its own, so its 503 comes within about twice this
(GitHub allows a delivery 10 s); each wait still lets the pool try to reconnect."""
RECONNECT_TIMEOUT = 2.0
"""Seconds the pool retries one lost connection before giving up on it. Its delay doubles
per attempt (1, 2, 4 ... s); a short window keeps that backoff from delaying recovery, since
the next call that finds the pool empty starts a fresh attempt at once."""
PROBE_TIMEOUT = 2  # libpq's smallest connect_timeout
POOL_MAX_SIZE = 10
MIGRATION_LOCK = 0x7766_7363_6865_6401  # "wfsched" 01
"""``pg_advisory_xact_lock`` key serialising migrations of replicas starting together."""
DEPLOYMENTS_CHANNEL = "wfsched_deployments"
EVENTS_CHANNEL = "wfsched_events"

log = logging.getLogger("wfsched.store")

# Defaults added to the URL's parameters unless it sets them: a half-open TCP connection
# (peer gone without a FIN) then fails within about a minute instead of hanging.
_CONNECTION_DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT),
    "application_name": "wfsched",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

_EVENT_COLS = (
    "execution_id, workflow_id, trigger_id, trigger_type, dedupe_key, scheduled_at, fired_at,"
    " payload, status, attempts, last_error, next_attempt_at, dispatched_at"
)
_DEPLOYMENT_COLS = (
    "workflow_id, name, document, spec_hash, state, revision, updated_at, active_since"
)

# One statement, one round trip: insert the batch, skip keys already recorded, and queue a
# NOTIFY when at least one row was created (the ``wake`` CTE is scanned only through the
# UNION, and yields a row only if ``ins`` returned one). Rows go in key order so two batches
# with overlapping keys lock the unique index in the same order and cannot deadlock.
_RECORD_SQL = f"""
WITH ins AS (
    INSERT INTO wfsched_events (execution_id, workflow_id, trigger_id, trigger_type,
        dedupe_key, scheduled_at, fired_at, payload, status, next_attempt_at)
    SELECT i.execution_id, i.workflow_id, i.trigger_id, i.trigger_type, i.dedupe_key,
        i.scheduled_at, i.fired_at, i.payload, 'pending', i.fired_at
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                %b::timestamptz[], %b::timestamptz[], %b::jsonb[])
        AS i(execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,
             scheduled_at, fired_at, payload)
    ORDER BY i.workflow_id, i.dedupe_key
    ON CONFLICT (workflow_id, dedupe_key) DO NOTHING
    RETURNING execution_id
), wake AS (
    SELECT pg_notify('{EVENTS_CHANNEL}', '') FROM (SELECT 1 FROM ins LIMIT 1) AS created
)
SELECT execution_id FROM ins
UNION ALL
SELECT NULL FROM wake
"""

_EXISTING_SQL = f"""
SELECT {_EVENT_COLS} FROM wfsched_events
JOIN unnest(%s::text[], %s::text[]) AS k(wid, dkey)
    ON workflow_id = k.wid AND dedupe_key = k.dkey
"""

# The inner SELECT picks due, unclaimed rows and locks them, skipping rows another replica
# is claiming right now; after the lock PostgreSQL re-checks the WHERE against the newest
# row version, so a claim that committed meanwhile is not taken twice.
_CLAIM_SQL = f"""
WITH claimed AS (
    UPDATE wfsched_events SET claimed_by = %(owner)s, claimed_until = %(until)s
    WHERE execution_id IN (
        SELECT execution_id FROM wfsched_events
        WHERE status = 'pending' AND next_attempt_at <= %(now)s
            AND (claimed_until IS NULL OR claimed_until < %(now)s)
        ORDER BY next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    RETURNING {_EVENT_COLS}
)
SELECT {_EVENT_COLS} FROM claimed ORDER BY next_attempt_at, execution_id
"""

_FINISH_SQL = """
UPDATE wfsched_events SET status = %s, attempts = attempts + 1, last_error = %s,
    next_attempt_at = %s, dispatched_at = %s, claimed_by = NULL, claimed_until = NULL
WHERE execution_id = %s AND claimed_by = %s
"""

_UPSERT_DEPLOYMENT_SQL = f"""
INSERT INTO wfsched_deployments ({_DEPLOYMENT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (workflow_id) DO UPDATE SET name = EXCLUDED.name, document = EXCLUDED.document,
    spec_hash = EXCLUDED.spec_hash, revision = EXCLUDED.revision, updated_at = EXCLUDED.updated_at
"""


# conversions ------------------------------------------------------------------------------
def _utc(value: datetime) -> datetime:
    """An instant as an aware UTC datetime (naive values count as local time, as fmt_ts)."""
    return value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _json(value: Any) -> Jsonb:
    """Adapt a value as jsonb, serialised like the SQLite backend (``default=str``)."""
    return Jsonb(value, dumps)


def _limit(n: int) -> int | None:
    """SQLite's ``LIMIT n`` with a negative n means no limit; PostgreSQL spells it NULL."""
    return None if n < 0 else n


def _event(row: Sequence[Any]) -> TriggerEvent:
    return TriggerEvent(
        execution_id=row[0],
        workflow_id=row[1],
        trigger_id=row[2],
        trigger_type=row[3],
        dedupe_key=row[4],
        scheduled_at=_opt_utc(row[5]),
        fired_at=_utc(row[6]),
        payload=row[7],
        status=row[8],
        attempts=row[9],
        last_error=row[10],
        next_attempt_at=_opt_utc(row[11]),
        dispatched_at=_opt_utc(row[12]),
    )


def _deployment(row: Sequence[Any]) -> Deployment:
    return Deployment(
        workflow_id=row[0],
        name=row[1],
        document=row[2],
        spec_hash=row[3],
        state=row[4],
        revision=row[5],
        updated_at=_utc(row[6]),
        active_since=_utc(row[7]),
    )


def _fresh_event(e: NewEvent) -> TriggerEvent:
    """The event ``record`` returns for a row it just created (as sqlite.py builds it)."""
    return TriggerEvent(
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


def _stored_event(e: NewEvent) -> TriggerEvent:
    """The row a just-created event reads back as: UTC instants, JSON round-tripped payload.

    Returned for a duplicate key later in the same batch, which SQLite reads from the table.
    """
    return TriggerEvent(
        execution_id=e.execution_id,
        workflow_id=e.workflow_id,
        trigger_id=e.trigger_id,
        trigger_type=e.trigger_type,
        dedupe_key=e.dedupe_key,
        scheduled_at=_opt_utc(e.scheduled_at),
        fired_at=_utc(e.fired_at),
        payload=_json_roundtrip(e.payload),
        status="pending",
        next_attempt_at=_utc(e.fired_at),
    )


def _json_roundtrip(value: Mapping[str, Any]) -> Any:
    return json.loads(dumps(value))


def _require_all(wanted: Iterable[str], found: set[str], what: str) -> None:
    """Raise NotFound naming the first id of ``wanted`` (in order) that is not in ``found``."""
    for item in wanted:
        if item not in found:
            raise NotFound(what.format(item))


# URL handling -----------------------------------------------------------------------------
_URL_PASSWORD = re.compile(r"(://[^/@\s:]*:)[^@\s]*@")
_KW_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str, secret: str | None = None) -> str:
    """Remove a password from text: the known secret, URL userinfo and ``password=`` pairs."""
    if secret:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KW_PASSWORD.sub(r"\1***", text)


def _connection_params(url: str) -> dict[str, str]:
    """The URL as libpq keywords, with wfsched's defaults for what it leaves unset.

    No server option is added (e.g. TimeZone): PgBouncer refuses unknown startup options;
    timestamptz values are converted to UTC on load instead.
    """
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except psycopg.Error as exc:
        raise ConfigError(f"store.url is not a valid PostgreSQL URL: {redact(str(exc))}") from None
    for key, value in _CONNECTION_DEFAULTS.items():
        params.setdefault(key, value)
    return params


def _describe(params: Mapping[str, str]) -> str:
    """``user@host:port/db`` for messages; never includes the password."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user", "")
    dbname = params.get("dbname") or user
    return f"{user + '@' if user else ''}{host}:{port}/{dbname}"


class PostgresStore:
    """Store on a PostgreSQL database, safe for several replicas."""

    def __init__(self, url: str) -> None:
        params = _connection_params(url)
        self._conninfo = make_conninfo("", **params)
        self._password = params.get("password")
        self.where = _describe(params)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._down_since: float | None = None  # monotonic; set by a failed probe
        self._down_error = ""
        self._probing = False

    # plumbing ----------------------------------------------------------------------------
    def _error(self, exc: BaseException) -> StoreError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(f"PostgreSQL {self.where}: {redact(text, self._password)}")

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain to the StoreError, or None when its text holds the password."""
        return None if self._password and self._password in str(exc) else exc

    async def _connect(self) -> Conn:
        """A new connection outside the pool (migrations, LISTEN)."""
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._error(exc) from self._cause(exc)

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled autocommit connection; psycopg and pool errors become StoreError."""
        pool = self._pool
        if pool is None:
            raise StoreError("store is not open")
        conn = await self._acquire(pool)
        try:
            async with conn:
                yield conn
        except psycopg.Error as exc:
            if conn.broken:  # the server may have gone away mid-call
                await self._probe()
            raise self._error(exc) from self._cause(exc)
        finally:
            await pool.putconn(conn)

    async def _acquire(self, pool: AsyncConnectionPool[Conn]) -> Conn:
        """A connection from the pool within POOL_TIMEOUT, or DOWN_POOL_TIMEOUT while down.

        The wait goes in slices of DOWN_POOL_TIMEOUT, so a call that began before the server
        was found down gives up at the end of its slice rather than after POOL_TIMEOUT.
        """
        deadline = time.monotonic() + POOL_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            try:
                conn = await pool.getconn(timeout=min(DOWN_POOL_TIMEOUT, remaining))
            except PoolTimeout:
                if self._down_since is not None:
                    down_for = time.monotonic() - self._down_since
                    raise StoreError(
                        f"PostgreSQL {self.where} unreachable for {down_for:.0f} s:"
                        f" {self._down_error}"
                    ) from None
                if remaining <= DOWN_POOL_TIMEOUT:
                    raise StoreError(
                        f"PostgreSQL {self.where}: no free connection within {POOL_TIMEOUT:g} s"
                    ) from None
                continue
            except psycopg.Error as exc:
                raise self._error(exc) from self._cause(exc)
            if self._down_since is not None:
                log.info(
                    "PostgreSQL reachable again",
                    extra={"duration_ms": round((time.monotonic() - self._down_since) * 1000)},
                )
                self._down_since = None
            return conn

    async def _check(self, conn: Conn) -> None:
        """The pool's liveness check; a dead connection makes the store probe the server."""
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            await self._probe()
            raise

    async def _probe(self) -> None:
        """Open a fresh connection; if that fails, the server is down until a call succeeds.

        A connection found dead proves little (one backend may have been killed); a refused
        connection attempt does. One probe at a time; none while the server is known down.
        """
        if self._down_since is not None or self._probing:
            return
        self._probing = True
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=PROBE_TIMEOUT
            )
        except psycopg.Error as exc:
            self._down_since = time.monotonic()
            self._down_error = redact(" ".join(str(exc).split()), self._password)
            log.warning(
                "PostgreSQL unreachable; calls fail fast until it answers",
                extra={"error": str(self._error(exc))},
            )
        else:
            await conn.close()
        finally:
            self._probing = False

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction (rolled back if the body raises)."""
        async with self._conn() as conn, conn.transaction():
            yield conn

    async def open(self) -> None:
        if self._pool is not None:
            return
        conn = await self._connect()
        try:
            await self._migrate(conn)
        except psycopg.Error as exc:
            raise self._error(exc) from self._cause(exc)
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=POOL_MAX_SIZE,
            open=False,
            check=self._check,
            timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name="wfsched",
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT)
        except psycopg.Error as exc:
            await pool.close()
            raise self._error(exc) from self._cause(exc)
        self._pool = pool

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            # Replicas starting together queue here; each then sees what the first applied.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS wfsched_schema_migrations ("
                " version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM wfsched_schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, text in migrations("postgres"):
                if version in done:
                    continue
                await conn.execute(text.encode())  # several statements, no parameters
                await conn.execute(
                    "INSERT INTO wfsched_schema_migrations (version) VALUES (%s)", (version,)
                )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT 1")

    async def listen(self, channels: Sequence[str]) -> AsyncIterator[str]:
        """Yield the channel name of each NOTIFY received on ``channels``.

        Runs on its own connection (not from the pool). Once LISTEN is in effect it first
        yields every channel once, since anything may have changed before (or while a
        previous listener was reconnecting); then one name per notification. Raises
        StoreError when the connection fails: call again to reconnect. Close the generator
        (``contextlib.aclosing``) to release the connection promptly; cancelling a pending
        iteration ends it too. Channels are per database, not per schema: installations in
        other schemas of the same database wake this listener as well (harmless, spurious).
        """
        conn = await self._connect()
        try:
            for channel in channels:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            for channel in channels:
                yield channel
            async with aclosing(conn.notifies()) as notifies:
                async for notify in notifies:
                    yield notify.channel
        except psycopg.Error as exc:
            raise self._error(exc) from self._cause(exc)
        finally:
            await conn.close()
        raise StoreError(f"PostgreSQL {self.where}: notification stream ended")

    async def _notify_deployments(self, conn: Conn, revision: int) -> None:
        await conn.execute("SELECT pg_notify(%s, %s)", (DEPLOYMENTS_CHANNEL, str(revision)))

    # deployments -------------------------------------------------------------------------
    async def apply(self, specs: Sequence[WorkflowSpec]) -> list[str]:
        now = utcnow()
        ids = list(dict.fromkeys(spec.id for spec in specs))
        async with self._tx() as conn:
            # The revision row is the deployment lock: concurrent applies, undeploys and
            # state changes take it first and so run one after the other.
            cur = await conn.execute(
                "SELECT value FROM wfsched_meta WHERE key = 'revision' FOR UPDATE"
            )
            row = await cur.fetchone()
            if row is None:
                raise StoreError(f"PostgreSQL {self.where}: the revision row is missing")
            revision = int(row[0])
            cur = await conn.execute(
                f"SELECT {_DEPLOYMENT_COLS} FROM wfsched_deployments WHERE workflow_id = ANY(%s)",
                (ids,),
            )
            current = {r[0]: _deployment(r) for r in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT workflow_id, trigger_id, type FROM wfsched_trigger_state"
                " WHERE workflow_id = ANY(%s)",
                (ids,),
            )
            types: dict[str, dict[str, str]] = {wid: {} for wid in ids}
            for wid, trigger_id, type_ in await cur.fetchall():
                types[wid][trigger_id] = type_

            # Plan every spec in order against the evolving state (as sqlite.py does one
            # statement at a time), then write only the net effect.
            actions: list[str] = []
            dropped: dict[str, set[str]] = {}  # trigger rows to delete (state reset)
            changed: dict[str, WorkflowSpec] = {}  # the last version written per workflow
            for spec in specs:
                known = types[spec.id]
                plan = plan_deploy(spec, current.get(spec.id), known)
                actions.append(plan.action)
                if plan.action == "unchanged":
                    continue
                revision += 1
                for trigger_id in set(known) - plan.keep_triggers:
                    del known[trigger_id]
                    dropped.setdefault(spec.id, set()).add(trigger_id)
                for trigger in spec.triggers:
                    known.setdefault(trigger.id, trigger.type)
                before = current.get(spec.id)
                current[spec.id] = Deployment(
                    workflow_id=spec.id,
                    name=spec.name,
                    document=spec.document,
                    spec_hash=spec.spec_hash,
                    state=before.state if before else "active",
                    revision=revision,
                    updated_at=now,
                    active_since=before.active_since if before else now,
                )
                changed[spec.id] = spec
            if not changed:
                return actions

            async with conn.pipeline(), conn.cursor() as cur:
                await conn.execute(
                    "UPDATE wfsched_meta SET value = %s WHERE key = 'revision'", (revision,)
                )
                await cur.executemany(
                    _UPSERT_DEPLOYMENT_SQL,
                    [
                        (
                            d.workflow_id,
                            d.name,
                            _json(d.document),
                            d.spec_hash,
                            d.state,
                            d.revision,
                            d.updated_at,
                            d.active_since,
                        )
                        for d in (current[wid] for wid in changed)
                    ],
                )
                if dropped:
                    await cur.executemany(
                        "DELETE FROM wfsched_trigger_state"
                        " WHERE workflow_id = %s AND trigger_id = ANY(%s)",
                        [(wid, sorted(tids)) for wid, tids in dropped.items()],
                    )
                await cur.executemany(
                    "INSERT INTO wfsched_trigger_state (workflow_id, trigger_id, type)"
                    " VALUES (%s, %s, %s) ON CONFLICT (workflow_id, trigger_id) DO NOTHING",
                    [(wid, tid, type_) for wid in changed for tid, type_ in types[wid].items()],
                )
                await self._notify_deployments(conn, revision)
        return actions

    async def _bump(self, conn: Conn) -> int:
        """Increment the revision, taking the deployment lock; return the new revision."""
        cur = await conn.execute(
            "UPDATE wfsched_meta SET value = value + 1 WHERE key = 'revision' RETURNING value"
        )
        row = await cur.fetchone()
        if row is None:
            raise StoreError(f"PostgreSQL {self.where}: the revision row is missing")
        return int(row[0])

    async def undeploy(self, workflow_ids: Sequence[str]) -> None:
        async with self._tx() as conn:
            revision = await self._bump(conn)
            cur = await conn.execute(
                "DELETE FROM wfsched_deployments WHERE workflow_id = ANY(%s) RETURNING workflow_id",
                (list(workflow_ids),),
            )
            found = {r[0] for r in await cur.fetchall()}
            _require_all(workflow_ids, found, "workflow {!r} is not deployed")  # rolls back
            await self._notify_deployments(conn, revision)

    async def set_state(self, workflow_ids: Sequence[str], state: DeploymentState) -> None:
        now = utcnow()
        async with self._tx() as conn:
            revision = await self._bump(conn)
            # Resuming restarts time: a paused workflow accumulates no catch-up.
            cur = await conn.execute(
                "UPDATE wfsched_deployments SET state = %s, revision = %s, updated_at = %s,"
                " active_since = CASE WHEN state = %s THEN active_since ELSE %s END"
                " WHERE workflow_id = ANY(%s) RETURNING workflow_id",
                (state, revision, now, state, now, list(workflow_ids)),
            )
            found = {r[0] for r in await cur.fetchall()}
            _require_all(workflow_ids, found, "workflow {!r} is not deployed")  # rolls back
            await self._notify_deployments(conn, revision)

    async def get_deployment(self, workflow_id: str) -> Deployment:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {_DEPLOYMENT_COLS} FROM wfsched_deployments WHERE workflow_id = %s",
                (workflow_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} is not deployed")
        return _deployment(row)

    async def list_deployments(self) -> list[Deployment]:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {_DEPLOYMENT_COLS} FROM wfsched_deployments ORDER BY workflow_id"
            )
            rows = await cur.fetchall()
        return [_deployment(r) for r in rows]

    async def revision(self) -> int:
        async with self._conn() as conn:
            cur = await conn.execute("SELECT value FROM wfsched_meta WHERE key = 'revision'")
            row = await cur.fetchone()
        if row is None:
            raise StoreError(f"PostgreSQL {self.where}: the revision row is missing")
        return int(row[0])

    # trigger state -----------------------------------------------------------------------
    async def trigger_states(self, workflow_id: str | None = None) -> list[TriggerState]:
        query = (
            "SELECT workflow_id, trigger_id, type, cursor, health, last_error, fence"
            " FROM wfsched_trigger_state"
        )
        args: tuple[Any, ...] = ()
        if workflow_id is not None:
            query += " WHERE workflow_id = %s"
            args = (workflow_id,)
        async with self._conn() as conn:
            cur = await conn.execute(query + " ORDER BY workflow_id, trigger_id", args)
            rows = await cur.fetchall()
        return [
            TriggerState(
                workflow_id=r[0],
                trigger_id=r[1],
                type=r[2],
                cursor=r[3],
                health=r[4],
                last_error=r[5],
                fence=r[6],
            )
            for r in rows
        ]

    async def get_cursor(self, workflow_id: str, trigger_id: str) -> Any:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT cursor FROM wfsched_trigger_state WHERE workflow_id = %s"
                " AND trigger_id = %s",
                (workflow_id, trigger_id),
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def set_cursor(
        self, workflow_id: str, trigger_id: str, value: Any, *, fence: int | None = None
    ) -> None:
        async with self._conn() as conn:
            if fence is None:
                await conn.execute(
                    "UPDATE wfsched_trigger_state SET cursor = %s WHERE workflow_id = %s"
                    " AND trigger_id = %s",
                    (_json(value), workflow_id, trigger_id),
                )
                return
            cur = await conn.execute(
                "UPDATE wfsched_trigger_state SET cursor = %s, fence = %s WHERE workflow_id = %s"
                " AND trigger_id = %s AND fence <= %s",
                (_json(value), fence, workflow_id, trigger_id, fence),
            )
            if cur.rowcount == 0:
                raise StoreError(
                    f"stale fencing token {fence} for {workflow_id}/{trigger_id}:"
                    " a newer lock holder has written"
                )

    async def set_cursors(self, cursors: Sequence[tuple[str, str, Any]]) -> None:
        if not cursors:
            return
        rows = [(_json(v), w, t) for w, t, v in cursors]
        async with self._tx() as conn, conn.cursor() as cur:
            await cur.executemany(
                "UPDATE wfsched_trigger_state SET cursor = %s WHERE workflow_id = %s"
                " AND trigger_id = %s",
                rows,
            )

    async def set_health(
        self, workflow_id: str, trigger_id: str, health: Health, error: str | None
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE wfsched_trigger_state SET health = %s, last_error = %s"
                " WHERE workflow_id = %s AND trigger_id = %s",
                (health, error, workflow_id, trigger_id),
            )

    # events ------------------------------------------------------------------------------
    async def record(self, events: Sequence[NewEvent]) -> list[tuple[TriggerEvent, bool]]:
        if not events:
            return []
        # A key repeated inside the batch is sent once; the later copies get the first one.
        first: dict[tuple[str, str], NewEvent] = {}
        for e in events:
            first.setdefault((e.workflow_id, e.dedupe_key), e)
        unique = list(first.values())
        async with self._conn() as conn:
            cur = await conn.execute(
                _RECORD_SQL,
                (
                    [e.execution_id for e in unique],
                    [e.workflow_id for e in unique],
                    [e.trigger_id for e in unique],
                    [e.trigger_type for e in unique],
                    [e.dedupe_key for e in unique],
                    [_opt_utc(e.scheduled_at) for e in unique],
                    [_utc(e.fired_at) for e in unique],
                    [_json(e.payload) for e in unique],
                ),
            )
            created = {r[0] for r in await cur.fetchall() if r[0] is not None}
            existing: dict[tuple[str, str], TriggerEvent] = {}
            taken = [e for e in unique if e.execution_id not in created]
            if taken:
                # A separate statement: its snapshot sees rows that concurrent batches
                # committed while the insert waited on them.
                cur = await conn.execute(
                    _EXISTING_SQL,
                    ([e.workflow_id for e in taken], [e.dedupe_key for e in taken]),
                )
                for row in await cur.fetchall():
                    event = _event(row)
                    existing[(event.workflow_id, event.dedupe_key)] = event
        out: list[tuple[TriggerEvent, bool]] = []
        for e in events:
            key = (e.workflow_id, e.dedupe_key)
            original = first[key]
            if original.execution_id in created:
                if e is original:
                    out.append((_fresh_event(e), True))
                else:
                    out.append((_stored_event(original), False))
            elif key in existing:
                out.append((existing[key], False))
            else:  # events are never deleted, so this means the insert failed oddly
                raise StoreError(
                    f"PostgreSQL {self.where}: event {e.workflow_id}/{e.dedupe_key} was neither"
                    " recorded nor found"
                )
        return out

    async def claim(self, owner: str, limit: int, ttl: float, now: datetime) -> list[TriggerEvent]:
        params = {
            "owner": owner,
            "until": _utc(now + timedelta(seconds=ttl)),
            "now": _utc(now),
            "limit": _limit(limit),
        }
        async with self._conn() as conn:
            cur = await conn.execute(_CLAIM_SQL, params)
            rows = await cur.fetchall()
        return [_event(r) for r in rows]

    async def finish(self, owner: str, outcomes: Sequence[DispatchOutcome]) -> None:
        if not outcomes:
            return
        now = utcnow()
        rows = [
            (
                o.status,
                o.error,
                _opt_utc(o.next_attempt_at),
                now if o.status == "dispatched" else None,
                o.execution_id,
                owner,
            )
            for o in outcomes
        ]
        async with self._tx() as conn, conn.cursor() as cur:
            await cur.executemany(_FINISH_SQL, rows)

    async def next_due(self) -> datetime | None:
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT min(next_attempt_at) FROM wfsched_events WHERE status = 'pending'"
            )
            row = await cur.fetchone()
        return _opt_utc(row[0]) if row else None

    async def history(
        self, workflow_id: str | None = None, *, limit: int = 50, status: EventStatus | None = None
    ) -> list[TriggerEvent]:
        where: list[str] = []
        args: list[Any] = []
        if workflow_id is not None:
            where.append("workflow_id = %s")
            args.append(workflow_id)
        if status is not None:
            where.append("status = %s")
            args.append(status)
        query = f"SELECT {_EVENT_COLS} FROM wfsched_events"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY execution_id DESC LIMIT %s"
        async with self._conn() as conn:
            cur = await conn.execute(query, (*args, _limit(limit)))
            rows = await cur.fetchall()
        return [_event(r) for r in rows]

    async def get_event(self, execution_id: str) -> TriggerEvent:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT {_EVENT_COLS} FROM wfsched_events WHERE execution_id = %s",
                (execution_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no event with execution id {execution_id!r}")
        return _event(row)

    async def requeue(self, execution_ids: Sequence[str], now: datetime) -> list[TriggerEvent]:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE wfsched_events SET status = 'pending', attempts = 0,"
                " next_attempt_at = %s, claimed_by = NULL, claimed_until = NULL"
                f" WHERE execution_id = ANY(%s) RETURNING {_EVENT_COLS}",
                (_utc(now), list(execution_ids)),
            )
            found = {r[0]: _event(r) for r in await cur.fetchall()}
            _require_all(execution_ids, set(found), "no event with execution id {!r}")
        return [found[execution_id] for execution_id in execution_ids]

    async def last_events(self, workflow_id: str) -> dict[str, TriggerEvent]:
        async with self._conn() as conn:
            cur = await conn.execute(
                f"SELECT DISTINCT ON (trigger_id) {_EVENT_COLS} FROM wfsched_events"
                " WHERE workflow_id = %s ORDER BY trigger_id DESC, execution_id DESC",
                (workflow_id,),
            )
            rows = await cur.fetchall()
        return {r[2]: _event(r) for r in rows}
