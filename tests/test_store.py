"""One contract suite for the Store, run on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wfsched.errors import NotFound, StoreError
from wfsched.models import (
    DispatchOutcome,
    NewEvent,
    TriggerSpec,
    WorkflowSpec,
    new_execution_id,
    utcnow,
)
from wfsched.spec import spec_hash

pytestmark = pytest.mark.anyio


def make_spec(workflow_id: str, *trigger_ids: str, extra: str = "") -> WorkflowSpec:
    doc: dict[str, Any] = {
        "id": workflow_id,
        "triggers": [{"type": "manual", "id": t} for t in trigger_ids or ("manual",)],
    }
    if extra:
        doc["name"] = extra
    triggers = tuple(TriggerSpec(id=t["id"], type="manual") for t in doc["triggers"])
    return WorkflowSpec(id=workflow_id, name=extra or workflow_id, triggers=triggers,
                        document=doc, spec_hash=spec_hash(doc))


def new_event(workflow_id: str = "wf", key: str | None = None, trigger_id: str = "manual") -> NewEvent:
    return NewEvent(execution_id=new_execution_id(), workflow_id=workflow_id,
                    trigger_id=trigger_id, trigger_type="manual",
                    dedupe_key=key or new_execution_id(), payload={"n": 1}, fired_at=utcnow())


async def test_it_creates_updates_and_reports_unchanged(store: Any) -> None:
    assert await store.apply([make_spec("a"), make_spec("b")]) == ["created", "created"]
    assert await store.apply([make_spec("a")]) == ["unchanged"]
    assert await store.apply([make_spec("a", extra="renamed")]) == ["updated"]
    deployments = await store.list_deployments()
    assert [d.workflow_id for d in deployments] == ["a", "b"]
    assert deployments[0].name == "renamed"
    assert deployments[0].state == "active"


async def test_it_bumps_the_revision_on_every_change(store: Any) -> None:
    r0 = await store.revision()
    await store.apply([make_spec("a")])
    r1 = await store.revision()
    await store.apply([make_spec("a")])
    assert await store.revision() == r1 > r0
    await store.set_state(["a"], "paused")
    assert await store.revision() > r1


async def test_it_pauses_resumes_and_undeploys_all_or_nothing(store: Any) -> None:
    await store.apply([make_spec("a")])
    with pytest.raises(NotFound):
        await store.set_state(["a", "missing"], "paused")
    assert (await store.get_deployment("a")).state == "active"
    before = (await store.get_deployment("a")).active_since
    await store.set_state(["a"], "paused")
    assert (await store.get_deployment("a")).state == "paused"
    await store.set_state(["a"], "active")
    assert (await store.get_deployment("a")).active_since > before
    with pytest.raises(NotFound):
        await store.undeploy(["a", "missing"])
    await store.undeploy(["a"])
    with pytest.raises(NotFound):
        await store.get_deployment("a")


async def test_it_keeps_cursors_of_triggers_that_stay(store: Any) -> None:
    await store.apply([make_spec("a", "t1", "t2")])
    await store.set_cursor("a", "t1", {"last": 5})
    await store.set_cursor("a", "t2", {"last": 7})
    await store.apply([make_spec("a", "t1", "t3")])
    assert await store.get_cursor("a", "t1") == {"last": 5}
    assert await store.get_cursor("a", "t2") is None
    assert {s.trigger_id for s in await store.trigger_states("a")} == {"t1", "t3"}


async def test_it_refuses_a_stale_fencing_token(store: Any) -> None:
    await store.apply([make_spec("a")])
    await store.set_cursor("a", "manual", {"uid": 1}, fence=5)
    await store.set_cursor("a", "manual", {"uid": 2}, fence=6)
    with pytest.raises(StoreError):
        await store.set_cursor("a", "manual", {"uid": 3}, fence=5)
    assert await store.get_cursor("a", "manual") == {"uid": 2}


async def test_it_records_a_dedupe_key_once_and_returns_the_first_event(store: Any) -> None:
    first = new_event(key="k1")
    [(event, created)] = await store.record([first])
    assert created and event.execution_id == first.execution_id
    [(again, created2)] = await store.record([new_event(key="k1")])
    assert not created2 and again.execution_id == first.execution_id
    assert again.payload == {"n": 1}
    assert len(await store.history("wf")) == 1


async def test_it_records_a_batch_with_duplicates_inside(store: Any) -> None:
    batch = [new_event(key="x"), new_event(key="y"), new_event(key="x")]
    results = await store.record(batch)
    assert [c for _, c in results] == [True, True, False]
    assert results[2][0].execution_id == batch[0].execution_id


async def test_concurrent_recorders_never_record_a_key_twice(store: Any) -> None:
    keys = [f"k{i}" for i in range(30)]
    created: list[bool] = []

    async def worker() -> None:
        for key in keys:
            [(_, c)] = await store.record([new_event(key=key)])
            created.append(c)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(worker)
    assert created.count(True) == 30
    assert len(await store.history("wf", limit=1000)) == 30


async def test_claims_are_exclusive_and_expire(store: Any) -> None:
    await store.record([new_event() for _ in range(5)])
    now = utcnow() + timedelta(seconds=1)
    a = await store.claim("a", 3, 10, now)
    b = await store.claim("b", 10, 10, now)
    assert len(a) == 3 and len(b) == 2
    assert not {e.execution_id for e in a} & {e.execution_id for e in b}
    assert await store.claim("c", 10, 10, now) == []
    later = now + timedelta(seconds=11)
    assert len(await store.claim("c", 10, 10, later)) == 5


async def test_finish_writes_attempts_and_only_for_the_owner(store: Any) -> None:
    [(e1, _), (e2, _), (e3, _)] = await store.record([new_event() for _ in range(3)])
    now = utcnow() + timedelta(seconds=1)
    await store.claim("me", 10, 10, now)
    retry_at = now + timedelta(seconds=30)
    await store.finish("someone-else", [DispatchOutcome(execution_id=e1.execution_id,
                                                        status="dispatched")])
    assert (await store.get_event(e1.execution_id)).status == "pending"
    await store.finish("me", [
        DispatchOutcome(execution_id=e1.execution_id, status="dispatched"),
        DispatchOutcome(execution_id=e2.execution_id, status="pending", error="503",
                        next_attempt_at=retry_at),
        DispatchOutcome(execution_id=e3.execution_id, status="failed", error="400 Bad Request"),
    ])
    got1, got2, got3 = [await store.get_event(e.execution_id) for e in (e1, e2, e3)]
    assert (got1.status, got1.attempts) == ("dispatched", 1) and got1.dispatched_at
    assert (got2.status, got2.attempts, got2.last_error) == ("pending", 1, "503")
    assert (got3.status, got3.last_error) == ("failed", "400 Bad Request")
    assert await store.claim("me", 10, 10, now) == []
    assert [e.execution_id for e in await store.claim("me", 10, 10, retry_at)] == [e2.execution_id]
    assert await store.next_due() == retry_at
    assert [e.execution_id for e in await store.history(status="failed")] == [e3.execution_id]


async def test_requeue_makes_failed_events_pending_again(store: Any) -> None:
    [(e, _)] = await store.record([new_event()])
    now = utcnow() + timedelta(seconds=1)
    await store.claim("me", 1, 10, now)
    await store.finish("me", [DispatchOutcome(execution_id=e.execution_id, status="failed",
                                              error="x")])
    [again] = await store.requeue([e.execution_id], now)
    assert again.status == "pending" and again.execution_id == e.execution_id
    with pytest.raises(NotFound):
        await store.requeue(["nope"], now)


async def test_history_is_newest_first_and_filters(store: Any) -> None:
    await store.record([new_event("a"), new_event("b"), new_event("a", trigger_id="t2")])
    history = await store.history()
    assert [e.execution_id for e in history] == sorted((e.execution_id for e in history),
                                                       reverse=True)
    assert {e.workflow_id for e in await store.history("a")} == {"a"}
    assert len(await store.history(limit=2)) == 2
    last = await store.last_events("a")
    assert set(last) == {"manual", "t2"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=12))
def test_dedupe_property_one_event_per_key(tmp_path_factory: pytest.TempPathFactory,
                                           keys: list[str]) -> None:
    from wfsched.daemon import open_store

    async def body() -> None:
        store = open_store(f"sqlite:///{tmp_path_factory.mktemp('h')}/x.db")
        await store.open()
        try:
            results = await store.record([new_event(key=k) for k in keys])
            assert sum(c for _, c in results) == len(set(keys))
            assert len(await store.history(limit=100)) == len(set(keys))
        finally:
            await store.close()

    anyio.run(body)
