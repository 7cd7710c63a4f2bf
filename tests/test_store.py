"""One contract suite for the Store, run on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wfsched.errors import NotFound, StoreError
from wfsched.models import (
    Claim,
    DispatchOutcome,
    NewEvent,
    TriggerSpec,
    WorkflowSpec,
    new_execution_id,
    utcnow,
)
from wfsched.spec import spec_hash
from wfsched.store.common import migrations
from wfsched.timer.rearm import scan

pytestmark = pytest.mark.anyio


def make_spec(workflow_id: str, *trigger_ids: str, extra: str = "") -> WorkflowSpec:
    doc: dict[str, Any] = {
        "id": workflow_id,
        "triggers": [{"type": "manual", "id": t} for t in trigger_ids or ("manual",)],
    }
    if extra:
        doc["name"] = extra
    triggers = tuple(TriggerSpec(id=t["id"], type="manual") for t in doc["triggers"])
    return WorkflowSpec(
        id=workflow_id,
        name=extra or workflow_id,
        triggers=triggers,
        document=doc,
        spec_hash=spec_hash(doc),
    )


def new_event(
    workflow_id: str = "wf",
    key: str | None = None,
    trigger_id: str = "manual",
    fired_at: datetime | None = None,
) -> NewEvent:
    return NewEvent(
        execution_id=new_execution_id(),
        workflow_id=workflow_id,
        trigger_id=trigger_id,
        trigger_type="manual",
        dedupe_key=key or new_execution_id(),
        payload={"n": 1},
        fired_at=fired_at or utcnow(),
    )


async def test_it_creates_updates_and_reports_unchanged(store: Any) -> None:
    assert await store.apply([make_spec("a"), make_spec("b")]) == ["created", "created"]
    assert await store.apply([make_spec("a")]) == ["unchanged"]
    assert await store.apply([make_spec("a", extra="renamed")]) == ["updated"]
    deployments = await store.list_deployments()
    assert [d.workflow_id for d in deployments] == ["a", "b"]
    assert deployments[0].name == "renamed"
    assert deployments[0].state == "active"


async def test_it_reads_a_page_of_deployments_by_id(store: Any) -> None:
    await store.apply([make_spec(w) for w in ("c", "a", "b")])
    page = await store.get_deployments(["c", "missing", "a"])
    assert [d.workflow_id for d in page] == ["a", "c"]
    assert page == [await store.get_deployment("a"), await store.get_deployment("c")]
    assert await store.get_deployments([]) == []


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


async def test_record_can_lease_what_it_creates_to_a_dispatcher(store: Any) -> None:
    taken = new_event(key="taken")
    await store.record([taken])
    now = utcnow() + timedelta(seconds=1)
    await store.claim("earlier", 10, 60, now)  # ``taken`` is leased elsewhere: untouched below
    batch = [new_event(key="taken"), new_event(), new_event(key="k"), new_event(key="k")]
    batch += [new_event(), new_event()]
    claim = Claim(owner="local", until=now + timedelta(seconds=10), limit=4)
    result = await store.record(batch, claim)
    assert [created for _, created in result] == [False, True, True, False, True, True]
    # The created events among the first four are leased to "local"; the rest are claimable.
    rest = await store.claim("other", 10, 10, now)
    assert {e.execution_id for e in rest} == {batch[4].execution_id, batch[5].execution_id}
    outcomes = [
        DispatchOutcome(execution_id=e.execution_id, status="dispatched") for e in batch[1:3]
    ]
    await store.finish("local", outcomes)
    assert [(await store.get_event(e.execution_id)).status for e in batch[1:3]] == [
        "dispatched",
        "dispatched",
    ]
    # The lease lapses like any other claim.
    unsent = await store.record([new_event()], Claim("gone", now + timedelta(seconds=5), 1))
    later = now + timedelta(seconds=6)
    assert [e.execution_id for e in await store.claim("other", 10, 10, later)] == [
        unsent[0][0].execution_id
    ]


async def test_renew_extends_only_a_lease_still_held(store: Any) -> None:
    now = utcnow() + timedelta(seconds=1)
    held = now + timedelta(seconds=5)
    results = await store.record([new_event() for _ in range(3)], Claim("me", held, 3))
    a, b, c = (e for e, _ in results)
    await store.finish("me", [DispatchOutcome(execution_id=c.execution_id, status="dispatched")])
    later = now + timedelta(seconds=6)  # the lease has lapsed: another dispatcher takes one
    [taken] = await store.claim("other", 1, 10, later)
    until = later + timedelta(seconds=10)
    ids = [a.execution_id, b.execution_id, c.execution_id]
    mine = {a.execution_id, b.execution_id} - {taken.execution_id}
    assert await store.renew("me", ids, held, until) == mine
    assert await store.claim("third", 10, 10, later + timedelta(seconds=5)) == []
    assert await store.renew("me", ids, held, until) == set()  # no longer the lease held
    assert await store.renew("me", ids, until, until + timedelta(seconds=1)) == mine


async def test_release_frees_only_the_owners_leases(store: Any) -> None:
    now = utcnow() + timedelta(seconds=1)
    results = await store.record([new_event() for _ in range(3)], Claim("me", now, 2))
    a, b, c = (e for e, _ in results)
    [theirs] = await store.claim("other", 10, 60, now)  # ``c``, recorded unleased
    await store.release("me", [a.execution_id, b.execution_id, c.execution_id])
    claimed = await store.claim("third", 10, 60, now)
    assert theirs.execution_id == c.execution_id
    assert {e.execution_id for e in claimed} == {a.execution_id, b.execution_id}


async def test_finish_writes_attempts_and_only_for_the_owner(store: Any) -> None:
    [(e1, _), (e2, _), (e3, _)] = await store.record([new_event() for _ in range(3)])
    now = utcnow() + timedelta(seconds=1)
    await store.claim("me", 10, 10, now)
    retry_at = now + timedelta(seconds=30)
    await store.finish(
        "someone-else", [DispatchOutcome(execution_id=e1.execution_id, status="dispatched")]
    )
    assert (await store.get_event(e1.execution_id)).status == "pending"
    await store.finish(
        "me",
        [
            DispatchOutcome(execution_id=e1.execution_id, status="dispatched"),
            DispatchOutcome(
                execution_id=e2.execution_id,
                status="pending",
                error="503",
                next_attempt_at=retry_at,
            ),
            DispatchOutcome(execution_id=e3.execution_id, status="failed", error="400 Bad Request"),
        ],
    )
    got1, got2, got3 = [await store.get_event(e.execution_id) for e in (e1, e2, e3)]
    assert (got1.status, got1.attempts) == ("dispatched", 1) and got1.dispatched_at
    assert (got2.status, got2.attempts, got2.last_error) == ("pending", 1, "503")
    assert (got3.status, got3.last_error) == ("failed", "400 Bad Request")
    assert await store.claim("me", 10, 10, now) == []
    assert [e.execution_id for e in await store.claim("me", 10, 10, retry_at)] == [e2.execution_id]
    assert await store.next_due() == retry_at
    assert [e.execution_id for e in await store.history(status="failed")] == [e3.execution_id]


async def test_finish_with_fired_at_deliveries_alone_and_mixed(store: Any) -> None:
    """Outcomes that carry their event's fired_at (as the dispatcher's do): a batch of plain
    deliveries, then a batch mixing a delivery that keeps its last error with a retry."""
    events = [e for e, _ in await store.record([new_event() for _ in range(4)])]
    now = utcnow() + timedelta(seconds=1)
    await store.claim("me", 10, 10, now)
    sent_at = now - timedelta(milliseconds=5)

    def outcome(e: Any, status: Any, **kw: Any) -> DispatchOutcome:
        return DispatchOutcome(
            execution_id=e.execution_id, status=status, fired_at=e.fired_at, **kw
        )

    await store.finish("someone-else", [outcome(events[0], "dispatched", dispatched_at=sent_at)])
    assert (await store.get_event(events[0].execution_id)).status == "pending"
    await store.finish(
        "me",
        [outcome(events[0], "dispatched", dispatched_at=sent_at), outcome(events[1], "dispatched")],
    )
    first, second = [await store.get_event(e.execution_id) for e in events[:2]]
    assert (first.status, first.attempts, first.last_error) == ("dispatched", 1, None)
    assert first.dispatched_at == sent_at
    assert second.status == "dispatched" and second.dispatched_at is not None
    retry_at = now + timedelta(seconds=30)
    await store.finish(
        "me",
        [
            outcome(events[2], "dispatched", error="503 before", dispatched_at=sent_at),
            outcome(events[3], "pending", error="503", next_attempt_at=retry_at),
        ],
    )
    third, fourth = [await store.get_event(e.execution_id) for e in events[2:]]
    assert (third.status, third.last_error, third.dispatched_at) == (
        "dispatched",
        "503 before",
        sent_at,
    )
    assert (fourth.status, fourth.last_error, fourth.next_attempt_at) == (
        "pending",
        "503",
        retry_at,
    )
    assert await store.claim("me", 10, 10, now) == []


async def test_finish_writes_outcomes_alike_and_each_its_own_in_one_batch(store: Any) -> None:
    """A batch settled at once (one status, error and dispatch time: written as a group) and
    a batch of sends' outcomes, each with its own dispatch time (written row by row)."""
    events = [e for e, _ in await store.record([new_event() for _ in range(10)])]
    now = utcnow() + timedelta(seconds=1)
    await store.claim("me", 10, 10, now)
    at = now - timedelta(seconds=1)
    alike = [
        DispatchOutcome(execution_id=e.execution_id, status="dispatched", dispatched_at=at)
        for e in events[:4]
    ]
    await store.finish("me", alike)
    own = [
        DispatchOutcome(
            execution_id=e.execution_id,
            status="dispatched",
            dispatched_at=at + timedelta(milliseconds=i),
        )
        for i, e in enumerate(events[4:9])
    ]
    retry_at = now + timedelta(seconds=30)
    own.append(
        DispatchOutcome(
            execution_id=events[9].execution_id,
            status="pending",
            error="503",
            next_attempt_at=retry_at,
        )
    )
    await store.finish("me", own)
    got = [await store.get_event(e.execution_id) for e in events]
    assert [(g.status, g.attempts, g.dispatched_at) for g in got[:4]] == [("dispatched", 1, at)] * 4
    assert [(g.status, g.dispatched_at) for g in got[4:9]] == [
        ("dispatched", at + timedelta(milliseconds=i)) for i in range(5)
    ]
    assert (got[9].status, got[9].last_error, got[9].next_attempt_at) == (
        "pending",
        "503",
        retry_at,
    )
    assert all(g.last_error is None for g in got[:9])
    assert await store.claim("other", 10, 10, now) == []


async def test_requeue_makes_failed_events_pending_again(store: Any) -> None:
    [(e, _)] = await store.record([new_event()])
    now = utcnow() + timedelta(seconds=1)
    await store.claim("me", 1, 10, now)
    await store.finish(
        "me", [DispatchOutcome(execution_id=e.execution_id, status="failed", error="x")]
    )
    [again] = await store.requeue([e.execution_id], now)
    assert again.status == "pending" and again.execution_id == e.execution_id
    with pytest.raises(NotFound):
        await store.requeue(["nope"], now)


async def test_history_is_newest_first_and_filters(store: Any) -> None:
    await store.record([new_event("a"), new_event("b"), new_event("a", trigger_id="t2")])
    history = await store.history()
    assert [e.execution_id for e in history] == sorted(
        (e.execution_id for e in history), reverse=True
    )
    assert {e.workflow_id for e in await store.history("a")} == {"a"}
    assert len(await store.history(limit=2)) == 2
    last = await store.last_events("a")
    assert set(last) == {"manual", "t2"}


async def test_history_filters_by_trigger_and_time_and_pages_by_execution_id(store: Any) -> None:
    now = utcnow()
    early = new_event("a", fired_at=now - timedelta(hours=2))
    middle = new_event("a", trigger_id="t2", fired_at=now - timedelta(hours=1))
    late = new_event("a", fired_at=now)
    await store.record([early, middle, late])
    assert [e.execution_id for e in await store.history(trigger_id="t2")] == [middle.execution_id]
    window = await store.history(since=now - timedelta(hours=1), until=now)
    assert [e.execution_id for e in window] == [middle.execution_id]
    first = await store.history("a", limit=2)
    assert [e.execution_id for e in first] == [late.execution_id, middle.execution_id]
    # An event recorded between two pages sorts above them: the next page is unchanged.
    await store.record([new_event("a")])
    rest = await store.history("a", limit=2, before=first[-1].execution_id)
    assert [e.execution_id for e in rest] == [early.execution_id]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=12))
def test_dedupe_property_one_event_per_key(
    tmp_path_factory: pytest.TempPathFactory, keys: list[str]
) -> None:
    from wfsched.backends import open_store

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


# ------------------------------------------------------------------------------------------
# Batched code paths of the PostgreSQL backend (plans a whole apply/record in memory), checked
# against SQLite's statement-at-a-time semantics: run on both backends.
# ------------------------------------------------------------------------------------------


def typed_spec(workflow_id: str, extra: str, **types: str) -> WorkflowSpec:
    doc: dict[str, Any] = {
        "id": workflow_id,
        "name": extra,
        "triggers": [{"type": t, "id": i} for i, t in types.items()],
    }
    triggers = tuple(TriggerSpec(id=i, type=t) for i, t in types.items())
    return WorkflowSpec(
        id=workflow_id, name=extra, triggers=triggers, document=doc, spec_hash=spec_hash(doc)
    )


async def test_apply_with_a_repeated_id_acts_spec_by_spec(store: Any) -> None:
    await store.apply([typed_spec("a", "v0", t1="manual", t2="manual", t3="manual")])
    for t in ("t1", "t2", "t3"):
        await store.set_cursor("a", t, {"keep": t})
    actions = await store.apply(
        [
            typed_spec("a", "v1", t1="cron", t2="manual", t3="manual"),  # t1 reset
            typed_spec("a", "v1", t1="cron", t2="manual", t3="manual"),
            typed_spec("a", "v2", t1="manual", t2="manual"),  # t1 reset again, t3 dropped
            typed_spec("b", "v0", t9="manual"),
            typed_spec("a", "v3", t1="manual", t2="manual", t4="manual"),
        ]
    )
    assert actions == ["updated", "unchanged", "updated", "created", "updated"]
    states = {s.trigger_id: (s.type, s.cursor) for s in await store.trigger_states("a")}
    assert states == {
        "t1": ("manual", None),
        "t2": ("manual", {"keep": "t2"}),
        "t4": ("manual", None),
    }
    a, b = await store.get_deployment("a"), await store.get_deployment("b")
    assert (a.name, b.name) == ("v3", "v0")
    assert a.revision == await store.revision() == b.revision + 1


async def test_record_mixes_new_existing_and_repeated_keys(store: Any) -> None:
    [(old, _)] = await store.record([new_event(key="old")])
    batch = [
        new_event(key="new"),
        new_event(key="old"),
        new_event(key="new"),
        new_event(key="old"),
        new_event("other", key="new"),
    ]
    results = await store.record(batch)
    assert [c for _, c in results] == [True, False, False, False, True]
    assert [e.execution_id for e, _ in results] == [
        batch[0].execution_id,
        old.execution_id,
        batch[0].execution_id,
        old.execution_id,
        batch[4].execution_id,
    ]
    assert results[2][0] == await store.get_event(batch[0].execution_id)
    assert results[1][0] == await store.get_event(old.execution_id)


async def test_it_answers_ping_and_a_write_probe_and_keeps_trigger_health(store: Any) -> None:
    await store.ping()
    await store.check_writable()
    await store.apply([make_spec("a", "t1", "t2")])
    await store.set_health("a", "t2", "failing", "IMAP login refused")
    states = {s.trigger_id: (s.health, s.last_error) for s in await store.trigger_states()}
    assert states == {"t1": ("healthy", None), "t2": ("failing", "IMAP login refused")}


async def test_lock_exclusive_claims_a_sqlite_file_and_lets_postgres_replicas_share(
    store_url: str,
) -> None:
    from wfsched.backends import open_store

    first, second = open_store(store_url), open_store(store_url)
    first.lock_exclusive()
    try:
        assert first.single_daemon is store_url.startswith("sqlite")
        if store_url.startswith("sqlite"):
            with pytest.raises(StoreError, match="another wfsched daemon already serves"):
                second.lock_exclusive()
        else:
            second.lock_exclusive()  # replicas share the database: nothing to claim
            await second.open()
            await second.ping()
    finally:
        await first.close()
        await second.close()
    third = open_store(store_url)
    third.lock_exclusive()  # free again once its holder closed
    await third.close()


async def test_change_feed_reports_commits_made_through_another_connection(
    store: Any, store_url: str
) -> None:
    from contextlib import aclosing

    from wfsched.backends import open_store

    other = open_store(store_url)
    await other.open()
    feed = store.changes()
    paced = 0
    send, received = anyio.create_memory_object_stream[str](1000)

    async def pace() -> None:
        nonlocal paced
        paced += 1
        await anyio.sleep(0.05)

    async def watcher() -> None:
        async with aclosing(feed.watch(pace)) as changes:
            async for change in changes:
                await send.send(change)

    async def expect(change: str) -> None:
        # A feed may report more than happened (another test's NOTIFY), never less.
        with anyio.fail_after(2):
            while await received.receive() != change:
                pass

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher)
            with anyio.fail_after(2):  # first every kind once: anything may have changed
                assert {await received.receive(), await received.receive()} == {
                    "deployments",
                    "events",
                }
            await other.apply([make_spec("a")])
            await expect("deployments")
            assert await store.revision() == await other.revision() > 0
            await other.record([new_event("a")])
            await expect("events")
            assert len(await store.history("a")) == 1
            await other.set_state(["a"], "paused")
            await expect("deployments")
            tg.cancel_scope.cancel()
    finally:
        await other.close()
    # A polling feed looks on its caller's pace (the daemon's beat); a pushed one never waits.
    assert (paced > 0) is not feed.pushed


async def test_sqlite_change_feed_is_quiet_while_nothing_commits(sqlite_url: str) -> None:
    from wfsched.store.sqlite import SqliteStore
    from wfsched.store.sqlite.changes import FilePoll

    store = SqliteStore(sqlite_url)
    await store.open()
    await store.apply([make_spec("a")])
    feed = FilePoll(store.path, recheck=0.6)
    looks: list[float] = []
    reports: dict[int, list[str]] = {}  # look number -> what that look reported

    async def pace() -> None:
        await anyio.sleep(0.02)
        looks.append(anyio.current_time())

    async def watcher() -> None:
        async for change in feed.watch(pace):
            reports.setdefault(len(looks), []).append(change)

    async def report_after(look: int) -> int:
        with anyio.fail_after(2):
            while not [n for n in reports if n > look]:
                await anyio.sleep(0.01)
        await anyio.sleep(0.01)  # let the look finish reporting
        return min(n for n in reports if n > look)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher)
            first = await report_after(0)
            await anyio.sleep(0.3)  # idle: many looks, no report
            assert len(looks) > first + 5
            assert list(reports) == [first]
            committed = len(looks)
            await store.set_state(["a"], "paused")
            seen = await report_after(committed)
            assert looks[seen - 1] - looks[committed - 1] < 0.5
            assert sorted(reports[seen]) == ["deployments", "events"]
            # Nothing more commits: the safety net reports again after ``recheck``.
            again = await report_after(seen)
            assert looks[again - 1] - looks[seen - 1] >= 0.55
            tg.cancel_scope.cancel()
    finally:
        await store.close()


# ------------------------------------------------------------------------------------------
# PostgreSQL only: replicas sharing one database, notifications, failures.
# ------------------------------------------------------------------------------------------


async def open_pg(url: str) -> Any:
    from wfsched.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    return store


async def test_scan_deployed_pages_heads_with_their_triggers_and_cursor_fields(
    store: Any,
) -> None:
    bare = WorkflowSpec(id="d", name="d", triggers=(), document={"id": "d"}, spec_hash="h")
    await store.apply([make_spec("a", "t1", "t2"), make_spec("b"), make_spec("c", "x"), bare])
    await store.set_state(["b"], "paused")
    await store.set_cursors(
        [("a", "t2", {"key": "k", "last": None, "arm": "rec"}), ("c", "x", ["not", "a", "map"])]
    )
    fields = ("key", "last", "arm")
    rows: list[tuple[Any, ...]] = []
    after = ""
    while page := await store.scan_deployed(after, 2, cursor_fields=fields):
        rows += page
        after = page[-1][0]
    assert [(r[0], r[2], r[4], r[5], r[6], r[7:]) for r in rows] == [
        ("a", "active", "t1", "manual", "healthy", (None, None, None)),
        ("a", "active", "t2", "manual", "healthy", ("k", None, "rec")),
        ("b", "paused", "manual", "manual", "healthy", (None, None, None)),
        ("c", "active", "x", "manual", "healthy", (None, None, None)),
        ("d", "active", None, None, None, (None, None, None)),
    ]
    deployed = {d.workflow_id: d for d in await store.list_deployments()}
    heads = [h for page in [p async for p in scan(store, cursors=fields)] for h in page]
    assert [(h.workflow_id, h.spec_hash, h.active_since) for h in heads] == [
        (w, d.spec_hash, d.active_since) for w, d in sorted(deployed.items())
    ]
    assert heads[0].triggers == [
        ("t1", "manual", None, "healthy"),
        ("t2", "manual", {"key": "k", "last": None, "arm": "rec"}, "healthy"),
    ]


async def test_scan_deployed_since_a_revision_returns_only_what_changed_after_it(
    store: Any,
) -> None:
    await store.apply([make_spec("a"), make_spec("b"), make_spec("c")])
    revision = await store.revision()
    assert [r[0] for r in await store.scan_deployed("", 10, changed_since=revision)] == []
    await store.apply([make_spec("b", extra="renamed"), make_spec("d")])
    await store.set_state(["c"], "paused")
    await store.undeploy(["a"])
    changed = await store.scan_deployed("", 10, changed_since=revision)
    assert [(r[0], r[2]) for r in changed] == [("b", "active"), ("c", "paused"), ("d", "active")]
    assert await store.deployment_ids() == {"b", "c", "d"}


async def test_pg_replicas_starting_together_migrate_once(pg_url: str) -> None:
    stores: list[Any] = []

    async def start() -> None:
        stores.append(await open_pg(pg_url))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)
    try:
        async with stores[0]._conn() as conn:
            cur = await conn.execute("SELECT version FROM wfsched_schema_migrations")
            expected = [(version,) for version, _ in migrations("postgres")]
            assert sorted(await cur.fetchall()) == expected
        assert await stores[1].revision() == 0
    finally:
        for s in stores:
            await s.close()


async def test_pg_replicas_racing_claim_get_disjoint_events(pg_url: str) -> None:
    a, b = await open_pg(pg_url), await open_pg(pg_url)
    try:
        await a.record([new_event() for _ in range(200)])
        now = utcnow() + timedelta(seconds=1)
        claimed: list[str] = []

        async def worker(store: Any, owner: str) -> None:
            while batch := await store.claim(owner, 7, 60, now):
                claimed.extend(e.execution_id for e in batch)

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(worker, a, f"a{i}")
                tg.start_soon(worker, b, f"b{i}")
        assert len(claimed) == 200
        assert len(set(claimed)) == 200
    finally:
        await a.close()
        await b.close()


async def test_pg_claim_returns_due_events_oldest_first(pg_url: str) -> None:
    store = await open_pg(pg_url)
    try:
        base = utcnow()
        events = [new_event() for _ in range(3)]
        events = [
            NewEvent(
                **{
                    **{f: getattr(e, f) for f in e.__dataclass_fields__},
                    "fired_at": base - timedelta(seconds=i),
                }
            )
            for i, e in enumerate(events)
        ]
        await store.record(events)
        got = await store.claim("me", 10, 10, base + timedelta(seconds=1))
        assert [e.execution_id for e in got] == [e.execution_id for e in reversed(events)]
        assert all(
            e.fired_at.tzinfo is not None and e.fired_at.utcoffset() == timedelta(0) for e in got
        )
    finally:
        await store.close()


async def test_pg_concurrent_deploys_serialise_on_the_revision(pg_url: str) -> None:
    a, b = await open_pg(pg_url), await open_pg(pg_url)
    try:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(a.apply, [make_spec(f"a{i}")])
                tg.start_soon(b.apply, [make_spec(f"b{i}")])
        deployments = await a.list_deployments()
        assert len(deployments) == 20
        assert sorted(d.revision for d in deployments) == list(range(1, 21))
        assert await b.revision() == 20
    finally:
        await a.close()
        await b.close()


# NOTIFY channels are per database, not per schema: tests running in other schemas of the same
# database wake these listeners too, so they wait for what they expect and, to check that
# nothing was sent, look only at notifications from this store's own backends (by pid).


async def test_pg_listen_wakes_on_deploys_and_new_events(pg_url: str) -> None:
    from contextlib import aclosing

    store = await open_pg(pg_url)
    send, received = anyio.create_memory_object_stream[str](1000)

    async def listener() -> None:
        async with aclosing(store.listen(["wfsched_deployments", "wfsched_events"])) as it:
            async for channel in it:
                await send.send(channel)

    async def expect(channel: str) -> None:
        with anyio.fail_after(5):
            while await received.receive() != channel:
                pass

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener)
            # First every channel once: LISTEN is now in effect, re-read state.
            with anyio.fail_after(5):
                first = {await received.receive(), await received.receive()}
            assert first == {"wfsched_deployments", "wfsched_events"}
            await store.apply([make_spec("a")])
            await expect("wfsched_deployments")
            await store.record([new_event(key="k")])
            await expect("wfsched_events")
            await store.set_state(["a"], "paused")
            await expect("wfsched_deployments")
            await store.undeploy(["a"])
            await expect("wfsched_deployments")
            tg.cancel_scope.cancel()
    finally:
        await store.close()


async def test_pg_notifies_exactly_when_something_changed(pg_url: str) -> None:
    import psycopg

    from tests.conftest import PG_DSN

    store = await open_pg(f"{pg_url}&application_name=wfsched-notify-{new_execution_id()}")
    admin = await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True)
    try:
        await admin.execute("LISTEN wfsched_deployments")
        await admin.execute("LISTEN wfsched_events")
        await store.apply([make_spec("a"), make_spec("b")])  # one notification: revision 2
        await store.apply([make_spec("a")])  # unchanged: none
        await store.record([new_event(key="k1"), new_event(key="k2")])  # one per batch
        await store.record([new_event(key="k1")])  # nothing new: none
        await store.set_state(["a"], "paused")  # revision 3
        await store.undeploy(["b"])  # revision 4
        with pytest.raises(NotFound):
            await store.undeploy(["missing"])  # rolled back: none
        got = [n async for n in admin.notifies(timeout=0.5)]
        cur = await admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (store_app_name(store),)
        )
        pids = {r[0] for r in await cur.fetchall()}
        assert [(n.channel, n.payload) for n in got if n.pid in pids] == [
            ("wfsched_deployments", "2"),
            ("wfsched_events", ""),
            ("wfsched_deployments", "3"),
            ("wfsched_deployments", "4"),
        ]
    finally:
        await admin.close()
        await store.close()


async def test_pg_listen_raises_store_error_when_its_connection_dies(pg_url: str) -> None:
    import psycopg

    from tests.conftest import PG_DSN

    store = await open_pg(f"{pg_url}&application_name=wfsched-listen-{new_execution_id()}")
    try:
        it = store.listen(["wfsched_deployments"])
        assert await it.__anext__() == "wfsched_deployments"
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
                (store_app_name(store),),
            )
        with anyio.fail_after(5), pytest.raises(StoreError):
            await it.__anext__()
    finally:
        await store.close()


async def test_pg_change_feed_raises_store_error_when_its_connection_dies_and_resumes(
    pg_url: str,
) -> None:
    import psycopg

    from tests.conftest import PG_DSN

    store = await open_pg(f"{pg_url}&application_name=wfsched-feed-{new_execution_id()}")

    async def never() -> None:
        raise AssertionError("a pushed feed does not wait on the pace")

    try:
        feed = store.changes()
        changes = feed.watch(never)
        assert {await changes.__anext__(), await changes.__anext__()} == {"deployments", "events"}
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
                (store_app_name(store),),
            )
        with anyio.fail_after(5), pytest.raises(StoreError):
            await changes.__anext__()
        resumed = feed.watch(never)  # watching again reconnects and reports everything once
        with anyio.fail_after(5):
            assert {await resumed.__anext__(), await resumed.__anext__()} == {
                "deployments",
                "events",
            }
        await resumed.aclose()
    finally:
        await store.close()


def store_app_name(store: Any) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(store._conninfo)["application_name"])


async def test_pg_pool_replaces_connections_killed_by_a_server_restart(pg_url: str) -> None:
    import psycopg

    from tests.conftest import PG_DSN

    store = await open_pg(f"{pg_url}&application_name=wfsched-pool-{new_execution_id()}")
    try:
        await store.apply([make_spec("a")])
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM"
                " pg_stat_activity WHERE application_name = %s",
                (store_app_name(store),),
            ).fetchone()
            assert killed and killed[0] >= 1
        await store.ping()
        assert [d.workflow_id for d in await store.list_deployments()] == ["a"]
    finally:
        await store.close()


async def test_pg_errors_are_store_errors_without_the_password() -> None:
    from wfsched.store.postgres import PostgresStore

    store = PostgresStore("postgresql://wf:s3cr%40t-pw@127.0.0.1:1/test?connect_timeout=2")
    with pytest.raises(StoreError) as info:
        await store.open()
    message = str(info.value)
    assert "127.0.0.1:1/test" in message
    assert "s3cr" not in message and "t-pw" not in message
    cause: BaseException | None = info.value
    while cause is not None:
        assert "s3cr" not in str(cause)
        cause = cause.__cause__
    with pytest.raises(StoreError, match="not open"):
        await store.ping()


async def test_pg_unknown_ids_and_stale_fences(pg_url: str) -> None:
    store = await open_pg(pg_url)
    try:
        with pytest.raises(NotFound):
            await store.get_event("nope")
        with pytest.raises(NotFound):
            await store.get_deployment("nope")
        await store.apply([make_spec("a")])
        with pytest.raises(StoreError, match="stale fencing token"):
            await store.set_cursor("a", "missing-trigger", 1, fence=1)
        r = await store.revision()
        with pytest.raises(NotFound):
            await store.undeploy(["a", "nope"])
        assert await store.revision() == r  # rolled back with the NotFound
    finally:
        await store.close()


async def test_pg_an_idle_connection_the_server_ended_has_something_to_read(pg_url: str) -> None:
    # What the pool's quick check looks for instead of a round trip (``_has_input``).
    import psycopg

    from tests.conftest import PG_DSN
    from wfsched.store.postgres.connection import _has_input

    conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        await conn.execute("SELECT 1")
        assert not _has_input(conn)
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with anyio.fail_after(5):
            while not _has_input(conn):
                await anyio.sleep(0.01)
    finally:
        await conn.close()
