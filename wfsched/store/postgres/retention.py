"""PostgreSQL retention and time partitions (a mixin of ``PostgresStore``).

``prune`` does one bounded step per call: keep partitions ready ahead, then take an expired
partition apart (its dedupe keys in batches, then one short DETACH/move/DROP), then delete
rows one by one where partitions cannot be dropped: the DEFAULT partition, failed events
whose retention is shorter than the dispatched one, and everything past its cutoff when
``retention.exact`` (``wfsched prune``). ``partitions.py`` explains the design.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from wfsched.errors import StoreError
from wfsched.models import utcnow
from wfsched.store import Pruned, Retention
from wfsched.store.postgres import partitions as parts
from wfsched.store.postgres.connection import Conn, PgConnections

log = logging.getLogger("wfsched.store")
DEFAULT_PARTITION_SECONDS = 86400.0

_DELETE = """
WITH d AS (
    DELETE FROM {table} WHERE (execution_id, fired_at) IN (
        SELECT execution_id, fired_at FROM {table}
        WHERE status IN ('dispatched', 'failed') AND status = %s AND fired_at < %s
        LIMIT %s)
    RETURNING workflow_id, dedupe_key, execution_id
), k AS (
    DELETE FROM wfsched_event_keys k USING d
    WHERE k.workflow_id = d.workflow_id AND k.dedupe_key = d.dedupe_key
        AND k.execution_id = d.execution_id
)
SELECT count(*) FROM d
"""


class PgRetention(PgConnections):
    """``prune``, ``count_prunable`` and the partition bookkeeping ``record`` relies on."""

    def _init_partitions(self, partition_seconds: float) -> None:
        self.partition_seconds = partition_seconds or DEFAULT_PARTITION_SECONDS
        # The contiguous range of partitions around now, as last seen (empty until then).
        self._covered = (datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC))
        self._key_cursor: dict[str, str] = {}  # expired partition -> last execution id done
        self._keys_done: set[str] = set()

    async def _ensure_partitions(self, instants: list[datetime]) -> None:
        """Create the partitions these instants need; remember the span covered around now.

        A failure (a lock timeout) is logged, not raised: the rows then go to the DEFAULT
        partition, and a later batch or pruning step tries again."""
        try:
            async with self._conn() as conn:
                existing = await parts.ensure(conn, instants, self.partition_seconds)
        except StoreError as exc:
            log.warning(f"creating time partitions failed: {exc}", extra={"error": str(exc)})
            return
        self._covered = parts.span_around(existing, utcnow())

    def _uncovered(self, fired: list[datetime]) -> bool:
        lo, hi = self._covered
        return not (lo <= min(fired) and max(fired) < hi)

    async def prune(self, retention: Retention, *, limit: int) -> Pruned:
        now = utcnow()
        if self._uncovered(parts.ahead(now, self.partition_seconds)):
            await self._ensure_partitions(parts.ahead(now, self.partition_seconds))
        if not retention.enabled or limit <= 0:
            return Pruned(0, False)
        async with self._conn() as conn:
            span = await parts.expired(conn, retention)
            if span is not None:
                return await self._take_apart(conn, span, retention, limit)
            deleted = 0
            if retention.dispatched_before is not None:
                table = "wfsched_events" if retention.exact else "wfsched_events_default"
                deleted += await self._delete(
                    conn, table, "dispatched", retention.dispatched_before, limit
                )
            if retention.failed_before is not None and deleted < limit:
                deleted += await self._delete(
                    conn, "wfsched_events", "failed", retention.failed_before, limit - deleted
                )
        return Pruned(deleted, deleted >= limit)

    async def _take_apart(
        self, conn: Conn, span: parts.Span, retention: Retention, limit: int
    ) -> Pruned:
        if span.name not in self._keys_done:
            after = self._key_cursor.get(span.name, "")
            gone, last = await parts.drop_keys(conn, span, retention, after, limit)
            if last is None:
                self._keys_done.add(span.name)
            else:
                self._key_cursor[span.name] = last
            return Pruned(gone, True)
        try:
            await parts.drop(conn, span, retention)
        except psycopg.errors.LockNotAvailable:
            log.info(f"partition {span.name} is busy; dropping it at the next step")
            return Pruned(0, False)
        self._keys_done.discard(span.name)
        self._key_cursor.pop(span.name, None)
        log.info(f"dropped expired partition {span.name}", extra={"status": "pruned"})
        # Its keys were deleted row by row: vacuumed now, their space is reused by the next
        # keys, whether autovacuum is on, off or behind (else the table would only grow).
        # Once per dropped partition; it blocks neither inserts nor deletes.
        await conn.execute("VACUUM wfsched_event_keys")
        return Pruned(0, True)

    @staticmethod
    async def _delete(conn: Conn, table: str, status: str, before: datetime, limit: int) -> int:
        query = sql.SQL(_DELETE).format(table=sql.Identifier(table))
        cur = await conn.execute(query, (status, before, limit))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def count_prunable(self, retention: Retention) -> int:
        total = 0
        async with self._conn() as conn:
            for status, before in (
                ("dispatched", retention.dispatched_before),
                ("failed", retention.failed_before),
            ):
                if before is None:
                    continue
                cur = await conn.execute(
                    "SELECT count(*) FROM wfsched_events WHERE status IN ('dispatched', 'failed')"
                    " AND status = %s AND fired_at < %s",
                    (status, before),
                )
                row = await cur.fetchone()
                total += int(row[0]) if row else 0
        return total
