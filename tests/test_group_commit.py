"""The group commit on a real store: one bad row fails only its caller, a commit has a deadline.

Runs on SQLite and PostgreSQL. A stalled commit is made by holding the store's write lock from
another connection (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``LOCK TABLE``); the daemon tests
check the same through ``wfsched serve`` and its ``store.commit_timeout`` setting.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import psycopg
import pytest

from tests.daemon_proc import Daemon, wait_for
from wfsched.errors import StoreError
from wfsched.models import (
    Claim,
    DispatchOutcome,
    NewEvent,
    TriggerEvent,
    new_execution_id,
    utcnow,
)
from wfsched.recorder import GroupCommitRecorder, _Batch, _Entry
from wfsched.store.sqlite import SqliteStore

HOOK = "/api/v1/public/webhook/workflow/"


def event(payload: dict[str, Any], workflow_id: str = "wf") -> NewEvent:
    execution_id = new_execution_id()
    return NewEvent(
        execution_id=execution_id,
        workflow_id=workflow_id,
        trigger_id="t",
        trigger_type="manual",
        dedupe_key=execution_id,
        payload=payload,
        fired_at=utcnow(),
    )


class Leases:
    """A Handoff that leases every event and keeps what it adopts."""

    def __init__(self) -> None:
        self.adopted: list[TriggerEvent] = []

    def lease(self, events: Sequence[NewEvent]) -> Claim | None:
        return Claim("me", utcnow() + timedelta(minutes=5), len(events))

    def adopt(self, events: list[TriggerEvent]) -> None:
        self.adopted += events

    async def write_settled(self) -> None:
        pass  # settles nothing


@asynccontextmanager
async def running(recorder: GroupCommitRecorder) -> AsyncIterator[GroupCommitRecorder]:
    async with anyio.create_task_group() as tg:
        recorder.start(tg)
        yield recorder
        tg.cancel_scope.cancel()


async def _outcome(recorder: GroupCommitRecorder, e: NewEvent) -> Any:
    try:
        [(recorded, created)] = await recorder.record([e])
    except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
        return exc
    assert created
    return recorded


def _unstorable(store_url: str) -> list[dict[str, Any]]:
    """Payloads the store itself refuses (validation at the edge keeps them out of batches)."""
    bad: list[dict[str, Any]] = [{"s": "\ud800"}]
    if not store_url.startswith("sqlite"):
        bad.append({"s": "a\x00b"})  # jsonb refuses \u0000; SQLite's text holds it
    return bad


@pytest.mark.anyio
async def test_a_row_the_store_rejects_fails_only_its_caller(store: Any, store_url: str) -> None:
    leases = Leases()
    good = [event({"n": i}) for i in range(20)]
    bad = [event(p) for p in _unstorable(store_url)]
    batch = [*good[:10], *bad, *good[10:]]
    outcomes: dict[str, Any] = {}
    async with running(GroupCommitRecorder(store, handoff=leases)) as recorder:

        async def one(e: NewEvent) -> None:
            outcomes[e.execution_id] = await _outcome(recorder, e)

        # Started together: they queue while the first is committed, then share one batch.
        async with anyio.create_task_group() as tg:
            for e in batch:
                tg.start_soon(one, e)
    for e in bad:
        assert isinstance(outcomes[e.execution_id], Exception), outcomes[e.execution_id]
    for e in good:
        assert isinstance(outcomes[e.execution_id], TriggerEvent), outcomes[e.execution_id]
    stored = {e.execution_id: e for e in await store.history("wf", limit=-1)}
    assert set(stored) == {e.execution_id for e in good}
    assert [stored[e.execution_id].payload for e in good] == [e.payload for e in good]
    assert sorted(e.execution_id for e in leases.adopted) == sorted(stored)


class Marker:
    """A payload value whose lifetime a weak reference can watch (stored as its ``str``)."""


@pytest.mark.anyio
async def test_a_committed_batch_is_let_go_at_once_not_at_its_deadline(store: Any) -> None:
    # The deadline watchdog once held every batch, events and payloads, until its deadline:
    # seconds of events for the cyclic GC to walk again and again on a busy ingress.
    async with running(GroupCommitRecorder(store, commit_timeout=600)) as recorder:
        marker = Marker()
        watch = weakref.ref(marker)
        [(recorded, created)] = await recorder.record([event({"m": marker})])
        assert created
        del marker, recorded
        # The future that answered this caller holds the result until the loop's callback
        # that woke the caller returns: one turn of the loop, not the batch's deadline.
        await anyio.lowlevel.checkpoint()
        gc.collect()
        assert watch() is None


@pytest.mark.anyio
async def test_a_failed_batch_logs_nothing_for_a_caller_gone_before_it_woke() -> None:
    # Each caller awaits a future of its own; one answered with the batch's error whose
    # caller is cancelled before it runs again must not be logged as an error never retrieved.
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: logged.append(context))
    try:
        batch = _Batch(deadline=0.0)
        batch.entries.append(_Entry([], loop.create_future()))
        batch.error = StoreError("the store is down")
        batch.finish()
        batch.entries.clear()  # the caller went away without awaiting its future
        gc.collect()
    finally:
        loop.set_exception_handler(before)
    assert logged == []


@contextmanager
def stalled(store_url: str) -> Iterator[Callable[[], None]]:
    """Hold the events table's write lock from another connection; yield its release."""
    if store_url.startswith("sqlite"):
        lite = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")

        def release() -> None:
            lite.execute("ROLLBACK")

        try:
            yield release
        finally:
            if lite.in_transaction:
                release()
            lite.close()
        return
    pg = psycopg.connect(store_url, autocommit=False)
    pg.execute("LOCK TABLE wfsched_events IN EXCLUSIVE MODE")
    try:
        yield pg.rollback
    finally:
        pg.rollback()
        pg.close()


@pytest.mark.anyio
async def test_callers_get_a_store_error_when_the_commit_misses_its_deadline(
    store: Any, store_url: str
) -> None:
    first, queued, after = event({"n": 1}), event({"n": 2}), event({"n": 3})
    async with running(GroupCommitRecorder(store, commit_timeout=0.5)) as recorder:
        outcomes: dict[str, Any] = {}

        async def one(e: NewEvent) -> None:
            outcomes[e.execution_id] = await _outcome(recorder, e)

        with stalled(store_url) as release:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, first)
                await anyio.sleep(0.1)  # let ``first`` start committing; ``queued`` waits
                tg.start_soon(one, queued)
            elapsed = time.monotonic() - started
            release()
        assert elapsed < 2.0
        in_flight, waiting = outcomes[first.execution_id], outcomes[queued.execution_id]
        assert isinstance(in_flight, StoreError)
        assert "may or may not have been recorded" in str(in_flight)
        assert isinstance(waiting, StoreError)
        assert "nothing was recorded" in str(waiting)
        # Once the store moves again the recorder does too; the queued batch was dropped.
        assert isinstance(await _outcome(recorder, after), TriggerEvent)
    stored = {e.execution_id for e in await store.history("wf", limit=-1)}
    # The stalled commit went through once the lock was released: acceptable, since its
    # callers were told 503 (retry), never 2xx without a record.
    assert stored == {first.execution_id, after.execution_id}


@pytest.mark.anyio
async def test_sqlite_event_writes_queued_together_share_one_commit(sqlite_url: str) -> None:
    # One fsync for a batch of new events and the outcomes written meanwhile; a rejected row
    # still fails only its caller, and every caller returns once its own rows are committed.
    store = SqliteStore(sqlite_url)
    await store.open()
    try:
        [(leased, _)] = await store.record([event({"n": 0})], Claim("me", utcnow(), 1))
        assert store._conn is not None
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        first, second, third = event({"n": 1}), event({"n": 2}), event({"n": 3})
        bad = event({"s": "\ud800"})
        outcomes: dict[str, Any] = {}

        async def record(e: NewEvent) -> None:
            try:
                outcomes[e.execution_id] = await store.record([e])
            except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
                outcomes[e.execution_id] = exc

        async def finish() -> None:
            done = DispatchOutcome(execution_id=leased.execution_id, status="dispatched")
            await store.finish("me", [done])
            outcomes["finish"] = "written"

        with stalled(sqlite_url) as release:
            async with anyio.create_task_group() as tg:
                tg.start_soon(record, first)  # waits for the lock in the worker thread
                await anyio.sleep(0.2)
                for e in (second, bad, third):
                    tg.start_soon(record, e)
                tg.start_soon(finish)
                await anyio.sleep(0.2)
                release()
        assert isinstance(outcomes[bad.execution_id], Exception)
        for e in (first, second, third):
            assert outcomes[e.execution_id][0][1] is True
        assert outcomes["finish"] == "written"
        # ``first`` alone; then the four queued together fail on the bad row and are told
        # apart: each of the three good ones commits on its own.
        assert statements.count("COMMIT") == 4
        statements.clear()
        fourth, fifth = event({"n": 4}), event({"n": 5})
        with stalled(sqlite_url) as release:
            async with anyio.create_task_group() as tg:
                tg.start_soon(record, fourth)
                await anyio.sleep(0.2)
                tg.start_soon(record, fifth)
                tg.start_soon(record, event({"n": 6}))
                await anyio.sleep(0.2)
                release()
        assert statements.count("COMMIT") == 2  # ``fourth``, then the two queued behind it
        stored = {e.execution_id: e for e in await store.history("wf", limit=-1)}
        assert len(stored) == 7 and bad.execution_id not in stored
        assert stored[leased.execution_id].status == "dispatched"
    finally:
        await store.close()


def _deploy(d: Daemon, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "hook.json").write_text(json.dumps({"id": "hook", "triggers": [{"type": "webhook"}]}))
    d.cli("deploy", str(specs))


@pytest.mark.slow
def test_a_webhook_gets_503_when_the_store_does_not_commit_in_time(
    store_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": store_url, "WFSCHED_STORE_COMMIT_TIMEOUT": "1s"}
    d = Daemon(tmp_path / "d", env=env)
    _deploy(d, tmp_path)
    with d:
        wait_for(lambda: d.request("POST", HOOK + "hook").status_code == 202, message="webhook up")
        with stalled(store_url):
            started = time.monotonic()
            r = httpx.post(d.url + HOOK + "hook", content=b"{}", timeout=30)
            elapsed = time.monotonic() - started
        assert (r.status_code, r.json()["error"]) == (503, "store_unavailable")
        assert r.headers["retry-after"]
        assert 0.9 < elapsed < 3.0
        assert d.request("POST", HOOK + "hook").status_code == 202


def test_one_factory_makes_every_event_row() -> None:
    """``ctx.fire`` and the timer both build rows with ``recorder.new_event``: the fire's payload
    over the static one, and a unique dedupe key when the fire names none."""
    from datetime import UTC, datetime

    from wfsched.recorder import new_event

    when = datetime(2030, 1, 1, tzinfo=UTC)
    static = {"team": "ops", "v": 1}
    merged = new_event(
        workflow_id="wf",
        trigger_id="t",
        trigger_type="webhook",
        static_payload=static,
        payload={"v": 2},
        dedupe_key=None,
        fired_at=when,
    )
    assert merged.payload == {"team": "ops", "v": 2}
    assert merged.dedupe_key == f"exec:{merged.execution_id}"
    timed = new_event(
        workflow_id="wf",
        trigger_id="t",
        trigger_type="cron",
        static_payload=static,
        payload={},
        dedupe_key="t@2030-01-01T00:00:00Z",
        fired_at=when,
        scheduled_at=when,
    )
    assert timed.payload is static  # a time fire shares the static table, never copies it
    assert (timed.dedupe_key, timed.scheduled_at) == ("t@2030-01-01T00:00:00Z", when)
    assert timed.execution_id != merged.execution_id


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.01)


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(sqlite_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def recording_into(store: SqliteStore, got: dict[str, Any]) -> Callable[[NewEvent], Any]:
    """A task recording one event on its own, its result kept in ``got`` by execution id."""

    async def record(e: NewEvent) -> None:
        got[e.execution_id] = await store.record([e])

    return record


@pytest.mark.anyio
async def test_a_sqlite_batch_taken_by_a_cancelled_caller_is_still_committed(
    sqlite_store: SqliteStore,
) -> None:
    # The caller holding the turn takes the queued writes of others, then is cancelled while
    # it waits for the worker thread: the others' rows are committed and their results real.
    store = sqlite_store
    holder, other = event({"n": 1}), event({"n": 2})
    got: dict[str, Any] = {}
    record = recording_into(store, got)
    await store._write_turn.acquire()
    release = threading.Event()
    busy = store._worker.call(release.wait)  # the connection's thread held until released
    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as holding:
            holding.start_soon(record, holder)
            await _until(lambda: len(store._writes) == 1, "the holder's write queued")
            tg.start_soon(record, other)
            await _until(lambda: len(store._writes) == 2, "the other write queued")
            store._write_turn.release()  # the holder takes both writes, waits for the thread
            await _until(
                lambda: store._worker._calls.qsize() == 1,
                "the holder's batch queued behind the busy thread",
            )
            holding.cancel_scope.cancel()
            release.set()
    await busy
    [(recorded, created)] = got[other.execution_id]
    assert created and recorded.execution_id == other.execution_id
    stored = {e.execution_id for e in await store.history("wf", limit=-1)}
    assert other.execution_id in stored


@pytest.mark.anyio
async def test_a_sqlite_error_of_one_callers_statement_fails_only_that_caller(
    sqlite_store: SqliteStore,
) -> None:
    # "no such table" is an OperationalError of one caller's SQL, not the store's fault: the
    # others queued with it are committed.
    store = sqlite_store
    first, second = event({"n": 1}), event({"n": 2})
    got: dict[str, Any] = {}
    record = recording_into(store, got)

    async def faulty() -> None:
        try:
            await store._shared_tx(lambda c: c.execute("SELECT * FROM no_such_table"))
        except StoreError as exc:
            got["faulty"] = exc

    await store._write_turn.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(record, first)
        tg.start_soon(faulty)
        tg.start_soon(record, second)
        await _until(lambda: len(store._writes) == 3, "three writes queued")
        store._write_turn.release()
    assert "no such table" in str(got["faulty"])
    for e in (first, second):
        assert got[e.execution_id][0][1] is True


@pytest.mark.anyio
async def test_an_sqlite_library_older_than_the_minimum_is_refused(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    store = SqliteStore(sqlite_url)
    with pytest.raises(StoreError, match=r"3\.34\.1; wfsched needs 3\.35\.0 or newer"):
        await store.open()
    await store.close()
