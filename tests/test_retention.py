"""Retention on both stores: what is pruned, what stays, dedupe across it, partitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wfsched.models import DispatchOutcome, NewEvent, new_execution_id, utcnow
from wfsched.store import Retention
from wfsched.store.postgres import PostgresStore
from wfsched.store.retention import FIRST_BATCH, prune_all

pytestmark = pytest.mark.anyio
DAY = timedelta(days=1)


def event(fired_at: datetime, key: str | None = None, workflow_id: str = "wf") -> NewEvent:
    return NewEvent(
        execution_id=new_execution_id(),
        workflow_id=workflow_id,
        trigger_id="t",
        trigger_type="manual",
        dedupe_key=key or new_execution_id(),
        payload={"n": 1},
        fired_at=fired_at,
    )


async def settle(store: Any, status: dict[str, str]) -> None:
    """Give recorded events the wanted final status (by execution id) through claim/finish."""
    claimed = await store.claim("test", 10_000, 60, utcnow() + timedelta(seconds=1))
    outcomes = [
        DispatchOutcome(
            execution_id=e.execution_id,
            status=status[e.execution_id],  # type: ignore[arg-type]
            next_attempt_at=e.next_attempt_at,  # a pending one stays due
            fired_at=e.fired_at,
        )
        for e in claimed
        if e.execution_id in status
    ]
    await store.finish("test", outcomes)


async def remaining(store: Any) -> set[str]:
    return {e.execution_id for e in await store.history(limit=-1)}


async def test_an_event_exactly_at_the_cutoff_stays_and_one_older_goes(store: Any) -> None:
    cutoff = utcnow() - 10 * DAY
    at_edge, older = event(cutoff), event(cutoff - timedelta(microseconds=1))
    await store.record([at_edge, older])
    await settle(store, {at_edge.execution_id: "dispatched", older.execution_id: "dispatched"})
    retention = Retention(cutoff, cutoff)
    assert await store.count_prunable(retention) == 1
    assert await prune_all(store, retention) == 1
    assert await remaining(store) == {at_edge.execution_id}


async def test_failed_events_have_their_own_retention_and_pending_ones_stay(store: Any) -> None:
    now = utcnow()
    dispatched, failed_young, failed_old, pending = (
        event(now - 40 * DAY),
        event(now - 40 * DAY),
        event(now - 100 * DAY),
        event(now - 400 * DAY),
    )
    await store.record([dispatched, failed_young, failed_old, pending])
    await settle(
        store,
        {
            dispatched.execution_id: "dispatched",
            failed_young.execution_id: "failed",
            failed_old.execution_id: "failed",
            pending.execution_id: "pending",
        },
    )
    retention = Retention.at(now, 30 * 86400, 90 * 86400)
    assert await store.count_prunable(retention) == 2
    assert await prune_all(store, retention) == 2
    assert await remaining(store) == {failed_young.execution_id, pending.execution_id}
    # Off means off: with both retentions 0 nothing is even counted.
    assert await store.count_prunable(Retention.at(now, 0, 0)) == 0


async def test_dedupe_holds_within_retention_and_a_pruned_key_may_fire_again(store: Any) -> None:
    now = utcnow()
    old, young = event(now - 40 * DAY, key="old"), event(now - DAY, key="young")
    await store.record([old, young])
    await settle(store, {old.execution_id: "dispatched", young.execution_id: "dispatched"})
    await prune_all(store, Retention.at(now, 30 * 86400, 90 * 86400))
    [(again, created)] = await store.record([event(now, key="young")])
    assert (created, again.execution_id) == (False, young.execution_id)
    [(fresh, created)] = await store.record([event(now, key="old")])
    assert created and fresh.execution_id != old.execution_id


async def test_events_either_side_of_midnight_utc_are_recorded_and_dedupe(store: Any) -> None:
    midnight = datetime.combine(utcnow().date() - 3 * DAY, datetime.min.time(), UTC)
    before, after = (
        event(midnight - timedelta(milliseconds=1), key="before"),
        event(midnight, key="after"),
    )
    results = await store.record([before, after])
    assert [created for _, created in results] == [True, True]
    repeats = await store.record([event(midnight, key="before"), event(midnight, key="after")])
    assert [(e.execution_id, c) for e, c in repeats] == [
        (before.execution_id, False),
        (after.execution_id, False),
    ]
    assert (await store.get_event(before.execution_id)).fired_at == before.fired_at


async def test_the_prune_loop_stops_when_told(store: Any) -> None:
    """``stop`` is asked before every step: true at once deletes nothing; true after the first
    step leaves exactly what that one step (FIRST_BATCH events) did not delete."""
    old = utcnow() - 40 * DAY
    batch = [event(old) for _ in range(3 * FIRST_BATCH)]
    await store.record(batch)
    await settle(store, {e.execution_id: "dispatched" for e in batch})
    retention = Retention(utcnow() - DAY, None)
    assert await prune_all(store, retention, stop=lambda: True) == 0
    assert await store.count_prunable(retention) == 3 * FIRST_BATCH
    asked = 0

    def after_one_step() -> bool:
        nonlocal asked
        asked += 1
        return asked > 1

    assert await prune_all(store, retention, stop=after_one_step) == FIRST_BATCH
    assert asked == 2
    # SQLite deleted FIRST_BATCH rows; PostgreSQL, whose events here share one expired
    # partition, released FIRST_BATCH of its dedupe keys: the rows go with the partition.
    left = 3 * FIRST_BATCH if isinstance(store, PostgresStore) else 2 * FIRST_BATCH
    assert len(await remaining(store)) == left
    # Not told to stop, it finishes the rest.
    assert await prune_all(store, retention, rest=False) == 2 * FIRST_BATCH
    assert await remaining(store) == set()
