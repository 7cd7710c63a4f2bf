"""Engine-mode dispatch against a real local engine app, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import pytest

from tests.daemon_proc import free_port
from tests.engine_app import Engine, Reply
from tests.polling import eventually
from wfsched.backends import open_store
from wfsched.dispatch import Dispatcher, DispatchError, LogSender, backoff
from wfsched.dispatch.engine import (
    EngineSender,
    classify,
    execute_url,
    parse_engine_url,
    parse_retry_after,
)
from wfsched.dispatch.router import TargetRouter
from wfsched.errors import ConfigError, StoreError
from wfsched.metrics import REGISTRY, render
from wfsched.models import Claim, NewEvent, TriggerEvent, new_execution_id, utcnow
from wfsched.recorder import GroupCommitRecorder

pytestmark = pytest.mark.anyio


def new_event(
    workflow_id: str = "nightly-report",
    payload: dict[str, Any] | None = None,
    scheduled: bool = False,
) -> NewEvent:
    now = utcnow()
    execution_id = new_execution_id()
    return NewEvent(
        execution_id=execution_id,
        workflow_id=workflow_id,
        trigger_id="nightly",
        trigger_type="cron",
        dedupe_key=execution_id,
        payload=payload if payload is not None else {"n": 1},
        fired_at=now,
        scheduled_at=now.replace(microsecond=0) if scheduled else None,
    )


def new_events(n: int) -> list[NewEvent]:
    return [new_event() for _ in range(n)]


async def record(store: Any, n: int = 1, **kw: Any) -> list[TriggerEvent]:
    return [e for e, _ in await store.record([new_event(**kw) for _ in range(n)])]


async def settled(store: Any, execution_id: str, timeout: float = 10.0) -> TriggerEvent:
    async def done() -> TriggerEvent | None:
        event: TriggerEvent = await store.get_event(execution_id)
        return event if event.status != "pending" else None

    result: TriggerEvent = await eventually(done, timeout, f"event {execution_id} to settle")
    return result


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.run, tg)
        try:
            yield dispatcher
        finally:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await dispatcher.sender.aclose()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    app = Engine()
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def dispatcher(store: Any, url: str, *, timeout: float = 5.0, **kw: Any) -> Dispatcher:
    options: dict[str, Any] = {
        "max_workers": 4,
        "retry_base": 0.05,
        "retry_max": 0.2,
        "claim_ttl": 10.0,
        "max_attempts": 8,
        **kw,
    }
    sender = EngineSender(url, timeout=timeout, max_connections=options["max_workers"])
    return Dispatcher(store, sender, **options)


# the done-when criteria ------------------------------------------------------------------
async def test_it_retries_two_503s_then_dispatches_with_one_key(store: Any, engine: Engine) -> None:
    engine.script(503, 503, 200)
    [event] = await record(store)
    async with running(dispatcher(store, engine.url)):
        final = await settled(store, event.execution_id)
    assert final.status == "dispatched"
    assert final.attempts == 3
    assert engine.keys() == [event.execution_id] * 3
    gaps = [b.at - a.at for a, b in zip(engine.received, engine.received[1:], strict=False)]
    assert all(gap >= 0.045 for gap in gaps), f"retries came faster than retry_base: {gaps}"
    [row] = await store.history(status="dispatched")
    assert row.execution_id == event.execution_id


class CountingClaims:
    """The store, counting the events it hands out by claim."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.claimed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def claim(self, *args: Any) -> list[TriggerEvent]:
        events: list[TriggerEvent] = await self.store.claim(*args)
        self.claimed += len(events)
        return events


async def fire_and_settle(store: Any, d: Dispatcher, via: Any, count: int) -> list[TriggerEvent]:
    """Record ``count`` events by group commit through ``via`` (a view of ``store``), handed
    to ``d`` while it runs; return them once every one has settled."""
    recorder = GroupCommitRecorder(via, on_created=d.wake, handoff=d)
    async with running(d), anyio.create_task_group() as tg:
        recorder.start(tg)
        results = await recorder.record([new_event() for _ in range(count)])
        final = [await settled(store, e.execution_id) for e, _ in results]
        tg.cancel_scope.cancel()
    return final


async def test_events_recorded_in_the_daemon_go_to_its_dispatcher_without_a_claim(
    store: Any, engine: Engine
) -> None:
    counting = CountingClaims(store)
    d = dispatcher(counting, engine.url, max_workers=3)
    leases: list[Claim | None] = []
    lease = d.lease

    def recording_lease(events: Sequence[NewEvent]) -> Claim | None:
        leases.append(lease(events))
        return leases[-1]

    d.lease = recording_lease  # type: ignore[method-assign]
    # More events than the dispatcher has room for: the rest it claims from the store.
    final = await fire_and_settle(store, d, counting, 20)
    [claim] = leases
    assert claim is not None and claim.owner == d.owner and claim.limit == 3
    assert {e.status for e in final} == {"dispatched"}
    assert sorted(engine.keys()) == sorted(e.execution_id for e in final)
    assert counting.claimed == 20 - 3


async def test_a_burst_beyond_the_queue_goes_out_from_the_reserve_without_a_claim(
    store: Any, engine: Engine
) -> None:
    counting = CountingClaims(store)
    d = dispatcher(counting, engine.url, max_workers=3, reserve=50)
    final = await fire_and_settle(store, d, counting, 20)
    assert {e.status for e in final} == {"dispatched"}
    assert sorted(engine.keys()) == sorted(e.execution_id for e in final)
    assert counting.claimed == 0


async def test_a_reserved_event_is_renewed_before_it_is_sent_unless_claimed_since(
    store: Any, engine: Engine
) -> None:
    # Leases of 0.5 s: a reserved event is aged before its turn. One of the three is claimed
    # by another dispatcher once the leases lapse: it must not be sent by this one as well.
    d = dispatcher(store, engine.url, timeout=0.1, max_workers=1, claim_ttl=0.5, reserve=10)
    claim = d.lease(new_events(3))
    assert claim is not None and claim.limit == 3
    first, second, third = (new_event() for _ in range(3))
    # Recorded newest first: the newest is queued, the two older ones are reserved, and the
    # other dispatcher's claim (oldest first) takes a reserved one.
    events = [e for e, _ in await store.record([third, first, second], claim)]
    d.adopt(events)

    async def taken() -> list[TriggerEvent]:
        got: list[TriggerEvent] = await store.claim("other", 1, 60, utcnow())
        return got

    [theirs] = await eventually(taken, what="a lapsed lease to be claimed by another dispatcher")
    assert theirs.execution_id == first.execution_id
    ours = [e.execution_id for e in events if e.execution_id != theirs.execution_id]
    async with running(d):
        final = [await settled(store, execution_id) for execution_id in ours]
    assert {e.status for e in final} == {"dispatched"}
    assert sorted(engine.keys()) == sorted(ours)
    assert (await store.get_event(theirs.execution_id)).status == "pending"


async def test_the_reserve_stops_taking_events_past_its_byte_budget(
    store: Any, engine: Engine
) -> None:
    # 50 events of about 1 KB each against a budget of 10 KB: once the reserve holds more
    # than the budget, a lease covers only the queue's room (none while events are reserved),
    # and the rest is recorded unleased for a claim, as past the count.
    d = dispatcher(store, engine.url, max_workers=1, reserve=1000, reserve_bytes=10_000)
    claim = d.lease(new_events(200))
    assert claim is not None and claim.limit == 200
    body = {"body": "x" * 1000}
    events = [
        e for e, _ in await store.record([new_event(payload=body) for _ in range(200)], claim)
    ]
    d.adopt(events)
    assert d._reserve and d._reserved_bytes > 10_000
    assert d.lease(new_events(10)) is None
    async with running(d):
        final = [await settled(store, e.execution_id) for e in events]
        assert d.lease(new_events(10)) is not None  # the reserve sent, its bytes counted out
    assert {e.status for e in final} == {"dispatched"}
    assert d._reserved_bytes == 0


async def test_a_drain_gives_the_reserve_back_unsent_and_quietly(
    store: Any, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Reserved events are not sent in the drain (nor warned about one by one): their leases
    # are released, so they are claimable at once.
    caplog.set_level(logging.WARNING, logger="wfsched.dispatch")
    d = dispatcher(store, engine.url, max_workers=1, reserve=500)
    claim = d.lease(new_events(300))
    assert claim is not None and claim.limit == 300
    events = [e for e, _ in await store.record([new_event() for _ in range(300)], claim)]
    d.adopt(events)
    reserved = {e.execution_id for e, *_ in d._reserve}
    assert reserved
    async with running(d):
        await d.drain(10.0)
    claimed = await store.claim("other", 1000, 60, utcnow())
    assert {e.execution_id for e in claimed} == reserved
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_it_fails_a_400_after_one_attempt(store: Any, engine: Engine) -> None:
    engine.script(Reply(400, body='{"error": "unknown workflow input"}'))
    [event] = await record(store)
    async with running(dispatcher(store, engine.url)):
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts) == ("failed", 1)
    assert final.last_error is not None
    assert "400" in final.last_error and "unknown workflow input" in final.last_error
    assert len(engine.received) == 1
    assert [e.execution_id for e in await store.history(status="failed")] == [event.execution_id]


async def test_it_posts_the_spec_body_and_idempotency_key(store: Any, engine: Engine) -> None:
    [event] = await record(
        store, payload={"data": {"x": [1, "two"]}, "user": "ops"}, scheduled=True
    )
    async with running(dispatcher(store, engine.url + "/engine/")):
        await settled(store, event.execution_id)
    [got] = engine.received
    assert got.path == "/engine/v1/workflows/nightly-report/execute"
    assert got.key == event.execution_id
    assert got.headers["Content-Type"] == "application/json"
    assert got.body == {
        "execution_id": event.execution_id,
        "workflow_id": "nightly-report",
        "trigger": {"id": "nightly", "type": "cron"},
        "scheduled_at": event.to_json()["scheduled_at"],
        "fired_at": event.to_json()["fired_at"],
        "payload": {"data": {"x": [1, "two"]}, "user": "ops"},
    }
    assert got.body["fired_at"].endswith("Z")


# retries and failures ----------------------------------------------------------------------
async def test_it_retries_a_request_applied_but_timed_out_with_the_same_key(
    store: Any, engine: Engine
) -> None:
    # The engine records the execution, then answers only after the client gave up
    # (Temporal's ExecuteAndTimeout case): the retry must carry the same key.
    engine.script(Reply(200, delay=1.5), Reply(200))
    [event] = await record(store)
    async with running(dispatcher(store, engine.url, timeout=0.3)):
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts) == ("dispatched", 2)
    assert final.last_error is not None and "did not answer within 0.3s" in final.last_error
    assert engine.keys() == [event.execution_id, event.execution_id]


async def test_it_resends_at_once_when_the_engine_drops_the_connection(
    store: Any, engine: Engine
) -> None:
    engine.script(Reply(200, hang_up=True), Reply(200))
    [event] = await record(store)
    async with running(dispatcher(store, engine.url)):
        final = await settled(store, event.execution_id)
    # One attempt: a connection closed without an answer is resent within the attempt.
    assert (final.status, final.attempts) == ("dispatched", 1)
    assert engine.keys() == [event.execution_id, event.execution_id]


async def test_it_honours_retry_after_on_429(store: Any, engine: Engine) -> None:
    engine.script(Reply(429, headers={"Retry-After": "1"}), 200)
    [event] = await record(store)
    async with running(dispatcher(store, engine.url, retry_base=0.01, retry_max=5.0)):
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts) == ("dispatched", 2)
    first, second = engine.received
    assert second.at - first.at >= 0.95


async def test_it_does_not_follow_redirects(store: Any, engine: Engine) -> None:
    engine.script(Reply(307, headers={"Location": engine.url + "/moved"}))
    [event] = await record(store)
    async with running(dispatcher(store, engine.url)):
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts) == ("failed", 1)
    assert final.last_error is not None and "redirect" in final.last_error
    assert [r.path for r in engine.received] == ["/v1/workflows/nightly-report/execute"]


async def test_it_gives_up_after_max_attempts(store: Any, engine: Engine) -> None:
    engine.responder = lambda got, seen: Reply(502)
    [event] = await record(store)
    async with running(
        dispatcher(store, engine.url, max_attempts=3, retry_base=0.01, retry_max=0.02)
    ):
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts) == ("failed", 3)
    assert final.last_error is not None
    assert final.last_error.startswith("gave up after 3 attempts: engine answered 502")
    assert len(engine.received) == 3


async def test_it_retries_while_the_engine_is_down_and_delivers_when_it_is_up(store: Any) -> None:
    port = free_port()
    engine = Engine()
    [event] = await record(store)
    async with running(
        dispatcher(store, f"http://user:pw-s3cret@127.0.0.1:{port}", retry_base=0.05, retry_max=0.1)
    ):

        async def failed_twice() -> bool:
            got = await store.get_event(event.execution_id)
            return bool(got.attempts >= 2)

        await eventually(failed_twice, what="two failed attempts")
        pending = await store.get_event(event.execution_id)
        assert pending.status == "pending"
        assert pending.last_error is not None
        assert f"cannot reach engine at http://127.0.0.1:{port}" in pending.last_error
        assert "s3cret" not in pending.last_error
        await engine.start(port)
        try:
            final = await settled(store, event.execution_id)
        finally:
            await engine.stop()
    assert final.status == "dispatched"
    assert engine.keys() == [event.execution_id]
    assert engine.received[0].headers["Authorization"] == "Basic dXNlcjpwdy1zM2NyZXQ="


async def test_it_keeps_at_most_max_workers_in_flight(store: Any, engine: Engine) -> None:
    engine.responder = lambda got, seen: Reply(200, delay=0.03)
    events = await record(store, 24)
    d = dispatcher(store, engine.url, max_workers=4)
    async with running(d):
        d.wake()
        await eventually(lambda: _count(store, "dispatched", 24), what="24 dispatched")
    assert engine.max_in_flight == 4
    assert sorted(engine.distinct_keys()) == sorted(e.execution_id for e in events)


async def test_it_claims_no_more_than_it_can_send_while_the_engine_is_slow(
    store: Any, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Sends of 0.3 s against a 1 s lease and a 0.8 s timeout: an event queued behind one of
    # them could start too late to finish inside its lease, so nothing is claimed ahead.
    engine.responder = lambda got, seen: Reply(200, delay=0.3)
    events = await record(store, 8)
    d = dispatcher(store, engine.url, max_workers=2, claim_ttl=1.0, timeout=0.8)
    with caplog.at_level(logging.WARNING, logger="wfsched.dispatch"):
        async with running(d):
            d.wake()
            await eventually(lambda: _count(store, "dispatched", 8), what="8 dispatched")
    assert engine.max_in_flight == 2
    assert sorted(engine.keys()) == sorted(e.execution_id for e in events)
    assert not [r for r in caplog.records if "too old" in r.getMessage()]


async def _count(store: Any, status: str, n: int) -> bool:
    return len(await store.history(status=status, limit=10_000)) >= n


async def test_it_logs_every_attempt_and_exports_metrics(
    store: Any, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.script(500, 200)
    [event] = await record(store)
    with caplog.at_level(logging.INFO, logger="wfsched.dispatch"):
        async with running(dispatcher(store, engine.url)):
            await settled(store, event.execution_id)
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "dispatch attempt"]
    assert [(x["execution_id"], x["status"], x["attempt"], x["code"]) for x in lines] == [
        (event.execution_id, "pending", 1, 500),
        (event.execution_id, "dispatched", 2, None),
    ]
    assert all(isinstance(x["duration_ms"], float) for x in lines)
    text = render().decode()
    assert 'wfsched_dispatch_duration_seconds_count{mode="engine",outcome="retry"}' in text
    assert 'wfsched_dispatch_attempts_total{mode="engine",outcome="ok"}' in text
    assert 'wfsched_trigger_events_total{status="retried",trigger_type="cron"}' in text


class RefusingLog(LogSender):
    """A log sender whose ``send`` must never run: its events are settled as handed over."""

    async def send(self, event: TriggerEvent) -> None:
        raise AssertionError("send called for an instant sender's event")


async def test_log_mode_events_are_settled_as_recorded_without_a_send_or_a_claim(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    counting = CountingClaims(store)
    d = Dispatcher(counting, RefusingLog(), max_workers=2, reserve=0)
    before = _sample("wfsched_dispatch_attempts_total", {"mode": "log", "outcome": "ok"})
    with caplog.at_level(logging.INFO, logger="wfsched.dispatch"):
        # Far more than the two workers' queue takes, and no reserve (as on PostgreSQL):
        # settled events need no room, so every one is leased, none waits for a claim.
        final = await fire_and_settle(store, d, counting, 50)
    assert {e.status for e in final} == {"dispatched"}
    assert all(e.attempts == 1 and e.dispatched_at is not None for e in final)
    assert counting.claimed == 0
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "dispatch attempt"]
    assert sorted(x["execution_id"] for x in lines) == sorted(e.execution_id for e in final)
    assert {(x["status"], x["attempt"], x["mode"]) for x in lines} == {("dispatched", 1, "log")}
    after = _sample("wfsched_dispatch_attempts_total", {"mode": "log", "outcome": "ok"})
    assert after - before == 50


async def test_the_router_settles_only_workflows_it_knows_go_to_log(
    store: Any, engine: Engine
) -> None:
    # The default target is the engine; one workflow chose log. Its first event is sent the
    # usual way (the router learns its route), the rest are settled as recorded; the engine's
    # workflow is always sent.
    choices: dict[str, tuple[str, dict[str, Any]]] = {"quiet": ("log", {})}

    async def lookup(workflow_id: str) -> Any:
        return choices.get(workflow_id)

    def open_target(mode: str, options: Any) -> Any:
        if mode == "log":
            return LogSender()
        return EngineSender(engine.url, timeout=5.0, max_connections=4)

    router = TargetRouter(("engine", {}), open_target=open_target, lookup=lookup)
    d = Dispatcher(store, router, max_workers=4, retry_base=0.05, retry_max=0.2)
    assert not router.instant("quiet")  # not routed yet
    recorder = GroupCommitRecorder(store, on_created=d.wake, handoff=d)
    async with running(d), anyio.create_task_group() as tg:
        recorder.start(tg)
        [(first, _)] = await recorder.record([new_event("quiet")])
        await settled(store, first.execution_id)
        assert router.instant("quiet") and not router.instant("nightly-report")
        rest = await recorder.record([new_event("quiet") for _ in range(5)])
        loud = await recorder.record([new_event("nightly-report") for _ in range(3)])
        final = [await settled(store, e.execution_id) for e, _ in rest + loud]
        tg.cancel_scope.cancel()
    assert {e.status for e in final} == {"dispatched"}
    assert sorted(engine.keys()) == sorted(e.execution_id for e, _ in loud)


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_it_redelivers_a_failed_event_with_the_same_key(store: Any, engine: Engine) -> None:
    engine.script(400)
    [event] = await record(store)
    async with running(dispatcher(store, engine.url, poll_interval=0.05)):
        assert (await settled(store, event.execution_id)).status == "failed"
        [queued] = await store.requeue([event.execution_id], utcnow())
        assert queued.status == "pending"
        final = await settled(store, event.execution_id)
    assert final.status == "dispatched"
    assert engine.keys() == [event.execution_id, event.execution_id]


async def test_a_redelivered_event_keeps_counting_attempts_and_drops_the_stale_error(
    store: Any, engine: Engine
) -> None:
    """After a redelivery history shows every attempt made, and no error from before it."""
    engine.script(500, 500, 200)
    [event] = await record(store)
    async with running(dispatcher(store, engine.url, poll_interval=0.05, max_attempts=2)):
        failed = await settled(store, event.execution_id)
        assert (failed.status, failed.attempts) == ("failed", 2)
        assert failed.last_error is not None and "gave up after 2 attempts" in failed.last_error
        [queued] = await store.requeue([event.execution_id], utcnow())
        assert (queued.status, queued.attempts, queued.last_error) == ("pending", 2, None)
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts, final.last_error) == ("dispatched", 3, None)


async def test_a_redelivery_gets_a_fresh_round_of_attempts(store: Any, engine: Engine) -> None:
    engine.script(500, 500, 500, 500)
    [event] = await record(store)
    async with running(dispatcher(store, engine.url, poll_interval=0.05, max_attempts=2)):
        assert (await settled(store, event.execution_id)).attempts == 2
        await store.requeue([event.execution_id], utcnow())
        final = await settled(store, event.execution_id)
    assert (final.status, final.attempts) == ("failed", 4)
    assert final.last_error is not None and "gave up after 4 attempts" in final.last_error
    assert len(engine.keys()) == 4


# claims --------------------------------------------------------------------------------
async def test_it_redelivers_after_the_claim_of_a_dead_dispatcher_expires(
    store: Any, engine: Engine
) -> None:
    engine.responder = lambda got, seen: Reply(200, delay=3.0 if seen == 0 else 0.0)
    [event] = await record(store)
    # The lease ``first`` holds: when its claim (or a renewal) of the event runs out.
    leased_until: list[datetime] = []
    claim, renew = store.claim, store.renew

    async def leasing(owner: str, limit: int, ttl: float, now: datetime) -> list[TriggerEvent]:
        got: list[TriggerEvent] = await claim(owner, limit, ttl, now)
        if any(e.execution_id == event.execution_id for e in got):
            leased_until.append(now + timedelta(seconds=ttl))
        return got

    async def renewing(
        owner: str, ids: Sequence[str], held_until: datetime, until: datetime
    ) -> set[str]:
        kept: set[str] = await renew(owner, ids, held_until, until)
        if event.execution_id in kept:
            leased_until.append(until)
        return kept

    first = dispatcher(store, engine.url, claim_ttl=0.5, timeout=30.0)
    store.claim, store.renew = leasing, renewing
    try:
        async with running(first):
            await eventually(lambda: _received(engine, 1), what="the first attempt")
    finally:
        store.claim, store.renew = claim, renew
    # ``first`` is gone without writing an outcome, as if SIGKILLed mid-request.
    assert (await store.get_event(event.execution_id)).status == "pending"
    async with running(dispatcher(store, engine.url, poll_interval=0.05)):
        final = await settled(store, event.execution_id)
    assert final.status == "dispatched"
    _, second = engine.received
    # Not before the lease ran out (the engine's clock is the dispatchers': the wall clock).
    assert leased_until and second.at >= max(leased_until).timestamp(), "lease not honoured"
    assert engine.keys() == [event.execution_id] * 2


async def _received(engine: Engine, n: int) -> bool:
    return len(engine.received) >= n


async def test_two_dispatchers_on_postgres_never_share_an_event(
    pg_url: str, engine: Engine
) -> None:
    # Every event fails once, so each is claimed at least twice, by either dispatcher.
    engine.responder = lambda got, seen: Reply(503 if seen == 0 else 200, delay=0.005)
    stores = [open_store(pg_url), open_store(pg_url)]
    for s in stores:
        await s.open()
    try:
        events = await record(stores[0], 150)
        ds = [
            dispatcher(
                s, engine.url, max_workers=8, retry_base=0.01, retry_max=0.05, poll_interval=0.02
            )
            for s in stores
        ]
        counts = [_Counting(d) for d in ds]
        async with running(ds[0]), running(ds[1]):
            await eventually(lambda: _count(stores[0], "dispatched", 150), 30, "150 dispatched")
    finally:
        for s in stores:
            await s.close()
    assert engine.overlaps == []
    seen = engine.keys()
    assert sorted(seen) == sorted([e.execution_id for e in events] * 2)
    assert all(c.sent > 0 for c in counts), [c.sent for c in counts]


class _Counting:
    """Counts the sends of one dispatcher (its sender, decorated)."""

    def __init__(self, d: Dispatcher) -> None:
        self.sent = 0
        self._send = d.sender.send
        d.sender.send = self.send  # type: ignore[method-assign]

    async def send(self, event: TriggerEvent) -> None:
        self.sent += 1
        await self._send(event)


# pure pieces ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, None),
        (202, None),
        (204, None),
        (301, "failed"),
        (308, "failed"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (409, "failed"),
        (410, "failed"),
        (422, "failed"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
    ],
)
def test_it_classifies_engine_statuses(status: int, outcome: str | None) -> None:
    error = classify(status, "Reason", "body")
    if outcome is None:
        assert error is None
    else:
        assert isinstance(error, DispatchError)
        assert error.retry is (outcome == "retry")
        assert error.code == status


def test_it_parses_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after("Fri, 27 Nov 2026 12:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_stays_between_base_and_the_growing_ceiling() -> None:
    for attempt in range(1, 12):
        ceiling = min(300.0, 1.0 * 2 ** (attempt - 1))
        delays = [backoff(attempt, 1.0, 300.0) for _ in range(200)]
        assert all(1.0 <= d <= ceiling for d in delays)
    assert backoff(1, 1.0, 300.0, retry_after=60) >= 60
    assert backoff(1, 1.0, 10.0, retry_after=3600) <= 10


def test_it_keeps_engine_credentials_out_of_urls_and_refuses_bad_ones() -> None:
    base, auth, shown = parse_engine_url("https://bot:t0ps3cret@engine.example:8443/api?tenant=7")
    assert auth == "Basic Ym90OnQwcHMzY3JldA=="
    assert "t0ps3cret" not in str(base) and "t0ps3cret" not in shown
    assert str(execute_url(base, "a.b")) == (
        "https://engine.example:8443/api/v1/workflows/a.b/execute?tenant=7"
    )
    for bad in ("ftp://engine", "engine:8080", ""):
        with pytest.raises(ConfigError, match="dispatch.engine_url"):
            parse_engine_url(bad)


class FinishOnce:
    """A store view whose ``finish`` fails ``fails`` times, then writes; counts the writes."""

    def __init__(self, store: Any, fails: int = 0) -> None:
        self.store, self.fails, self.finished = store, fails, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def finish(self, owner: str, outcomes: Any) -> None:
        if self.fails:
            self.fails -= 1
            raise StoreError("down for a moment")
        await self.store.finish(owner, outcomes)
        self.finished += 1


def settling(view: Any) -> tuple[Dispatcher, GroupCommitRecorder]:
    """A log-mode dispatcher and a group commit that writes its settled outcomes between
    batches, both on ``view``."""
    d = Dispatcher(view, RefusingLog(), max_workers=2, reserve=0)
    return d, GroupCommitRecorder(view, on_created=d.wake, handoff=d)


async def test_settled_outcomes_are_written_between_batches(store: Any) -> None:
    # On either store the group commit writes the outcomes it settled before it takes the
    # next batch: once the fire returns and the loop has had one turn, they are in the store,
    # written by write_settled alone (the finisher is not running here). On SQLite they used
    # to wait for the next batch's transaction, which split a steady load into two halves.
    view = FinishOnce(store)
    _, recorder = settling(view)
    async with anyio.create_task_group() as tg:
        recorder.start(tg)
        for batch in range(1, 4):
            results = await recorder.record([new_event() for _ in range(4)])
            await eventually(lambda: view.finished == batch, 5.0, "the batch's outcomes")  # noqa: B023
            rows = {e.execution_id: e for e in await store.history(limit=-1)}
            assert {rows[e.execution_id].status for e, _ in results} == {"dispatched"}
        tg.cancel_scope.cancel()
    assert view.finished == 3


async def test_settled_outcomes_that_fail_to_write_go_back_to_the_finisher(store: Any) -> None:
    view = FinishOnce(store, fails=1)
    d, recorder = settling(view)
    async with running(d), anyio.create_task_group() as tg:
        recorder.start(tg)
        results = await recorder.record([new_event() for _ in range(4)])
        final = [await settled(store, e.execution_id) for e, _ in results]
        tg.cancel_scope.cancel()
    assert {e.status for e in final} == {"dispatched"}
    assert view.fails == 0 and view.finished == 1  # the one failure, then the finisher's write


class StalledFinish(FinishOnce):
    """A store view whose ``finish`` hangs until cancelled (a write cut short at shutdown)."""

    started = 0

    async def finish(self, owner: str, outcomes: Any) -> None:
        self.started += 1
        await anyio.sleep_forever()


async def test_settled_outcomes_whose_write_is_cancelled_go_back_to_the_finisher(
    store: Any,
) -> None:
    # The group commit stops (shutdown) while it writes settled outcomes: they are the
    # finisher's again, so the drain still writes them (they were lost before: taken out of
    # the dispatcher's list and never put back).
    view = StalledFinish(store)
    d, recorder = settling(view)
    async with anyio.create_task_group() as tg:
        recorder.start(tg)
        results = await recorder.record([new_event() for _ in range(3)])
        await eventually(lambda: view.started == 1, 5.0, "the settled outcomes' write")
        tg.cancel_scope.cancel()
    assert {o.execution_id for o in d._settled} == {e.execution_id for e, _ in results}
    await store.finish(d.owner, d._settled)  # what the finisher would write
    assert {(await store.get_event(e.execution_id)).status for e, _ in results} == {"dispatched"}


async def test_a_sends_outcome_is_left_to_the_finisher_not_written_between_batches(
    store: Any, engine: Engine
) -> None:
    # write_settled runs before every batch: a send's outcome written there held the next
    # batch's fires behind one more commit (1,000 fires/s in engine mode on SQLite: p99 56 ms
    # against 13). Only outcomes settled without a send are its to write.
    [event] = await record(store)
    view = FinishOnce(store)
    d = dispatcher(view, engine.url)
    await d._deliver(event)
    await d.write_settled()
    assert view.finished == 0
    assert [o.execution_id for o in d._outcomes] == [event.execution_id]
