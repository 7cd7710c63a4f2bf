"""PostgreSQL connection plumbing under ``PostgresStore``: URL, pool, outages, errors, LISTEN.

Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit mode: a
single-statement call is one round trip, and multi-statement calls run inside an explicit
``conn.transaction()``. The pool checks a connection as it hands it out: one unused for
``CHECK_IDLE_AFTER`` seconds with a round trip; one used more recently by looking at its
socket, where a server that ended the connection (a restart, ``pg_terminate_backend``) has
left its FATAL notice and end of stream. A round trip per call cost as much as the call.

Outages: when a pooled connection turns out dead and a fresh connection attempt fails too, the
server counts as down until a call gets a connection again; meanwhile calls wait
``DOWN_POOL_TIMEOUT`` instead of ``POOL_TIMEOUT``, so webhooks get their 503 within a second
or so, and each wait lets the pool reconnect as soon as the server is back.
"""

from __future__ import annotations

import logging
import re
import select
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from wfsched.errors import ConfigError, StoreError, StoreRejected
from wfsched.jsontext import loads
from wfsched.store import Sync

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
CHECK_IDLE_AFTER = 5.0
"""Seconds after which a pooled connection is checked with a round trip instead of a look at
its socket (a connection dropped silently on the way, by a NAT say, leaves nothing to read)."""
POOL_MAX_SIZE = 10
READER_POOL_SIZE = 2
"""Connections of the store's reader (``Store.reader``: the dashboard's pages), a pool apart
from the POOL_MAX_SIZE the group commit, the dispatcher and the rest share; opened as the
first page needs them (none while no page is read)."""
DEPLOYMENTS_CHANNEL = "wfsched_deployments"
EVENTS_CHANNEL = "wfsched_events"

log = logging.getLogger("wfsched.store")
# SQLSTATE classes blaming the data sent, not the server: data exception (e.g. 22P05, a
# \u0000 in jsonb), integrity constraint violation, program limit exceeded (a value too big).
_DATA_FAULTS = frozenset({"22", "23", "54"})

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


def _has_input(conn: Conn) -> bool:
    """True when an idle connection has something to read (or its socket cannot be looked
    at): the server ended it, or it must be checked with a round trip to know."""
    try:
        poller = select.poll()  # not select(): a daemon's descriptors may pass FD_SETSIZE
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


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


# Every value of synchronous_commit but ``off`` flushes the commit's WAL to the local disk
# before COMMIT returns; the stronger ones (remote_write, remote_apply) are left alone.
_DURABLE_COMMIT_SQL = (
    "SELECT set_config('synchronous_commit', 'on', false)"
    " WHERE current_setting('synchronous_commit') = 'off'"
)


async def _configure(conn: Conn) -> None:
    """Read json/jsonb with the store's exact, fast parser (``jsontext.loads``)."""
    set_json_loads(loads, conn)


async def _configure_durable(conn: Conn) -> None:
    """``_configure``, and a session that waits for its commits to reach the disk.

    A server (or role, or URL ``options``) set to ``synchronous_commit = off`` acknowledges
    a commit before its WAL is flushed: a crash of the server then loses events wfsched has
    already answered 202 for. One statement per new connection (not per commit), as a
    session setting since PgBouncer refuses unknown startup options; behind a PgBouncer in
    transaction mode, set it on the server or the database instead.
    """
    set_json_loads(loads, conn)
    await conn.execute(_DURABLE_COMMIT_SQL)


class _Pooled:
    """``PgConnections._conn``: a connection from the pool for one ``async with`` block.

    A class rather than an ``asynccontextmanager`` (a generator driven through two more
    awaits), and without ``async with conn``: in autocommit mode psycopg's own exit only takes
    the connection's lock to commit nothing (a block in ``conn.transaction()`` ends its
    transaction itself, and the pool rolls back whatever a connection comes back in)."""

    __slots__ = ("_conn", "_pool", "_store")

    def __init__(self, store: PgConnections) -> None:
        self._store = store
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._conn: Conn | None = None

    async def __aenter__(self) -> Conn:
        pool = self._pool = self._store._pool
        if pool is None:
            raise StoreError("store is not open")
        self._conn = await self._store._acquire(pool)
        return self._conn

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        conn, pool = self._conn, self._pool
        self._conn = self._pool = None
        if conn is not None and pool is not None:
            await self._store._give_back(pool, conn, exc)


class PgConnections:
    """Connections to one PostgreSQL database; the base the store's query mixins share.

    ``_conn``/``_tx`` hand out pooled connections and turn psycopg and pool errors into
    StoreError naming ``where`` and never the password.
    """

    def __init__(self, url: str, *, sync: Sync = "full") -> None:
        # store.sync: "full" makes commits durable whatever the server's default; "normal"
        # leaves synchronous_commit as the server has it.
        self._configure = _configure_durable if sync == "full" else _configure
        params = _connection_params(url)
        self._conninfo = make_conninfo("", **params)
        self._password = params.get("password")
        self.where = _describe(params)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._down_since: float | None = None  # monotonic; set by a failed probe
        self._down_error = ""
        self._probing = False
        self._returned: dict[int, float] = {}
        """When each pooled connection (by id) was last given back, monotonic."""

    def _error(self, exc: BaseException) -> StoreError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        message = f"PostgreSQL {self.where}: {redact(text, self._password)}"
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if sqlstate[:2] in _DATA_FAULTS:
            return StoreRejected(message)
        return StoreError(message)

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain to the StoreError, or None when its text holds the password."""
        return None if self._password and self._password in str(exc) else exc

    async def _connect(self) -> Conn:
        """A new connection outside the pool (migrations, LISTEN)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._error(exc) from self._cause(exc)
        await self._configure(conn)
        return conn

    def _conn(self) -> _Pooled:
        """A pooled autocommit connection (``async with``); psycopg and pool errors become
        StoreError."""
        return _Pooled(self)

    async def _give_back(
        self, pool: AsyncConnectionPool[Conn], conn: Conn, exc: BaseException | None
    ) -> None:
        """The end of a ``_conn`` block: a psycopg error becomes a StoreError (probing the
        server if the connection broke), and the connection goes back to the pool."""
        try:
            if isinstance(exc, psycopg.Error):
                if conn.broken:  # the server may have gone away mid-call
                    await self._probe()
                raise self._error(exc) from self._cause(exc)
        finally:
            returned = self._returned
            if len(returned) > 4 * POOL_MAX_SIZE:  # ids of connections long closed
                returned.clear()
            returned[id(conn)] = time.monotonic()
            await pool.putconn(conn)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction (rolled back if the body raises)."""
        async with self._conn() as conn, conn.transaction():
            yield conn

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
        returned = self._returned.get(id(conn))
        if (
            returned is not None
            and time.monotonic() - returned < CHECK_IDLE_AFTER
            and not _has_input(conn)
        ):
            return
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

    async def _open_pool(
        self, *, min_size: int = 1, max_size: int = POOL_MAX_SIZE, name: str = "wfsched"
    ) -> None:
        """Fill the pool with its first ``min_size`` connections; raise StoreError if none
        comes."""
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=min_size,
            max_size=max_size,
            open=False,
            check=self._check,
            configure=self._configure,
            timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name=name,
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT)
        except psycopg.Error as exc:
            await pool.close()
            raise self._error(exc) from self._cause(exc)
        self._pool = pool

    async def close(self) -> None:
        """Release connections."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def listen(self, channels: Sequence[str]) -> AsyncGenerator[str, None]:
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
