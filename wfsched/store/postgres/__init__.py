"""PostgreSQL store: several daemon replicas share one database.

Semantics mirror ``wfsched.store.sqlite`` exactly; what differs is how the work is spread: claims use
``FOR UPDATE SKIP LOCKED`` so replicas never share an event, deployment changes serialise on
the revision row, and every deployment change (``wfsched_deployments``) or recorded batch
(``wfsched_events``) sends a NOTIFY that its ChangeFeed (``changes``) turns into wake-ups.

The class is assembled from parts with one reason to change each: ``connection`` (URL, pool,
outages, error translation, LISTEN), ``deployments`` (deployments and trigger state SQL),
``events`` (event and outbox SQL), ``fleet`` (the dashboard's reads of the fleet) and ``rows`` (value and row conversions). Table names
are unqualified so that a ``search_path`` (e.g. ``options=-csearch_path=wfsched`` in the URL)
selects the schema.
"""

from __future__ import annotations

import psycopg

from wfsched.errors import StoreError
from wfsched.models import utcnow
from wfsched.store import ChangeFeed, Store, Sync
from wfsched.store.common import migrations
from wfsched.store.postgres import partitions
from wfsched.store.postgres.changes import NotifyFeed
from wfsched.store.postgres.connection import READER_POOL_SIZE, Conn
from wfsched.store.postgres.deployments import PgDeployments
from wfsched.store.postgres.events import PgEvents
from wfsched.store.postgres.fleet import PgFleet
from wfsched.store.postgres.ledger import PgLedger

MIGRATION_LOCK = 0x7766_7363_6865_6401  # "wfsched" 01
"""``pg_advisory_xact_lock`` key serialising migrations of replicas starting together."""


class PostgresStore(PgDeployments, PgEvents, PgLedger, PgFleet):
    """Store on a PostgreSQL database, safe for several replicas.

    ``partition_seconds``: the width of the events table's time partitions
    (``history.partition_interval``; see ``partitions.py``)."""

    def __init__(
        self, url: str, *, sync: Sync = "full", partition_seconds: float = 86400.0
    ) -> None:
        super().__init__(url, sync=sync)
        self._init_partitions(partition_seconds)
        self._url = url
        self._reader: PostgresStore | None = None

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
        await self._open_pool()
        await self._ensure_partitions(partitions.ahead(utcnow(), self.partition_seconds))
        reader = _Reader(self._url, partition_seconds=self.partition_seconds)
        await reader.open()
        self._reader = reader

    @property
    def single_daemon(self) -> bool:
        return False  # replicas share the events

    def reader(self) -> Store:
        return self._reader or self

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
        await super().close()

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

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT 1")

    def lock_exclusive(self) -> None:
        """Nothing to claim: replicas share the database by design (claims skip locked rows,
        deployment changes serialise on the revision row, leases come from the locks
        backend)."""

    def changes(self) -> ChangeFeed:
        return NotifyFeed(self.listen)

    async def check_writable(self) -> None:
        # A standby (or a session forced read-only) refuses every write; that is what an
        # operator must hear about. A full disk on the server is PostgreSQL's own alarm.
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"
            )
            row = await cur.fetchone()
        if row is None or row[0] or row[1] == "on":
            why = "is a standby in recovery" if row and row[0] else "is read-only"
            raise StoreError(f"PostgreSQL {self.where} cannot write: the server {why}")


class _Reader(PostgresStore):
    """The store's reader: the same database through a pool of its own (READER_POOL_SIZE
    connections, none until a read needs one), so a page's reads never wait for a connection
    behind the group commit's and the dispatcher's. Opened and closed by the store it reads
    for; migrations and partitions are that store's business."""

    async def open(self) -> None:
        if self._pool is None:
            await self._open_pool(min_size=0, max_size=READER_POOL_SIZE, name="wfsched-reader")
