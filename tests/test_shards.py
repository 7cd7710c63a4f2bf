"""Timer shards: a replica records only the shards it leases, and a handover loses nothing.

The timer's shard API on a clock the test drives, then ShardKeepers of two "replicas" (two
timers on one store) leasing shards from a real Redis on the real clock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from tests.servers import RedisServer
from tests.test_timers import BASE, Clock, at, every, scheduled
from wfsched.locks.redis import RedisLocks
from wfsched.recorder import GroupCommitRecorder
from wfsched.store import Store
from wfsched.timer import Timer
from wfsched.timer.members import SHARDS, shard_of
from wfsched.timer.shards import ShardKeeper

pytestmark = pytest.mark.anyio


def workflows_in_two_shards() -> tuple[str, str, int, int]:
    """Two workflow ids whose ``every`` trigger falls in different shards."""
    first = "wf-a"
    for n in range(100):
        other = f"wf-{n}"
        if shard_of(other, "every") != shard_of(first, "every"):
            return first, other, shard_of(first, "every"), shard_of(other, "every")
    raise AssertionError("no two shards found")


async def test_a_timer_records_only_the_shards_it_owns(store: Store) -> None:
    mine, theirs, my_shard, their_shard = workflows_in_two_shards()
    clock = Clock(BASE - 5)
    timer = Timer(store, clock=clock)
    for workflow_id in (mine, theirs):
        timer.add(workflow_id, "every", "cron", every(10), {}, since=at(BASE - 5))
    timer.own(set())
    timer.gain(my_shard, since=clock.now)
    clock.now = BASE + 1
    assert await timer.tick() == 1
    assert await scheduled(store, mine) == [at(BASE)]
    assert await scheduled(store, theirs) == []
    # Taking the other shard over records what fell due in the horizon, policy or not.
    clock.now = BASE + 12
    assert timer.gain(their_shard, since=BASE - 5) == 2
    # The takeover and the due group both hold theirs@BASE+10: the second is a no-op.
    assert await timer.tick() == 4
    assert await scheduled(store, theirs) == [at(BASE), at(BASE + 10)]
    assert await scheduled(store, mine) == [at(BASE), at(BASE + 10)]
    # Given away: no more fires of that shard here.
    timer.drop(their_shard)
    clock.now = BASE + 21
    assert await timer.tick() == 1
    assert await scheduled(store, theirs) == [at(BASE), at(BASE + 10)]
    assert timer.recorded_through() == clock.now


@asynccontextmanager
async def replica(
    store: Store, redis_url: str, workflows: list[str], replicas: Callable[[], int]
) -> AsyncIterator[ShardKeeper]:
    """A timer and its ShardKeeper, as one daemon runs them."""
    recorder = GroupCommitRecorder(store)
    timer = Timer(recorder)
    since = datetime.now(UTC)
    for workflow_id in workflows:
        timer.add(workflow_id, "every", "cron", every(1), {}, since=since)
    locks = RedisLocks(redis_url, poll_max=0.05)

    async def count() -> int:
        return replicas()

    keeper = ShardKeeper(locks, timer, count, ttl=1.0, poll=0.1)
    try:
        async with anyio.create_task_group() as tg:
            recorder.start(tg)
            tg.start_soon(timer.run)
            tg.start_soon(keeper.run)
            yield keeper
            tg.cancel_scope.cancel()
    finally:
        await locks.close()


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.05)


@pytest.mark.slow
async def test_two_replicas_split_the_shards_and_a_survivor_loses_no_fire(
    store: Store, redis_url: str
) -> None:
    workflows = [f"wf{i}" for i in range(48)]
    started = time.time()
    async with replica(store, redis_url, workflows, lambda: 2) as a:
        async with replica(store, redis_url, workflows, lambda: 2) as b:
            await until(
                lambda: len(a.held) == len(b.held) == SHARDS // 2,
                30,  # a shard changes hands once per renewal round: slow on a loaded machine
                "the shards to split evenly",
            )
            assert not a.held & b.held
            await anyio.sleep(2.5)
        # b stopped: a takes every shard over (here b released them on the way out).
        await until(lambda: len(a.held) == SHARDS, 10, "a survivor holding every shard")
        await anyio.sleep(2.5)
    stopped = time.time()
    assert_every_second_fired_once(await store.history(limit=100_000), workflows, started, stopped)


@pytest.mark.slow
async def test_a_joining_replica_takes_half_the_shards_from_where_the_first_left_them(
    store: Store, redis_url: str
) -> None:
    workflows = [f"wf{i}" for i in range(48)]
    members = [1]
    started = time.time()
    async with replica(store, redis_url, workflows, lambda: members[0]) as a:
        await until(lambda: len(a.held) == SHARDS, 10, "the first replica holding every shard")
        members[0] = 2
        async with replica(store, redis_url, workflows, lambda: members[0]) as b:
            await until(lambda: len(a.held) == len(b.held) == SHARDS // 2, 15, "a handover of half")
            await anyio.sleep(1.5)
        stopped = time.time()
    assert_every_second_fired_once(await store.history(limit=100_000), workflows, started, stopped)


def assert_every_second_fired_once(
    events: list[Any], workflows: list[str], started: float, stopped: float
) -> None:
    seen: dict[str, list[float]] = {w: [] for w in workflows}
    for event in events:
        assert event.scheduled_at is not None
        seen[event.workflow_id].append(event.scheduled_at.timestamp())
    first, last = int(started) + 2, int(stopped) - 1
    for workflow_id, instants in seen.items():
        assert len(instants) == len(set(instants)), f"{workflow_id} fired twice"
        missing = set(range(first, last)) - {int(t) for t in instants}
        assert not missing, f"{workflow_id} missed {sorted(missing)}"


@pytest.mark.slow
async def test_while_redis_is_down_a_replica_fires_every_shard_without_a_lease(
    store: Store,
) -> None:
    workflows = [f"wf{i}" for i in range(32)]
    with RedisServer() as redis_server:
        async with replica(store, redis_server.url, workflows, lambda: 1) as keeper:
            await until(lambda: len(keeper.held) == SHARDS, 10, "every shard leased")
            redis_server.shutdown_nosave()
            down_at = time.time()
            await until(lambda: len(keeper.unsure) == SHARDS, 15, "every shard fired unleased")
            await anyio.sleep(2.5)
            redis_server.start()
            await until(
                lambda: len(keeper.held) == SHARDS and not keeper.unsure,
                15,
                "every shard leased again",
            )
        events = await store.history(limit=100_000)
    fired = {(e.workflow_id, int(e.scheduled_at.timestamp())) for e in events if e.scheduled_at}
    for workflow_id in workflows:
        missing = {
            s for s in range(int(down_at) + 1, int(down_at) + 4) if (workflow_id, s) not in fired
        }
        assert not missing, (
            f"{workflow_id} missed {sorted(missing)} while Redis was down at {down_at}:"
            f" {sorted(s for w, s in fired if w == workflow_id)}"
        )
