"""The Store's heartbeat, run and ledger methods, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.test_store import make_spec
from wfsched.models import DaemonRun, NewEvent, Occurrence, new_execution_id, utcnow

pytestmark = pytest.mark.anyio


async def test_heartbeats_make_runs_and_a_clean_stop_ends_them(store: Any) -> None:
    t0 = utcnow() - timedelta(minutes=10)
    first = DaemonRun(replica_id="a:1", started_at=t0, last_seen=t0, listen="127.0.0.1:1")
    await store.beat(first)
    await store.beat(DaemonRun(replica_id="a:1", started_at=t0, last_seen=t0 + timedelta(
        seconds=30), listen="127.0.0.1:1"))  # fmt: skip
    await store.end_beat(DaemonRun(replica_id="a:1", started_at=t0, last_seen=t0 + timedelta(
        seconds=31)))  # fmt: skip
    t1 = t0 + timedelta(minutes=5)
    await store.beat(DaemonRun(replica_id="a:1", started_at=t1, last_seen=t1, listen="x"))
    runs = await store.daemon_runs(t0 - timedelta(hours=1))
    assert [(r.started_at, r.last_seen, r.live) for r in runs] == [
        (t0, t0 + timedelta(seconds=31), False),
        (t1, t1, True),
    ]
    assert runs[1].listen == "x"
    assert [r.started_at for r in await store.daemon_runs(t1)] == [t1]


async def test_occurrences_round_trip_and_prune_keeps_the_newest(store: Any) -> None:
    now = utcnow()
    old = now - timedelta(days=10)
    rows = [
        Occurrence(workflow_id="w", trigger_id="t", trigger_type="webhook",
                   at=old + timedelta(seconds=i), outcome="refused", reason=f"401 #{i}")
        for i in range(5)
    ] + [
        Occurrence(workflow_id="w", trigger_id="t", trigger_type="webhook", at=now,
                   outcome="deduplicated", reason="repeat", execution_id="E1")
    ]  # fmt: skip
    await store.add_occurrences(rows)
    got = await store.occurrences("w", old, now + timedelta(seconds=1))
    assert [o.reason for o in got] == [f"401 #{i}" for i in range(5)] + ["repeat"]
    assert got[-1].execution_id == "E1" and got[-1].at == now
    # Older than a week and beyond the newest 3 of the trigger: the two oldest go.
    assert await store.prune_ledger(now - timedelta(days=7), 3) == 3
    got = await store.occurrences("w", old, now + timedelta(seconds=1))
    assert [o.reason for o in got] == ["401 #3", "401 #4", "repeat"]


async def test_deployment_log_records_create_pause_resume(store: Any) -> None:
    await store.apply([make_spec("w")])
    await store.set_state(["w"], "paused")
    await store.set_state(["w"], "paused")  # no change, no entry
    await store.set_state(["w"], "active")
    log = await store.deployment_log("w")
    assert [s for _, s in log] == ["active", "paused", "active"]
    assert log[0][0] <= log[1][0] <= log[2][0]
    await store.undeploy(["w"])
    assert await store.deployment_log("w") == []


async def test_events_between_by_fired_or_scheduled_and_pending(store: Any) -> None:
    await store.apply([make_spec("w")])
    now = utcnow()
    late = NewEvent(
        execution_id=new_execution_id(), workflow_id="w", trigger_id="c", trigger_type="cron",
        dedupe_key="c@1", payload={}, fired_at=now, scheduled_at=now - timedelta(hours=2),
    )  # fmt: skip
    plain = NewEvent(
        execution_id=new_execution_id(), workflow_id="w", trigger_id="m", trigger_type="manual",
        dedupe_key="m1", payload={}, fired_at=now,
    )  # fmt: skip
    await store.record([late, plain])
    window = await store.events_between("w", now - timedelta(hours=3), now - timedelta(hours=1))
    assert [e.execution_id for e in window] == [late.execution_id]
    window = await store.events_between("w", now - timedelta(minutes=1), now + timedelta(hours=1))
    assert {e.execution_id for e in window} == {late.execution_id, plain.execution_id}
    count, since = await store.pending_events("w")
    assert count == 2 and since == now
    assert (await store.pending_events("other"))[0] == 0
