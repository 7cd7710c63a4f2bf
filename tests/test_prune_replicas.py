"""Two replicas (PostgreSQL + Redis) pruning by lock: the one pruning is killed by SIGKILL in
the middle of an expired partition; the survivor takes the lock over and finishes, keeping
every failed and pending event and the dedupe keys of what stays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import psycopg
import pytest
import redis

from tests.daemon_proc import Daemon, wait_for
from tests.test_retention import event
from wfsched.models import DispatchOutcome, utcnow
from wfsched.store.postgres import PostgresStore

pytestmark = pytest.mark.slow
DAYS, PER_DAY = 2, 20_000
LOCK_KEY = "wfsched:lock:{history-prune}"


async def _seed(url: str) -> tuple[list[str], list[str]]:
    """DAYS whole days of dispatched events 60 days old, plus kept ones: failed events
    (failed retention is longer) and pending ones (never pruned). Returns (failed, pending)."""
    store = PostgresStore(url)
    await store.open()
    try:
        start = utcnow().replace(hour=1, minute=0, second=0, microsecond=0) - timedelta(days=60)
        failed = [event(start + timedelta(minutes=i), key=f"failed-{i}") for i in range(5)]
        pending = [event(start + timedelta(minutes=i), key=f"pending-{i}") for i in range(5)]
        await store.record([*failed, *pending])
        for day in range(DAYS):
            at = start + timedelta(days=day)
            for _ in range(PER_DAY // 5000):
                await store.record([event(at) for _ in range(5000)])
        keep = {e.execution_id: e for e in failed + pending}
        while True:
            claimed = await store.claim("seed", 10_000, 60, utcnow() + timedelta(seconds=1))
            if not claimed:
                break
            await store.finish(
                "seed",
                [
                    DispatchOutcome(
                        execution_id=e.execution_id,
                        status="failed"
                        if e.dedupe_key.startswith("failed")
                        else "pending"
                        if e.execution_id in keep
                        else "dispatched",
                        # a pending keeper is not due again while the test looks
                        next_attempt_at=utcnow() + timedelta(days=1),
                        fired_at=e.fired_at,
                    )
                    for e in claimed
                ],
            )
        return [e.execution_id for e in failed], [e.execution_id for e in pending]
    finally:
        await store.close()


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


def _keys(url: str) -> int:
    return _count(url, "SELECT count(*) FROM wfsched_event_keys")


def _last_step(d: Daemon) -> str:
    """The timestamp of the replica's latest prune step ("" if none)."""
    steps = [line for line in d.log_lines() if str(line.get("event", "")).startswith("prune step")]
    return str(steps[-1]["timestamp"]) if steps else ""


def test_a_replica_killed_mid_prune_is_relieved_by_the_survivor(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    failed, pending = anyio.run(_seed, pg_url)
    total = _count(pg_url, "SELECT count(*) FROM wfsched_events")
    assert total == DAYS * PER_DAY + 10
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "WFSCHED_LOG_LEVEL": "debug",
        "WFSCHED_HISTORY_PRUNE_INTERVAL": "0.5s",
    }
    a, b = Daemon(tmp_path / "a", env=env), Daemon(tmp_path / "b", env=env)
    try:
        a.start()
        b.start()
        lock = redis.Redis.from_url(redis_url)
        # Kill the replica holding the prune lock while it is part-way through: the lock
        # key is set and that replica logged the latest step (the other waits its turn).
        # Should its round end between the look and the kill, it is restarted and killed again.
        for _ in range(3):
            wait_for(
                lambda: lock.exists(LOCK_KEY) and 0 < total - _keys(pg_url) < total * 0.9,
                60,
                interval=0.02,
                message="pruning under way",
            )
            holder, survivor = (a, b) if _last_step(a) > _last_step(b) else (b, a)
            holder.kill()
            if lock.pttl(LOCK_KEY) > 0:  # the dead holder's lease: the survivor must wait it out
                break
            holder.start()
        else:
            raise AssertionError("the lock was released before every kill")
        killed_at = _last_step(holder)
        left = _count(pg_url, "SELECT count(*) FROM wfsched_events")
        assert left > 10, "the killed replica had finished already; nothing was mid-prune"
        # The lock's lease expires (15 s at most) and the survivor finishes the job.
        wait_for(
            lambda: _count(pg_url, "SELECT count(*) FROM wfsched_events") == 10,
            90,
            interval=0.5,
            message="the survivor pruning the rest",
        )
        assert _last_step(survivor) > killed_at
        kept = {
            e["execution_id"]: e["status"] for e in survivor.cli_json("history", "--limit", "100")
        }
        assert kept == {**dict.fromkeys(failed, "failed"), **dict.fromkeys(pending, "pending")}
        # Every key left belongs to a kept event: a kept event still dedupes, nothing else does.
        assert _count(pg_url, "SELECT count(*) FROM wfsched_event_keys") == 10
        assert (
            _count(
                pg_url,
                "SELECT count(*) FROM wfsched_partitions WHERE hi < now() - interval '30 days'",
            )
            == 0
        )
        assert survivor.stop() == 0
    finally:
        a.kill()
        b.kill()
