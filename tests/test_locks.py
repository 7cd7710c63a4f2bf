"""One contract suite for the LockManager backends: in-process and Redis (shared db 9).

"Another replica" is another manager: a second RedisLocks on the same server, or the same
LocalLocks (in-process locks only exclude within one daemon, which is their whole scope).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.daemon_proc import Daemon, free_port, wait_for
from wfsched.locks import Lease, LocalLocks, LockError, LockManager
from wfsched.locks.redis import RedisLocks
from wfsched.metrics import LOCK_ACQUIRE

pytestmark = pytest.mark.anyio


class Backend:
    """Managers of one lock domain, plus what a test needs to break a Redis lock."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self.made: list[LockManager] = []
        self._local = LocalLocks()

    def manager(self) -> LockManager:
        if self.url is None:
            return self._local
        made = RedisLocks(self.url, poll_max=0.05)
        self.made.append(made)
        return made

    async def close(self) -> None:
        for m in self.made:
            await m.close()
        await self._local.close()


@pytest.fixture(params=["local", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = None if request.param == "local" else str(request.getfixturevalue("redis_url"))
    b = Backend(request.param, url)
    try:
        yield b
    finally:
        await b.close()


def counted(result: str) -> float:
    return float(LOCK_ACQUIRE.labels(result)._value.get())


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_it_lets_one_holder_in_at_a_time_under_contention(backend: Backend) -> None:
    managers = [backend.manager() for _ in range(3)]
    inside = 0
    most = 0
    entries = 0
    contended = counted("contended")

    async def worker(m: LockManager) -> None:
        nonlocal inside, most, entries
        for _ in range(5):
            async with m.hold("contended", ttl=5):
                inside += 1
                entries += 1
                most = max(most, inside)
                await anyio.sleep(0.002)  # yield so others can try to get in
                inside -= 1

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(worker, managers[i % 3])
    assert (most, entries) == (1, 30)
    assert counted("contended") > contended


async def test_it_grants_strictly_increasing_fences_across_holders(backend: Backend) -> None:
    fences = []
    for _ in range(10):
        async with backend.manager().hold("fenced", ttl=5) as lease:
            fences.append(lease.fence)
    assert fences == sorted(set(fences))


async def test_it_keeps_fences_increasing_when_the_counter_is_lost(backend: Backend) -> None:
    async with backend.manager().hold("restart", ttl=5) as lease:
        before = lease.fence
    # What a restart loses: Redis without persistence forgets the fence key; a restarted
    # daemon starts a new in-process LocalLocks.
    if backend.url is not None:
        redis = RedisLocks(backend.url)
        await redis._client.flushdb()
        await redis.close()
        again = backend.manager()
    else:
        again = LocalLocks()
    async with again.hold("restart", ttl=5) as lease:
        assert lease.fence > before


async def test_it_releases_on_cancellation_and_on_errors(backend: Backend) -> None:
    holder, other = backend.manager(), backend.manager()
    entered = anyio.Event()

    async def hold_forever() -> None:
        async with holder.hold("cancelled", ttl=30):
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_forever)
        await entered.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(2):  # far below the 30 s TTL: released, not expired
        async with other.hold("cancelled", ttl=30):
            pass

    with pytest.raises(KeyError, match="boom"):  # the body's own exception, not a group
        async with holder.hold("raising", ttl=30):
            raise KeyError("boom")
    with anyio.fail_after(2):
        async with other.hold("raising", ttl=30):
            pass


async def test_it_gives_up_waiting_when_the_waiter_is_cancelled(backend: Backend) -> None:
    holder, waiter = backend.manager(), backend.manager()
    entered, done = anyio.Event(), anyio.Event()

    async def hold() -> None:
        async with holder.hold("busy", ttl=30):
            entered.set()
            await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await entered.wait()
        with anyio.move_on_after(0.3) as scope:
            async with waiter.hold("busy", ttl=30):
                pytest.fail("acquired a held lock")
        assert scope.cancelled_caught
        done.set()
    with anyio.fail_after(2):
        async with waiter.hold("busy", ttl=30):
            pass


async def test_it_renews_a_held_lock_past_its_ttl(backend: Backend) -> None:
    holder, other = backend.manager(), backend.manager()
    entered, done = anyio.Event(), anyio.Event()
    leases: list[Lease] = []

    async def hold() -> None:
        async with holder.hold("renewed", ttl=0.4) as lease:
            leases.append(lease)
            entered.set()
            await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await entered.wait()
        with anyio.move_on_after(1.5) as scope:  # nearly 4 TTLs
            async with other.hold("renewed", ttl=0.4):
                pytest.fail("a renewed lock was granted to another holder")
        assert scope.cancelled_caught
        assert not leases[0].lost
        done.set()


# In-process locks cannot expire or be taken over (their holder is this process), so the
# tests below run on Redis only.


async def test_it_expires_a_lock_whose_holder_stopped_renewing(redis_url: str) -> None:
    crashed, waiter = RedisLocks(redis_url), RedisLocks(redis_url, poll_max=0.05)
    try:
        # A grant nobody renews: what a holder killed with SIGKILL leaves behind.
        await crashed._take("orphan", 0.5)
        started = time.monotonic()
        async with waiter.hold("orphan", ttl=5) as lease:
            waited = time.monotonic() - started
        assert 0.3 < waited < 2.0
        assert not lease.lost
    finally:
        await crashed.close()
        await waiter.close()


async def test_it_stops_the_holder_when_the_key_is_taken_over(redis_url: str) -> None:
    thief, holder = RedisLocks(redis_url), RedisLocks(redis_url)
    lost = counted("lost")
    after_block = False
    try:
        started = time.monotonic()
        async with holder.hold("stolen", ttl=0.6) as lease:
            # Another grant replaced ours (Redis forgot us and someone else took it).
            await thief._client.set("wfsched:lock:{stolen}", "someone-else", px=60_000)
            await anyio.sleep(30)
            pytest.fail("the body of a lost lease kept running")
        after_block = True
        assert lease.lost
        assert time.monotonic() - started < 2.0  # within about one renewal interval
        assert counted("lost") == lost + 1
        # Compare-and-delete: our release did not remove the other holder's key.
        assert await thief._client.get("wfsched:lock:{stolen}") == b"someone-else"
    finally:
        await thief.close()
        await holder.close()
    assert after_block


async def test_it_stops_the_holder_when_the_key_disappears(redis_url: str) -> None:
    redis, holder = RedisLocks(redis_url), RedisLocks(redis_url)
    try:
        async with holder.hold("deleted", ttl=0.6) as lease:
            await redis._client.delete("wfsched:lock:{deleted}")
            await anyio.sleep(30)
        assert lease.lost
    finally:
        await redis.close()
        await holder.close()


async def test_it_reports_a_lease_lost_once_its_validity_has_passed() -> None:
    lease = Lease("paused", 7, valid_until=time.monotonic() - 0.001)
    assert lease.lost
    assert not Lease("fresh", 8).lost


async def test_it_lists_live_replicas_from_their_heartbeats(redis_url: str) -> None:
    a, b = RedisLocks(redis_url), RedisLocks(redis_url)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: a.heartbeat({"id": "r1", "pid": 11}, ttl=5))
            tg.start_soon(lambda: b.heartbeat({"id": "r2", "pid": 22}, ttl=5))
            found: list[Any] = []

            async def both() -> None:
                nonlocal found
                while len(found) < 2:
                    found = await a.replicas()
                    await anyio.sleep(0.02)

            with anyio.fail_after(5):
                await both()
            assert [r["id"] for r in found] == ["r1", "r2"]
            text = await a.describe()
            assert "redis 7" in text and "2 live replica(s)" in text and "r2 (pid 22" in text
            tg.cancel_scope.cancel()
        # A replica that stops deregisters at once instead of waiting for its TTL.
        assert await a.replicas() == []
    finally:
        await a.close()
        await b.close()


async def test_it_names_an_unreachable_redis_in_its_error() -> None:
    port = free_port()
    locks = RedisLocks(f"redis://:hunter2secret@127.0.0.1:{port}/0", op_timeout=1)
    try:
        with pytest.raises(LockError) as caught:
            await locks.describe()
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert "hunter2secret" not in str(caught.value)
    finally:
        await locks.close()


async def test_it_describes_in_process_locks() -> None:
    assert "in-process" in await LocalLocks().describe()


def test_it_shows_running_daemons_in_wfsched_check(redis_url: str, tmp_path: Path) -> None:
    env = {"REDIS_URL": redis_url}
    with Daemon(tmp_path / "a", env=env) as a, Daemon(tmp_path / "b", env=env) as b:
        report = a.cli_json("check")
        [locks] = [c for c in report["checks"] if c["name"] == "locks"]
        assert locks["ok"] and "2 live replica(s)" in locks["detail"]
        assert f":{a.port} (pid {a.proc.pid}" in locks["detail"]  # type: ignore[union-attr]
        assert b.stop() == 0

        def locks_detail() -> str:
            report = a.cli_json("check")
            [locks] = [c for c in report["checks"] if c["name"] == "locks"]
            return str(locks["detail"])

        # A stopped daemon deregisters at once; polled because a starved replica's heartbeat
        # (a loaded CI machine) may lapse for a moment before it renews.
        def one_live() -> str | None:
            detail = locks_detail()
            return detail if "1 live replica(s)" in detail else None

        detail = wait_for(one_live, message="one live replica")
        assert f":{b.port} " not in detail
