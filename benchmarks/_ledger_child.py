"""Child processes of the ledger suite (one measurement each, JSON on the last line).

``cron``: N triggers on a 1 s interval armed in the real Timer over a real SQLite store behind
the group-commit recorder; the process CPU per 1,000 recorded fires over ``--seconds``. The
parent runs it with ``WFSCHED_LEDGER=on`` and ``off`` alternately.

``explain``: a per-minute cron trigger with 24 h of events and daemon runs in a SQLite store;
the wall time of ``explain`` over those 24 h (median of repeats).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import anyio

from wfsched.backends import open_store
from wfsched.deployments import DeploymentService
from wfsched.explain import ExplainService, Window
from wfsched.models import DaemonRun, NewEvent, new_execution_id, utcnow
from wfsched.plugins import configure
from wfsched.recorder import GroupCommitRecorder
from wfsched.schedules.series import every_series
from wfsched.store.sqlite import SqliteStore
from wfsched.timer import Timer
from wfsched.trigger import TimerSpec


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def cron(n: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(f"sqlite:///{tmp}/bench.db")
        await store.open()
        recorder = GroupCommitRecorder(store)
        timer = Timer(recorder)
        spec = TimerSpec(schedule=every_series(1.0))
        for i in range(n):
            timer.add(f"w{i}", "cron", "cron", spec, {})
        async with anyio.create_task_group() as tg:
            recorder.start(tg)
            tg.start_soon(timer.run)
            await anyio.sleep(2.0)  # warm up
            before, fired = _cpu(), len(await store.history(None, limit=10_000_000))
            await anyio.sleep(seconds)
            cpu = _cpu() - before
            fired = len(await store.history(None, limit=10_000_000)) - fired
            tg.cancel_scope.cancel()
        await store.close()
    return {"cpu_ms_per_1000": cpu / max(fired, 1) * 1e6, "fires": float(fired)}


async def explain(repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "wfsched.toml").write_text("")
        settings, registry = configure(
            str(Path(tmp) / "wfsched.toml"),
            environ={"DATABASE_URL": f"sqlite:///{tmp}/bench.db"},
        )
        store = open_store(settings.store_url)
        await store.open()
        svc = DeploymentService(store=store, registry=registry, settings=settings)
        spec = svc.parse_document(
            {"id": "minutely", "triggers": [{"type": "cron", "cron": "* * * * *"}]}
        )
        await store.apply([spec])
        now = utcnow().replace(second=0, microsecond=0)
        start = now - timedelta(hours=24)
        # The deployment existed (and a daemon ran) over the whole day, one restart at noon.
        if isinstance(store, SqliteStore):
            await store._run(
                lambda c: c.execute(
                    "UPDATE deployment_log SET at=? WHERE workflow_id='minutely'",
                    (start.isoformat().replace("+00:00", "Z"),),
                )
            )
        noon = start + timedelta(hours=12)
        await store.beat(DaemonRun(replica_id="a", started_at=start, last_seen=noon))
        await store.beat(DaemonRun(replica_id="a", started_at=noon, last_seen=utcnow()))
        events = [
            NewEvent(
                execution_id=new_execution_id(),
                workflow_id="minutely",
                trigger_id="cron",
                trigger_type="cron",
                dedupe_key=f"cron@{i}",
                payload={},
                fired_at=start + timedelta(minutes=i, seconds=0.05),
                scheduled_at=start + timedelta(minutes=i),
            )
            for i in range(24 * 60)
            if i % 97  # a few instants without an event, to explain
        ]
        await store.record(events)
        service = ExplainService(svc)
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            answer = await service.explain("minutely", Window(start, now))
            times.append(time.perf_counter() - began)
        await store.close()
    return {
        "median_ms": statistics.median(times) * 1000,
        "occurrences": float(len(answer["occurrences"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("cron", "explain"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.what == "cron":
        result = anyio.run(cron, args.n, args.seconds)
    else:
        result = anyio.run(explain, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
