"""Child process of the cron suite, APScheduler 3.11 side (the baseline).

AsyncIOScheduler + AsyncIOExecutor + MemoryJobStore, ``misfire_grace_time=None``,
``coalesce=True``, on uvloop like wfsched. The N jobs fire at the same instants as
wfsched's schedules (aligned: second 0; spread: second = the same hashed offset, whole
seconds). Each job gets its second offset as an argument, so the nominal instant is computed,
never inferred from a clock reading; lateness is callback entry minus nominal.

``lateness`` measures firing; ``idle`` measures start-up (add + start), RSS and idle CPU with
every job's next fire hours away.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import uvloop
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from benchmarks._cron_wfsched import rss_mib
from wfsched.schedules.cron import spread_offset

LATE: list[float] = []
WINDOW = [math.inf, math.inf]
PERIOD = [60]


async def job(offset: int) -> None:
    now = time.time()
    period = PERIOD[0]
    nominal = math.floor((now - offset) / period) * period + offset
    if WINDOW[0] <= nominal < WINDOW[1]:
        LATE.append(now - nominal)


def scheduler() -> AsyncIOScheduler:
    return AsyncIOScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": AsyncIOExecutor()},
        job_defaults={"misfire_grace_time": None, "coalesce": True},
        timezone=UTC,
    )


def offsets(n: int, workload: str, period: int) -> list[int]:
    if workload != "spread":
        return [0] * n
    return [int(spread_offset(f"wf{i:06d}/cron", period)) for i in range(n)]


async def lateness(n: int, workload: str, period: int, rounds: int) -> dict[str, Any]:
    started = time.perf_counter()
    PERIOD[0] = period
    sched = scheduler()
    load = time.perf_counter()
    for i, offset in enumerate(offsets(n, workload, period)):
        second = str(offset) if period == 60 else f"{offset}/{period}"
        sched.add_job(job, CronTrigger(second=second, timezone=UTC), args=(offset,), id=str(i))
    sched.start()
    loaded = time.perf_counter() - load
    rss_loaded = rss_mib()
    first = math.ceil((time.time() + 3) / period) * period
    WINDOW[:] = [first, first + rounds * period]
    expected = n * rounds
    while time.time() < first - 0.5:
        await asyncio.sleep(0.2)
    cpu_before = time.process_time()
    while len(LATE) < expected and time.time() < first + rounds * period + 120:
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu_before
    sched.shutdown(wait=False)
    late = sorted(LATE)
    return {
        "system": "apscheduler",
        "n": n,
        "workload": workload,
        "fires": len(late),
        "expected": expected,
        "p50": _pct(late, 50),
        "p99": _pct(late, 99),
        "max": late[-1] if late else math.nan,
        "load_s": loaded,
        "process_s": time.perf_counter() - started,
        "rss_loaded_mib": rss_loaded,
        "rss_mib": rss_mib(),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_ms_per_1000": cpu / max(1, len(late)) * 1_000_000,
    }


async def idle(n: int, seconds: float, spawned: float) -> dict[str, Any]:
    sched = scheduler()
    later = datetime.now(UTC) + timedelta(hours=6)
    for i in range(n):
        trigger = CronTrigger(hour=later.hour, minute=i % 60, timezone=UTC)
        sched.add_job(job, trigger, args=(0,), id=str(i))
    sched.start()
    startup = time.time() - spawned
    rss = rss_mib()
    cpu = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu
    sched.shutdown(wait=False)
    return {
        "system": "apscheduler",
        "n": n,
        "startup_s": startup,
        "rss_mib": rss,
        "idle_cpu_pct": cpu / seconds * 100,
    }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._cron_aps")
    sub = parser.add_subparsers(dest="mode", required=True)
    late = sub.add_parser("lateness")
    late.add_argument("--n", type=int, required=True)
    late.add_argument("--workload", choices=("aligned", "spread"), required=True)
    late.add_argument("--period", type=int, default=60)
    late.add_argument("--rounds", type=int, default=2)
    rest = sub.add_parser("idle")
    rest.add_argument("--n", type=int, required=True)
    rest.add_argument("--seconds", type=float, default=60)
    rest.add_argument("--spawned", type=float, required=True)
    args = parser.parse_args(argv)
    if args.mode == "lateness":
        coro = lateness(args.n, args.workload, args.period, args.rounds)
    else:
        coro = idle(args.n, args.seconds, args.spawned)
    result = uvloop.run(coro) if hasattr(uvloop, "run") else asyncio.run(coro)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip tearing down N jobs


if __name__ == "__main__":
    main()
