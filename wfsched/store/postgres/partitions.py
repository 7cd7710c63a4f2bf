"""Time partitions of ``wfsched_events``: created ahead, dropped whole when expired.

Why partitions: deleting a day of a busy fleet row by row (1.44 million rows for 1,000
per-minute triggers) costs as much write work as recording it did, and leaves bloat for
VACUUM; dropping the day's table costs a catalog change. The table is range-partitioned on
``fired_at``, the instant retention is measured from.

Width: ``history.partition_interval`` (default one day). Daily partitions keep about 30
partitions for the default 30-day retention, few enough that planning stays cheap and that
a query without ``fired_at`` (a claim by status) visits each partition's small index once,
and they let a row outlive its retention by at most a day (3 % of the default). A short
retention wants narrower partitions (the scale benchmark: 10 s for 20 s).

Bounds are multiples of the width since the Unix epoch, clipped so that partitions made
with another width never overlap. ``wfsched_partitions`` lists them (written with the DDL,
under ``PARTITION_LOCK``, so replicas never race on DDL).

Created ahead: the pruning step keeps partitions for the next two widths; a batch with an
event outside the partitions near now (a clock far off, a backdated fire) creates the
partition it needs before the insert. Whatever still finds no partition goes to the DEFAULT
partition, so an insert never fails for want of one; creating a partition first moves the
default partition's rows of its range into it (ATTACH refuses otherwise).

Dropped for retention without losing what must stay. A partition whose upper bound is past
the dispatched cutoff holds dispatched rows that are all expired, but it may still hold rows
that must stay: pending events (never pruned) and failed events younger than their own
retention. Those are few; they are moved, not lost: one transaction DETACHes the partition,
re-inserts its keepers into the parent (their range now belongs to the DEFAULT partition),
and DROPs it. Before that, the dedupe keys of the rows that go are deleted in small batches
(``wfsched_event_keys`` is not partitioned: its unique key is the guarantee across
partitions), so the final transaction, which holds the parent's ACCESS EXCLUSIVE lock, only
moves keepers; it waits at most ``LOCK_TIMEOUT`` for that lock and is retried later.
Rows of the DEFAULT partition (keepers, rows of an old unpartitioned table) are deleted row
by row when they expire.

A key whose event has gone by another way (a keeper that expired between the key pass and
the drop) is orphaned; a repeat of it finds no event, and ``record`` then deletes the stale
key and records the fire anew, as a delivery older than the retention may be.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import sql

from wfsched.store import Retention
from wfsched.store.postgres.connection import Conn

PARTITION_LOCK = 0x7766_7363_6865_6402  # "wfsched" 02
LOCK_TIMEOUT = "1s"
"""How long partition DDL waits for its lock before giving up until the next step."""
AHEAD = 2
"""Widths of partitions kept ready after the current one."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, order=True)
class Span:
    lo: datetime
    hi: datetime
    name: str = ""


def bucket(t: datetime, width: float) -> tuple[datetime, datetime]:
    """The width-aligned range holding instant ``t``."""
    steps = (t - _EPOCH).total_seconds() // width
    lo = _EPOCH + timedelta(seconds=steps * width)
    return lo, lo + timedelta(seconds=width)


def partition_name(lo: datetime) -> str:
    return "wfsched_events_p" + lo.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def keep_sql(retention: Retention) -> sql.Composable:
    """The rows of an expired partition that must stay (pending; failed not yet expired)."""
    failed = (
        sql.SQL("true")
        if retention.failed_before is None
        else sql.SQL("fired_at >= {}").format(sql.Literal(retention.failed_before))
    )
    return sql.SQL("(status = 'pending' OR (status = 'failed' AND {}))").format(failed)


async def spans(conn: Conn) -> list[Span]:
    cur = await conn.execute("SELECT lo, hi, name FROM wfsched_partitions ORDER BY lo")
    return [
        Span(lo.astimezone(UTC), hi.astimezone(UTC), name) for lo, hi, name in await cur.fetchall()
    ]


def covering(existing: list[Span], t: datetime) -> Span | None:
    i = bisect.bisect_right([s.lo for s in existing], t) - 1
    if i >= 0 and existing[i].lo <= t < existing[i].hi:
        return existing[i]
    return None


def span_around(existing: list[Span], t: datetime) -> tuple[datetime, datetime]:
    """The contiguous covered range holding ``t`` (empty when ``t`` is not covered)."""
    here = covering(existing, t)
    if here is None:
        return t, t
    i = existing.index(here)
    lo, hi = here.lo, here.hi
    while i > 0 and existing[i - 1].hi == lo:
        i -= 1
        lo = existing[i].lo
    j = existing.index(here)
    while j + 1 < len(existing) and existing[j + 1].lo == hi:
        j += 1
        hi = existing[j].hi
    return lo, hi


def missing(existing: list[Span], instants: list[datetime], width: float) -> list[Span]:
    """Partitions to create so every instant is covered, clipped to the existing ones."""
    have, out = sorted(existing), []
    for t in sorted(set(instants)):
        if covering(have, t) is not None:
            continue
        lo, hi = bucket(t, width)
        for s in have:  # t is uncovered: each span ends at or before it, or starts after it
            if lo < s.hi <= t:
                lo = s.hi
            if t < s.lo < hi:
                hi = s.lo
        span = Span(lo, hi, partition_name(lo))
        out.append(span)
        have = sorted([*have, span])
    return out


async def create(conn: Conn, span: Span) -> None:
    """Create and attach one partition (inside the caller's transaction, under the lock),
    moving the DEFAULT partition's rows of its range into it first."""
    name = sql.Identifier(span.name)
    check = sql.Identifier(span.name + "_range")
    lo, hi = sql.Literal(span.lo), sql.Literal(span.hi)
    await conn.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE wfsched_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ).format(name)
    )
    await conn.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM wfsched_events_default WHERE fired_at >= {lo}"
            " AND fired_at < {hi} RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        ).format(lo=lo, hi=hi, name=name)
    )
    # A CHECK matching the bound lets ATTACH skip scanning the new table.
    await conn.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (fired_at >= {} AND fired_at < {})").format(
            name, check, lo, hi
        )
    )
    await conn.execute(
        sql.SQL(
            "ALTER TABLE wfsched_events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
        ).format(name, lo, hi)
    )
    await conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(name, check))
    await conn.execute(
        "INSERT INTO wfsched_partitions (name, lo, hi) VALUES (%s, %s, %s)",
        (span.name, span.lo, span.hi),
    )


async def ensure(conn: Conn, instants: list[datetime], width: float) -> list[Span]:
    """Create the partitions the instants need, in one transaction; return all partitions."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        existing = await spans(conn)
        for span in missing(existing, instants, width):
            await create(conn, span)
        return await spans(conn) if instants else existing


def ahead(now: datetime, width: float) -> list[datetime]:
    """The instants whose partitions should exist already: now and the next widths."""
    return [now + timedelta(seconds=width * i) for i in range(AHEAD + 1)]


async def expired(conn: Conn, retention: Retention) -> Span | None:
    """The oldest partition whose dispatched rows are all past retention, if any."""
    if retention.dispatched_before is None:
        return None
    cur = await conn.execute(
        "SELECT lo, hi, name FROM wfsched_partitions WHERE hi <= %s ORDER BY lo LIMIT 1",
        (retention.dispatched_before,),
    )
    row = await cur.fetchone()
    return None if row is None else Span(row[0], row[1], row[2])


async def drop_keys(
    conn: Conn, span: Span, retention: Retention, after: str, limit: int
) -> tuple[int, str | None]:
    """Delete the dedupe keys of up to ``limit`` rows of ``span`` that will go (execution ids
    after ``after``); return how many, and the last execution id seen (None: done)."""
    query = sql.SQL(
        "WITH batch AS (SELECT execution_id, workflow_id, dedupe_key FROM {p}"
        " WHERE execution_id > %s AND NOT {keep} ORDER BY execution_id LIMIT %s),"
        " gone AS (DELETE FROM wfsched_event_keys k USING batch b"
        " WHERE k.workflow_id = b.workflow_id AND k.dedupe_key = b.dedupe_key"
        " AND k.execution_id = b.execution_id RETURNING 1)"
        " SELECT (SELECT count(*) FROM gone), (SELECT max(execution_id) FROM batch),"
        " (SELECT count(*) FROM batch)"
    ).format(p=sql.Identifier(span.name), keep=keep_sql(retention))
    cur = await conn.execute(query, (after, limit))
    row = await cur.fetchone()
    assert row is not None
    gone, last, seen = row
    return int(gone), (last if seen >= limit else None)


async def drop(conn: Conn, span: Span, retention: Retention) -> None:
    """Detach ``span``, move its keepers to the parent (the DEFAULT partition), drop it."""
    name = sql.Identifier(span.name)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
        await conn.execute(sql.SQL("ALTER TABLE wfsched_events DETACH PARTITION {}").format(name))
        await conn.execute(
            sql.SQL(
                "WITH kept AS (INSERT INTO wfsched_events SELECT * FROM {p} WHERE {keep}"
                " RETURNING workflow_id, dedupe_key, execution_id, fired_at)"
                " INSERT INTO wfsched_event_keys (workflow_id, dedupe_key, execution_id, fired_at)"
                " SELECT * FROM kept ON CONFLICT (workflow_id, dedupe_key) DO NOTHING"
            ).format(p=name, keep=keep_sql(retention))
        )
        await conn.execute(sql.SQL("DROP TABLE {}").format(name))
        await conn.execute("DELETE FROM wfsched_partitions WHERE name = %s", (span.name,))
