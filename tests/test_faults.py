"""Fault tests: locks and replicas against a private PostgreSQL and Redis that get paused,
crashed and restarted (never the shared servers). Reliability notes section 7.3 (LK-2..4).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Self

import anyio
import anyio.to_thread
import httpx
import psycopg
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.daemon_proc import Daemon, free_port, wait_for
from tests.engine_app import EngineThread
from tests.servers import PgServer, RedisServer
from wfsched.backends import open_store
from wfsched.errors import StoreError
from wfsched.locks.redis import RedisLocks
from wfsched.models import TriggerSpec, WorkflowSpec
from wfsched.spec import spec_hash
from wfsched.store import Store

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with PgServer() as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def pg_url(pg: PgServer) -> str:
    """The private server, in a database of this test's own."""
    name = f"t{secrets.token_hex(6)}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    """A store holding workflow ``wf`` whose trigger ``manual`` has a fenced cursor."""
    s = open_store(pg_url)
    await s.open()
    doc = {"id": "wf", "triggers": [{"type": "manual", "id": "manual"}]}
    await s.apply(
        [
            WorkflowSpec(
                id="wf",
                name="wf",
                triggers=(TriggerSpec(id="manual", type="manual"),),
                document=doc,
                spec_hash=spec_hash(doc),
            )
        ]
    )
    try:
        yield s
    finally:
        await s.close()


async def stored_fence(store: Store) -> int:
    [state] = await store.trigger_states("wf")
    return state.fence


class Child:
    """A ``tests.lock_holder`` process, read line by line with deadlines."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        self._out = BufferedByteReceiveStream(proc.stdout)

    async def line(self, timeout: float = 20) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            raw = await self._out.receive_until(b"\n", 1 << 16)
        return dict(json.loads(raw))

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send(text.encode())


async def test_it_refuses_the_write_of_a_holder_frozen_past_its_ttl(
    redis_server: RedisServer, pg_url: str, store: Store
) -> None:
    ttl = 1.0
    cmd = [sys.executable, "-m", "tests.lock_holder", redis_server.url, pg_url, "mailbox", str(ttl)]
    async with await anyio.open_process(cmd, cwd=ROOT, stderr=None) as proc:
        child = Child(proc)
        first = await child.line()
        os.kill(proc.pid, signal.SIGSTOP)  # the Kleppmann pause: GC, swap, VM migration
        frozen_at = time.monotonic()
        try:
            locks = RedisLocks(redis_server.url, poll_max=0.05)
            async with locks.hold("mailbox", ttl=10) as lease:
                took_over = time.monotonic() - frozen_at
                assert lease.fence > first["fence"]
                await store.set_cursor("wf", "manual", {"holder": "parent"}, fence=lease.fence)
                os.kill(proc.pid, signal.SIGCONT)
                await child.send("write\n")
                late = await child.line()
                ended = await child.line()
                assert late["write"] == "rejected", late
                assert "stale fencing token" in late["error"]
                assert late["lost_before_write"] is True  # a checking holder would have stopped
                assert ended == {"block": "ended", "lost": True}
                assert await store.get_cursor("wf", "manual") == {"holder": "parent"}
                assert await stored_fence(store) == lease.fence
                # The stale holder's release (compare-and-delete) left our key alone.
                key = await locks._client.get("wfsched:lock:{mailbox}")
                assert key == lease.token.encode()
                assert not lease.lost
            await locks.close()
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        with anyio.fail_after(20):
            assert await proc.wait() == 0
    assert ttl * 0.9 < took_over < ttl + 2


async def test_it_refuses_the_older_of_two_holders_after_redis_forgot_the_lock(
    redis_server: RedisServer, store: Store
) -> None:
    a = RedisLocks(redis_server.url, poll_max=0.05)
    b = RedisLocks(redis_server.url, poll_max=0.05)
    holding, go = anyio.Event(), anyio.Event()
    outcome: dict[str, Any] = {}

    async def older() -> None:
        async with a.hold("cursor", ttl=3) as lease:
            await store.set_cursor("wf", "manual", {"holder": "a"}, fence=lease.fence)
            outcome["a_fence"] = lease.fence
            holding.set()
            with anyio.CancelScope(shield=True):  # a write in flight while Redis restarts
                await go.wait()
                try:
                    await store.set_cursor(
                        "wf", "manual", {"holder": "a", "late": 1}, fence=lease.fence
                    )
                    outcome["late"] = "accepted"
                except StoreError:
                    outcome["late"] = "rejected"
            await anyio.sleep_forever()  # keeps acting as the holder until it learns otherwise
        outcome["a_lost"] = lease.lost

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(older)
            await holding.wait()
            # The lock key and the fence counter are gone: a Redis without persistence.
            await anyio.to_thread.run_sync(redis_server.shutdown_nosave)
            await anyio.to_thread.run_sync(redis_server.start)
            with anyio.fail_after(5):
                async with b.hold("cursor", ttl=10) as lease:  # a double grant
                    assert lease.fence > outcome["a_fence"]  # fences survived the restart
                    await store.set_cursor("wf", "manual", {"holder": "b"}, fence=lease.fence)
                    go.set()
                    with anyio.fail_after(10):
                        while "a_lost" not in outcome:
                            await anyio.sleep(0.02)
                    assert await store.get_cursor("wf", "manual") == {"holder": "b"}
                    # The stale holder's release (compare-and-delete) left our key alone.
                    assert await b._client.get("wfsched:lock:{cursor}") == lease.token.encode()
                    assert not lease.lost
        assert outcome["late"] == "rejected"
        assert outcome["a_lost"] is True  # stopped at its next renewal (TTL/3 = 1 s)
    finally:
        await a.close()
        await b.close()


async def test_it_keeps_two_lock_users_writing_through_a_redis_restart(
    redis_server: RedisServer, store: Store
) -> None:
    accepted: list[tuple[str, int, str]] = []
    rejected: list[tuple[str, int, str]] = []
    phase = "before"

    async def user(name: str) -> None:
        locks = RedisLocks(redis_server.url, poll_max=0.05, op_timeout=1)
        try:
            while True:
                async with locks.hold("counter", ttl=1) as lease:
                    seen = phase
                    try:
                        await store.set_cursor("wf", "manual", {"holder": name}, fence=lease.fence)
                        accepted.append((name, lease.fence, seen))
                    except StoreError:
                        rejected.append((name, lease.fence, seen))
                    await anyio.sleep(0.02)
                await anyio.sleep(0.01)  # let the other user in
        finally:
            with anyio.CancelScope(shield=True):
                await locks.close()

    def wrote(name: str, when: str) -> bool:
        return any(n == name and p == when for n, _, p in accepted)

    async with anyio.create_task_group() as tg:
        tg.start_soon(user, "a")
        tg.start_soon(user, "b")
        with anyio.fail_after(10):
            while not (wrote("a", "before") and wrote("b", "before")):
                await anyio.sleep(0.02)
        await anyio.to_thread.run_sync(redis_server.shutdown_nosave)
        phase = "down"
        await anyio.to_thread.run_sync(redis_server.start)
        phase = "after"
        with anyio.fail_after(10):  # both recover, with no restart of theirs
            while not (wrote("a", "after") and wrote("b", "after")):
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()

    before = [f for _, f, p in accepted if p == "before"]
    after = [f for _, f, p in accepted if p == "after"]
    assert min(after) > max(before)  # the fence series continued above the lost counter
    assert await stored_fence(store) == max(f for _, f, _ in accepted)
    # Every refused write came from a lease granted before a newer one wrote.
    for _, fence, _ in rejected:
        assert any(f > fence for _, f, _ in accepted)


# --- replicas: 3 `wfsched serve` processes on one private PostgreSQL and Redis -------------

TICKS = ("tick-1", "tick-2", "tick-3")
# PostgreSQL outage (OB-4): a 503 within seconds (GitHub gives a delivery 10 s), and every
# replica acknowledging again within 5 s of the server's return.
OUTAGE_DEADLINE = 15.0
OUTAGE_ANSWER_MAX = 3.0
RECOVERY_DEADLINE = 10.0
RECOVERY_MAX = 5.0


def write_specs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for wid in TICKS:
        (folder / f"{wid}.toml").write_text(
            f'id = "{wid}"\n[[triggers]]\ntype = "cron"\nevery = "1s"\n'
        )
    (folder / "hook.toml").write_text('id = "hook"\n[[triggers]]\ntype = "webhook"\n')
    return folder


class Cluster:
    """N replicas sharing one store and one Redis, dispatching to one local engine."""

    def __init__(self, root: Path, *, store_url: str, redis_url: str, n: int = 3) -> None:
        self.engine = EngineThread(free_port())
        self.engine.start()
        env = {
            "DATABASE_URL": store_url,
            "REDIS_URL": redis_url,
            "WFSCHED_DISPATCH_MODE": "engine",
            "WORKFLOW_ENGINE_URL": self.engine.url,
            "WFSCHED_DISPATCH_CLAIM_TTL": "2s",
            "WFSCHED_DISPATCH_RETRY_BASE": "0.2s",
            "WFSCHED_DISPATCH_RETRY_MAX": "1s",
            "WFSCHED_DISPATCH_MAX_ATTEMPTS": "100",
        }
        self.replicas = [Daemon(root / f"replica-{i}", env=env) for i in range(n)]
        self.store_url = store_url

    def __enter__(self) -> Self:
        for r in self.replicas:
            r.start(wait=False)
        for r in self.replicas:
            r.wait_healthy(30)
        return self

    def __exit__(self, *exc: object) -> None:
        for r in self.replicas:
            r.__exit__()
        self.engine.close()

    def live(self) -> list[Daemon]:
        return [r for r in self.replicas if r.proc is not None]

    def events(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.store_url) as conn:
            return conn.execute(
                "SELECT execution_id, workflow_id, trigger_id, dedupe_key, scheduled_at, status"
                " FROM wfsched_events"
            ).fetchall()

    def engine_keys(self) -> list[str | None]:
        return list(self.engine.call(self.engine.engine.keys))


class WebhookLoad:
    """Threads posting webhooks round robin to the live replicas, recording every answer."""

    def __init__(self, cluster: Cluster, *, threads: int = 4, rate: float = 40.0) -> None:
        self.cluster = cluster
        self.accepted: list[str] = []
        self.answers: list[tuple[float, float, int, str]] = []  # (sent, answered, status, url)
        self._stop = threading.Event()
        self._pace = threads / rate
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, offset: int) -> None:
        n = offset
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(self._pace):
                live = self.cluster.live()
                if not live:
                    continue
                target = live[n % len(live)]
                n += 1
                sent = time.monotonic()
                try:
                    r = client.post(
                        f"{target.url}/api/v1/public/webhook/workflow/hook", json={"n": n}
                    )
                except httpx.HTTPError:
                    continue  # never acknowledged: the sender would retry
                self.answers.append((sent, time.monotonic(), r.status_code, target.url))
                if r.status_code == 202:
                    self.accepted.append(r.json()["execution_id"])

    def count(self, status: int, *, sent_after: float = 0.0) -> int:
        return sum(1 for sent, _, s, _ in self.answers if s == status and sent > sent_after)


def locks_detail(replica: Daemon) -> str:
    report = replica.cli_json("check")
    return str(next(c["detail"] for c in report["checks"] if c["name"] == "locks"))


def settle(cluster: Cluster, load: WebhookLoad) -> list[tuple[Any, ...]]:
    """Stop the cron fires, wait for every event to be dispatched, return the events."""
    cluster.live()[0].cli("pause", *TICKS)

    def settled() -> list[tuple[Any, ...]]:
        events = cluster.events()
        if any(e[5] != "dispatched" for e in events):
            return []
        if not {e[0] for e in events} <= set(cluster.engine_keys()):
            return []
        return events

    return wait_for(settled, 30, interval=0.2, message="every event dispatched")


def check_events(events: list[tuple[Any, ...]], load: WebhookLoad) -> dict[str, Any]:
    """The invariants of every run: no duplicate, nothing lost, no hole in the cron series."""
    ids = {e[0] for e in events}
    assert len(ids) == len(events)
    assert len({(e[1], e[3]) for e in events}) == len(events)  # dedupe keys
    ticks = [e for e in events if e[1] in TICKS]
    instants = {(e[1], e[4]) for e in ticks}
    assert len(instants) == len(ticks), "one cron instant recorded twice"
    for wid in TICKS:
        seconds = sorted(int(at.timestamp()) for w, at in instants if w == wid)
        assert seconds, f"{wid} never fired"
        missing = set(range(seconds[0], seconds[-1] + 1)) - set(seconds)
        assert not missing, f"{wid} missed {sorted(missing)}"
    lost = set(load.accepted) - ids
    assert not lost, f"{len(lost)} acknowledged webhooks are not in the store"
    assert len(set(load.accepted)) == len(load.accepted)
    return {"events": len(events), "cron": len(ticks), "webhooks": len(load.accepted)}


def test_three_replicas_lose_and_duplicate_nothing_through_kill_9_and_a_redis_restart(
    tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    with Cluster(tmp_path, store_url=pg_url, redis_url=redis_server.url) as cluster:
        cluster.replicas[0].cli("deploy", str(write_specs(tmp_path / "specs")))
        wait_for(lambda: len(cluster.engine_keys()) >= 6, 20, message="cron fires dispatched")
        with WebhookLoad(cluster) as load:
            wait_for(lambda: len(load.accepted) >= 60, 20, message="webhooks accepted")
            cluster.replicas[0].kill()  # SIGKILL mid-run: no drain, claims left behind
            killed_at = len(load.accepted)
            wait_for(
                lambda: len(load.accepted) >= killed_at + 40,
                30,
                message="webhooks accepted by the survivors",
            )
            redis_server.shutdown_nosave()  # and the lock server forgets everything
            redis_server.start()
            restarted_at = len(load.accepted)
            wait_for(
                lambda: len(load.accepted) >= restarted_at + 40,
                30,
                message="webhooks accepted after the Redis restart",
            )
        # The survivors announce themselves again; the killed one's heartbeat has expired.
        survivor = cluster.replicas[1]
        wait_for(
            lambda: "2 live replica(s)" in locks_detail(survivor),
            15,
            message="two replicas in wfsched check",
        )
        events = settle(cluster, load)
        figures = check_events(events, load)
        # `wfsched check` (locks_detail) reaches the engine URL with a GET, which is no dispatch
        # and carries no Idempotency-Key.
        keys = [key for key in cluster.engine_keys() if key]
        assert set(keys) == {e[0] for e in events}  # every event reached the engine
        print(
            "kill -9:",
            figures,
            "engine requests:",
            len(keys),
            "redelivered:",
            len(keys) - len(set(keys)),
        )


def recovery_times(load: WebhookLoad, urls: list[str], up_at: float) -> dict[str, float]:
    """Seconds from ``up_at`` to each replica's first acknowledgement after it."""
    firsts: dict[str, float] = {}
    for _, done, status, url in load.answers:
        if status == 202 and done > up_at and url in urls:
            firsts[url] = min(firsts.get(url, done), done)
    return {url: at - up_at for url, at in firsts.items()}


def test_replicas_answer_503_while_postgres_is_down_and_recover_without_restart(
    tmp_path: Path, pg: PgServer, pg_url: str, redis_server: RedisServer
) -> None:
    with Cluster(tmp_path, store_url=pg_url, redis_url=redis_server.url) as cluster:
        cluster.replicas[0].cli("deploy", str(write_specs(tmp_path / "specs")))
        wait_for(lambda: len(cluster.engine_keys()) >= 6, 20, message="cron fires dispatched")
        pids = [r.proc.pid for r in cluster.replicas if r.proc is not None]
        urls = [r.url for r in cluster.replicas]
        with WebhookLoad(cluster) as load:
            wait_for(lambda: len(load.accepted) >= 40, 20, message="webhooks accepted")
            pg.stop(mode="immediate")
            down_from = time.monotonic()
            # A replica learns the server is gone at its next connection check; from then on
            # it waits at most a second for a connection, so each sender soon gets its 503.
            wait_for(
                lambda: load.count(503, sent_after=down_from) >= 12,
                OUTAGE_DEADLINE,
                interval=0.1,
                message="503 answers to requests sent while PostgreSQL is down",
            )
            for r in cluster.replicas:
                assert r.get("/health").status_code == 503
            down_until = time.monotonic()
            pg.start()
            up_at = time.monotonic()
            wait_for(
                lambda: len(recovery_times(load, urls, up_at)) == len(urls),
                RECOVERY_DEADLINE,
                message="every replica acknowledging webhooks again",
            )
        recovered = recovery_times(load, urls, up_at)
        # Never an acknowledgement for a request made and answered while the store was down.
        during = [s for sent, done, s, _ in load.answers if down_from < sent < done < down_until]
        assert during and set(during) == {503}
        waits = sorted(
            done - sent for sent, done, s, _ in load.answers if s == 503 and sent > down_from
        )
        slowest, median = waits[-1], waits[len(waits) // 2]
        print(
            f"postgres down: 503 latency median {median:.2f} s, max {slowest:.2f} s"
            f" ({len(waits)} answers); recovery per replica"
            f" {sorted(round(t, 2) for t in recovered.values())} s"
        )
        assert slowest < OUTAGE_ANSWER_MAX, f"a 503 took {slowest:.1f} s"
        assert max(recovered.values()) < RECOVERY_MAX  # OB-4: within 5 s of PostgreSQL's return
        assert [r.proc.pid for r in cluster.replicas if r.proc is not None] == pids
        for r in cluster.replicas:
            assert r.get("/health").status_code == 200
        events = settle(cluster, load)
        figures = check_events(events, load)
        print("postgres down:", figures, f"503s: {load.count(503)}")
