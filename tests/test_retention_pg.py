"""PostgreSQL time partitions: placement, whole-partition drops keeping what must stay,
dedupe under concurrent replicas, and the migration of an unpartitioned database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest

from tests.test_retention import DAY, event, remaining, settle
from wfsched.models import NewEvent, new_execution_id, utcnow
from wfsched.store import Retention
from wfsched.store.common import migrations
from wfsched.store.postgres import PostgresStore
from wfsched.store.retention import prune_all

pytestmark = pytest.mark.anyio


async def opened(url: str, width: float = 86400.0) -> PostgresStore:
    store = PostgresStore(url, partition_seconds=width)
    await store.open()
    return store


async def placement(store: PostgresStore, execution_id: str) -> str:
    async with store._conn() as conn:
        cur = await conn.execute(
            "SELECT tableoid::regclass::text FROM wfsched_events WHERE execution_id = %s",
            (execution_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return str(row[0]).rsplit(".", 1)[-1]


async def partitions(store: PostgresStore) -> list[str]:
    async with store._conn() as conn:
        cur = await conn.execute("SELECT name FROM wfsched_partitions ORDER BY lo")
        return [r[0] for r in await cur.fetchall()]


async def test_partitions_are_ready_ahead_and_made_on_demand(pg_url: str) -> None:
    store = await opened(pg_url)
    try:
        today = utcnow().strftime("%Y%m%d")
        assert f"wfsched_events_p{today}_000000" in await partitions(store)
        assert len(await partitions(store)) == 3  # today and the two days after
        far = event(datetime(2031, 5, 17, 12, tzinfo=UTC))  # a clock years ahead
        await store.record([far])
        assert await placement(store, far.execution_id) == "wfsched_events_p20310517_000000"
    finally:
        await store.close()


async def test_a_batch_of_new_taken_repeated_and_stale_keys(pg_url: str) -> None:
    """Every kind of key in one batch: new ones are created, a taken one returns the event
    behind it, a repeat inside the batch the first copy, and a key whose event is gone (a
    partition dropped after the key pass saw it) is taken again by the new event."""
    store = await opened(pg_url)
    try:
        now = utcnow()
        taken, stale = event(now, key="taken"), event(now, key="stale")
        await store.record([taken, stale])
        async with store._conn() as conn:
            await conn.execute(
                "DELETE FROM wfsched_events WHERE execution_id = %s", (stale.execution_id,)
            )
        new, again, twice, first = (
            event(now),
            event(now, key="taken"),
            event(now, key="repeat"),
            event(now, key="stale"),
        )
        repeat = event(now, key="repeat")
        got = await store.record([new, again, twice, first, repeat])
        assert [(e.execution_id, created) for e, created in got] == [
            (new.execution_id, True),
            (taken.execution_id, False),
            (twice.execution_id, True),
            (first.execution_id, True),
            (twice.execution_id, False),
        ]
        assert got[1][0].payload == taken.payload
        assert await remaining(store) == {
            taken.execution_id,
            new.execution_id,
            twice.execution_id,
            first.execution_id,
        }
        # All new again: the common case answers from the count alone.
        fresh = [event(now) for _ in range(3)]
        assert [c for _, c in await store.record(fresh)] == [True, True, True]
    finally:
        await store.close()


async def test_midnight_utc_splits_partitions_and_both_sides_dedupe(pg_url: str) -> None:
    store = await opened(pg_url)
    try:
        midnight = datetime.combine(utcnow().date() + DAY, datetime.min.time(), UTC)
        before = event(midnight - timedelta(milliseconds=1), key="k1")
        after = event(midnight, key="k2")
        await store.record([before, after])
        day = midnight.strftime("%Y%m%d")
        prev = (midnight - DAY).strftime("%Y%m%d")
        assert await placement(store, before.execution_id) == f"wfsched_events_p{prev}_000000"
        assert await placement(store, after.execution_id) == f"wfsched_events_p{day}_000000"
        repeats = await store.record([event(midnight, key="k1"), event(midnight, key="k2")])
        assert [c for _, c in repeats] == [False, False]
        assert [e.execution_id for e, _ in repeats] == [before.execution_id, after.execution_id]
    finally:
        await store.close()


async def test_an_expired_partition_is_dropped_and_its_keepers_move(pg_url: str) -> None:
    store = await opened(pg_url)
    try:
        now = utcnow()
        old = now - 40 * DAY
        gone = [event(old) for _ in range(30)]
        failed, pending = event(old, key="failed"), event(old, key="pending")
        await store.record([*gone, failed, pending])
        old_part = f"wfsched_events_p{old.strftime('%Y%m%d')}_000000"
        assert old_part in await partitions(store)
        await settle(
            store,
            {
                **{e.execution_id: "dispatched" for e in gone},
                failed.execution_id: "failed",
                pending.execution_id: "pending",
            },
        )
        retention = Retention.at(now, 30 * 86400, 90 * 86400, exact=False)
        assert await prune_all(store, retention, rest=False) == 30
        assert old_part not in await partitions(store)
        assert await remaining(store) == {failed.execution_id, pending.execution_id}
        assert await placement(store, pending.execution_id) == "wfsched_events_default"
        # The keepers still dedupe; the dropped rows' keys are gone with them.
        repeats = await store.record([event(now, key="failed"), event(now, key="pending")])
        assert [(e.execution_id, c) for e, c in repeats] == [
            (failed.execution_id, False),
            (pending.execution_id, False),
        ]
        async with store._conn() as conn:
            cur = await conn.execute("SELECT count(*) FROM wfsched_event_keys")
            assert await cur.fetchone() == (2,)
        # The pending keeper is still dispatched from the DEFAULT partition.
        await settle(store, {pending.execution_id: "dispatched"})
        assert (await store.get_event(pending.execution_id)).status == "dispatched"
    finally:
        await store.close()


async def test_the_daemon_mode_drops_whole_days_and_exact_mode_deletes_rows(pg_url: str) -> None:
    store = await opened(pg_url)
    try:
        now = utcnow()
        cutoff = now - 30 * DAY
        # Same day as the cutoff but older than it: the day is not wholly expired.
        day_start = datetime.combine(cutoff.date(), datetime.min.time(), UTC)
        boundary = event(day_start + (cutoff - day_start) / 2)
        await store.record([boundary])
        await settle(store, {boundary.execution_id: "dispatched"})
        lazy = Retention(cutoff, None, exact=False)
        assert await prune_all(store, lazy, rest=False) == 0
        assert await store.count_prunable(lazy) == 1
        assert await prune_all(store, Retention(cutoff, None), rest=False) == 1
    finally:
        await store.close()


async def test_replicas_recording_the_same_keys_at_once_create_one_row_each(pg_url: str) -> None:
    a, b = await opened(pg_url), await opened(pg_url)
    try:
        now = utcnow()
        keys = [f"k{i}" for i in range(300)]
        results: dict[str, list[Any]] = {"a": [], "b": []}

        async def run(name: str, store: PostgresStore, order: list[str]) -> None:
            for i in range(0, len(order), 30):
                batch = [
                    event(now + timedelta(seconds=j % 3), key=k)
                    for j, k in enumerate(order[i : i + 30])
                ]
                results[name] += await store.record(batch)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a", a, keys)
            tg.start_soon(run, "b", b, list(reversed(keys)))
        created = [e.dedupe_key for r in results.values() for e, c in r if c]
        assert sorted(created) == sorted(keys)
        async with a._conn() as conn:
            cur = await conn.execute(
                "SELECT count(*), count(DISTINCT dedupe_key) FROM wfsched_events"
            )
            assert await cur.fetchone() == (300, 300)
        winners = {e.dedupe_key: e.execution_id for r in results.values() for e, c in r if c}
        for r in results.values():
            for e, _ in r:
                assert winners[e.dedupe_key] == e.execution_id
    finally:
        await a.close()
        await b.close()


async def test_an_unpartitioned_database_upgrades_in_place(pg_url: str) -> None:
    old = utcnow() - 5 * DAY
    rows = [event(old + timedelta(minutes=i), key=f"old-{i}") for i in range(20)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(dict(migrations("postgres"))[1].encode())
        conn.execute(
            "CREATE TABLE wfsched_schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO wfsched_schema_migrations (version) VALUES (1)")
        for e in rows:
            conn.execute(
                "INSERT INTO wfsched_events (execution_id, workflow_id, trigger_id,"
                " trigger_type, dedupe_key, fired_at, payload, status)"
                " VALUES (%s, %s, 't', 'manual', %s, %s, '{}', 'dispatched')",
                (e.execution_id, e.workflow_id, e.dedupe_key, e.fired_at),
            )
    store = await opened(pg_url)
    try:
        assert await remaining(store) == {e.execution_id for e in rows}
        repeat = await store.record([event(utcnow(), key="old-3")])
        assert repeat[0] == (await store.get_event(rows[3].execution_id), False)
        fresh = event(utcnow(), key="new")
        await store.record([fresh])
        assert (await placement(store, fresh.execution_id)).startswith("wfsched_events_p")
        # Old rows sit in the DEFAULT partition and are pruned row by row.
        retention = Retention(utcnow() - 2 * DAY, None, exact=False)
        assert await prune_all(store, retention, rest=False) == 20
    finally:
        await store.close()


def row_lookups(plan: dict[str, Any], out: set[str] | None = None) -> set[str]:
    """Partitions whose primary key an EXPLAIN ANALYZE plan actually probed (loops > 0)."""
    out = set() if out is None else out
    if str(plan.get("Index Name", "")).endswith("_pkey") and plan.get("Actual Loops", 0) > 0:
        out.add(str(plan["Relation Name"]))
    for child in plan.get("Plans", []):
        row_lookups(child, out)
    return out


async def analyzed(store: PostgresStore, statement: str, params: Any) -> dict[str, Any]:
    """Run the store's own statement under EXPLAIN ANALYZE, then roll it back."""
    async with store._conn() as conn:
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
        row = await cur.fetchone()
        await conn.rollback()
    assert row is not None
    return dict(row[0][0]["Plan"])


async def test_claims_and_finishes_look_in_one_partition(pg_url: str) -> None:
    """Claim and finish find each row in its own time partition only: the row lookups of
    the store's statements (run for real under EXPLAIN ANALYZE) touch one partition out of
    eleven, not an index per partition."""
    from wfsched.store.postgres import events as sql

    store = await opened(pg_url)
    try:
        recorded = [event(utcnow() - timedelta(days=d)) for d in range(0, 40, 4)]
        await store.record(recorded)
        assert len(set(await partitions(store))) >= 10
        oldest, target = recorded[-1], recorded[3]
        now = utcnow()
        claim = {"owner": "o", "until": now + timedelta(seconds=60), "now": now, "limit": 1}
        plan = await analyzed(store, sql._CLAIM_SQL, claim)
        # The search for due rows reads every partition's pending index (a due row may be in
        # any); the UPDATE of the one row it found looks in that row's partition only.
        assert row_lookups(plan) == {await placement(store, oldest.execution_id)}
        finish = [["dispatched"], [None], [None], [now], [target.execution_id]]
        plan = await analyzed(store, sql._FINISH_SQL, [*finish, [target.fired_at], "o"])
        assert row_lookups(plan) == {await placement(store, target.execution_id)}
        # Without the fired_at (an outcome built by hand) every partition is probed.
        plan = await analyzed(store, sql._FINISH_ANY_SQL, [*finish, "o"])
        assert len(row_lookups(plan)) == len(await partitions(store)) + 1  # and DEFAULT
    finally:
        await store.close()


def new(key: str) -> NewEvent:
    return event(utcnow(), key=key, workflow_id=new_execution_id())


async def test_dropping_a_partition_vacuums_the_keys_table(pg_url: str) -> None:
    """The keys of a dropped partition are deleted rows: the store vacuums them away itself,
    so their space is reused even where autovacuum is off or slow (the size stays bounded)."""
    store = await opened(pg_url)
    try:
        now = utcnow()
        gone = [event(now - 40 * DAY) for _ in range(30)]
        await store.record(gone)
        await settle(store, {e.execution_id: "dispatched" for e in gone})
        retention = Retention.at(now, 30 * 86400, 90 * 86400, exact=False)
        assert await prune_all(store, retention, rest=False) == 30
        async with store._conn() as conn:
            cur = await conn.execute(
                "SELECT vacuum_count FROM pg_stat_user_tables"
                " WHERE relname = 'wfsched_event_keys' AND schemaname = current_schema()"
            )
            assert await cur.fetchone() == (1,)
    finally:
        await store.close()
