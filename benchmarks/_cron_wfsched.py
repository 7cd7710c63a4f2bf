"""Child processes of the cron suite, wfsched side.

``lateness``: N pre-resolved schedules armed in the real Timer over a real SQLite store behind
the daemon's group-commit recorder; every fire's lateness is taken when its event has
committed (the durable event), relative to its due instant (scheduled instant + spread).

``deploy``: write N cron deployments into a SQLite store, as ``wfsched deploy`` does, for
the start-up runs of ``wfsched serve``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from wfsched.models import Claim, NewEvent
from wfsched.recorder import GroupCommitRecorder, Recorded
from wfsched.schedules.cron import spread_offset
from wfsched.schedules.series import cron_series, every_series
from wfsched.store.sqlite import SqliteStore
from wfsched.timer import Timer
from wfsched.timer.instants import quantize
from wfsched.trigger import TimerSpec


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


class Stamping:
    """The real store; each event's lateness is taken when its batch has committed."""

    def __init__(self, store: SqliteStore, spreads: dict[str, float]) -> None:
        self.store = store
        self.spreads = spreads
        self.window = (math.inf, math.inf)
        self.late: list[float] = []
        self.fires = 0

    async def record(self, events: Sequence[NewEvent], claim: Claim | None = None) -> Recorded:
        result = await self.store.record(events, claim)
        stored = time.time()
        for event, created in result:
            assert created and event.scheduled_at is not None
            nominal = event.scheduled_at.timestamp()
            if self.window[0] <= nominal < self.window[1]:
                self.late.append(stored - nominal - self.spreads[event.workflow_id])
        self.fires += len(result)
        return result


async def lateness(n: int, workload: str, period: int, rounds: int) -> dict[str, Any]:
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="wfsched-cron-bench-"))
    store = SqliteStore(f"sqlite:///{workdir}/bench.db")
    await store.open()
    series = cron_series("* * * * *", "UTC", "bench") if period == 60 else every_series(period)
    spreads: dict[str, float] = {}
    specs: dict[float, TimerSpec] = {}
    load = time.perf_counter()
    stamping = Stamping(store, spreads)
    recorder = GroupCommitRecorder(stamping)
    timer = Timer(recorder)
    for i in range(n):
        workflow_id = f"wf{i:06d}"
        spread = spread_offset(f"{workflow_id}/cron", period) if workload == "spread" else 0.0
        spec = specs.get(spread)
        if spec is None:
            spec = specs[spread] = TimerSpec(schedule=series, spread=spread)
        spreads[workflow_id] = quantize(spread)
        timer.add(workflow_id, "cron", "cron", spec, {})
    loaded = time.perf_counter() - load
    rss_loaded = rss_mib()
    first = math.ceil((time.time() + 3) / period) * period
    stamping.window = (first, first + rounds * period)
    expected = n * rounds
    last_due = first + rounds * period
    cpu_before = 0.0
    async with anyio.create_task_group() as tg:
        recorder.start(tg)
        tg.start_soon(timer.run)
        while time.time() < first - 0.5:
            await anyio.sleep(0.2)
        cpu_before = time.process_time()
        while len(stamping.late) < expected and time.time() < last_due + 120:
            await anyio.sleep(0.05)
        cpu = time.process_time() - cpu_before
        tg.cancel_scope.cancel()
    await store.close()
    late = sorted(stamping.late)
    return {
        "system": "wfsched",
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
        "groups": len({round(s, 2) for s in spreads.values()}),
    }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


async def deploy(n: int, db: str, cron: str) -> dict[str, Any]:
    from wfsched.deployments import DeploymentService
    from wfsched.plugins import configure
    from wfsched.spec import parse_spec

    # As `wfsched deploy` does: the arm records' digest covers the plugins' settings too.
    settings, registry = configure(None, environ={})
    store = SqliteStore(f"sqlite:///{db}")
    await store.open()
    service = DeploymentService(store=store, registry=registry, settings=settings)
    batch = []
    for i in range(n):
        document = {"id": f"wf{i:06d}", "triggers": [{"type": "cron", "cron": cron}]}
        batch.append(parse_spec(document, registry))
        if len(batch) == 5000:
            await service.deploy(batch)
            batch = []
    if batch:
        await service.deploy(batch)
    await store.close()
    return {"deployed": n}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._cron_wfsched")
    sub = parser.add_subparsers(dest="mode", required=True)
    late = sub.add_parser("lateness")
    late.add_argument("--n", type=int, required=True)
    late.add_argument("--workload", choices=("aligned", "spread"), required=True)
    late.add_argument("--period", type=int, default=60)
    late.add_argument("--rounds", type=int, default=2)
    dep = sub.add_parser("deploy")
    dep.add_argument("--n", type=int, required=True)
    dep.add_argument("--db", required=True)
    dep.add_argument("--cron", required=True)
    args = parser.parse_args(argv)
    if args.mode == "lateness":
        result = anyio.run(
            lateness,
            args.n,
            args.workload,
            args.period,
            args.rounds,
            backend_options={"use_uvloop": True},
        )
    else:
        result = anyio.run(deploy, args.n, args.db, args.cron)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
