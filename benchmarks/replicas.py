"""Replicas suite: 1, 2 and 3 ``wfsched serve`` replicas on one PostgreSQL and one Redis.

Each system under test is N replica processes (runs alternate 1 2 3, then 3 2 1) on a private
PostgreSQL 15 (fsync on, ``track_commit_timestamp`` on) and a private Redis, both started
here on free ports. Deployed once for all runs:

* ``spread``: N_SPREAD interval triggers ``every = PERIOD`` with ``spread = PERIOD`` (each
  fire delayed by a stable hash of its trigger), i.e. a steady N_SPREAD / PERIOD fires/s;
* ``burst``: N_BURST interval triggers ``every = PERIOD`` without spread: N_BURST fires due at
  the same instant;
* ``leader``: one lock-elected ticker (``_replicas_leader``), standing for a mailbox watcher.

Time-based triggers are sharded: each replica records the due fires of the timer shards it
leases (wfsched.timer.shards); the store's unique dedupe key stays the guard. Figures, over
WINDOWS periods per run (dispatch mode ``log``, ``scheduler.max_workers = 100``):

* duplicates and misses: recorded fires per (trigger, instant) beyond one, and expected
  instants never recorded (both must be 0);
* lateness p99 (ms): the PostgreSQL commit time of the fire minus its due instant, against
  the same workload on one replica (ratio = 1 replica / N replicas; must be ≥ 1/1.2);
* claims/s: events of one aligned burst dispatched per second, first to last dispatch
  (``dispatched_at``: when each send returned; events recorded in a replica reach its own
  dispatcher already leased, so this is the rate of the whole record-and-dispatch path);
* recovery after kill -9 (s): from killing the lock holder to the first tick of its
  successor, against the bound lease TTL + one tick (ratio = bound / measured).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.harness import ROOT, Row, compare, median, percentile
from tests.daemon_proc import free_port, wait_for
from tests.servers import PgServer, RedisServer
from wfsched import spread_offset

SUITE = "replicas"
BASELINE = "wfsched x1"
TTL, TICK = 3.0, 0.5
MAX_WORKERS = 100
"""scheduler.max_workers of each replica: a claim leases at most this many events."""


class Bench:
    """The private servers, the deployed workload, and the replicas of the current run."""

    def __init__(self, workdir: Path, *, n_spread: int, n_burst: int, period: int) -> None:
        self.workdir = workdir
        self.n_spread, self.n_burst, self.period = n_spread, n_burst, period
        self.pg = PgServer(durable=True, settings={"track_commit_timestamp": "on"}).start()
        self.redis = RedisServer().start()
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE wfsched")
        self.store_url = self.pg.url.rsplit("/", 1)[0] + "/wfsched"
        plugins = workdir / "plugins"
        plugins.mkdir()
        shutil.copy(ROOT / "benchmarks" / "_replicas_leader.py", plugins / "bench_leader.py")
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.store_url,
            "REDIS_URL": self.redis.url,
            "WFSCHED_PLUGINS_DIR": str(plugins),
            "WFSCHED_DISPATCH_MODE": "log",
            "SCHEDULER_MAX_WORKERS": str(MAX_WORKERS),
            "WFSCHED_LOG_FORMAT": "json",
        }
        self.env.pop("WFSCHED_CONFIG", None)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.offsets: dict[tuple[str, str], float] = {}
        self._deploy()

    def _deploy(self) -> None:
        specs = self.workdir / "specs"
        specs.mkdir()
        per = 100
        for kind, n, spread in (("spread", self.n_spread, self.period), ("burst", self.n_burst, 0)):
            for w in range(math.ceil(n / per)):
                wid = f"{kind}-{w:03d}"
                lines = [f'id = "{wid}"']
                for t in range(min(per, n - w * per)):
                    tid = f"t{t:03d}"
                    lines += [
                        "[[triggers]]",
                        'type = "cron"',
                        f'id = "{tid}"',
                        f'every = "{self.period}s"',
                        f"spread = {spread}",
                    ]
                    self.offsets[(wid, tid)] = spread_offset(f"{wid}/{tid}", spread)
                (specs / f"{wid}.toml").write_text("\n".join(lines) + "\n")
        (specs / "leader.toml").write_text(
            f'id = "leader"\n[[triggers]]\ntype = "bench-leader"\nttl = {TTL}\ntick = {TICK}\n'
        )
        self.cli("deploy", str(specs))

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "wfsched", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"wfsched {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.store_url, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description is not None else []

    # one run -------------------------------------------------------------------------------
    def start(self, n: int) -> None:
        self.sql("TRUNCATE wfsched_events")
        self.flush_redis()
        ports = [free_port() for _ in range(n)]
        for i, port in enumerate(ports):
            log = open(self.workdir / f"replica-{n}-{i}.log", "ab")  # noqa: SIM115 - the child's
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "wfsched", "serve"],
                    cwd=self.workdir,
                    env={**self.env, "PORT": str(port)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        for port in ports:
            wait_for(partial(_health, port), 120, 0.1, f"replica on port {port}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis.url)
        try:
            client.flushall()
        finally:
            client.close()

    def measure(self, n: int, windows: int) -> dict[str, float]:
        """Run n replicas over ``windows`` periods; return the figures."""
        self.start(n)
        try:
            period = self.period
            first = math.ceil((time.time() + 1) / period) * period
            last = first + windows * period
            # Spread fires come up to one period after their nominal instant.
            _sleep_until(last + period + 2)
            rows = self.sql(
                "SELECT workflow_id, trigger_id, extract(epoch FROM scheduled_at),"
                " extract(epoch FROM pg_xact_commit_timestamp(xmin)), status,"
                " extract(epoch FROM dispatched_at) FROM wfsched_events"
                " WHERE workflow_id <> 'leader' AND scheduled_at >= to_timestamp(%s)"
                " AND scheduled_at < to_timestamp(%s)",
                first,
                last,
            )
            figures = self._figures(rows, first, windows)
            if n > 1:
                figures["recovery_s"] = self._kill_leader()
            return figures
        finally:
            self.stop()

    def _figures(self, rows: list[tuple[Any, ...]], first: float, windows: int) -> dict[str, float]:
        instants = {(w, t, float(at)) for w, t, at, *_ in rows}
        expected = (self.n_spread + self.n_burst) * windows
        spread: list[float] = []
        burst: list[float] = []
        for w, t, at, committed, *_ in rows:
            late_ms = (float(committed) - float(at) - self.offsets[(w, t)]) * 1000
            (spread if w.startswith("spread") else burst).append(late_ms)
        bursts = [
            [
                float(r[5])
                for r in rows
                if r[0].startswith("burst")
                and r[4] == "dispatched"
                and float(r[2]) == first + k * self.period
            ]
            for k in range(windows)
        ]
        rates = [(len(b) - 1) / (max(b) - min(b)) for b in bursts if len(b) > 1 and max(b) > min(b)]
        undispatched = sum(1 for r in rows if r[4] != "dispatched")
        if undispatched:
            sys.stderr.write(f"replicas: {undispatched} events not dispatched at the end\n")
        return {
            "duplicates": len(rows) - len(instants),
            "misses": expected - len(instants),
            "spread_p99_ms": percentile(spread, 99),
            "burst_p99_ms": percentile(burst, 99),
            "claims_per_s": median(rates),
        }

    def _kill_leader(self) -> float:
        """Kill -9 the lock holder; return seconds until its successor's first tick."""

        def holder() -> int:
            rows = self.sql(
                "SELECT payload->>'holder' FROM wfsched_events"
                " WHERE workflow_id = 'leader' ORDER BY scheduled_at DESC NULLS LAST,"
                " execution_id DESC LIMIT 1"
            )
            return int(rows[0][0]) if rows else 0

        pid = wait_for(holder, 30, 0.1, "a leader tick")
        victim = next(p for p in self.procs if p.pid == pid)
        victim.kill()
        killed_at = time.time()
        victim.wait()

        def successor() -> float:
            rows = self.sql(
                "SELECT min(extract(epoch FROM pg_xact_commit_timestamp(xmin)))"
                " FROM wfsched_events WHERE workflow_id = 'leader'"
                " AND payload->>'holder' <> %s AND pg_xact_commit_timestamp(xmin)"
                " > to_timestamp(%s)",
                str(pid),
                killed_at,
            )
            return float(rows[0][0]) if rows and rows[0][0] is not None else 0.0

        return wait_for(successor, TTL + TICK + 30, 0.05, "a new leader") - killed_at

    def close(self) -> None:
        self.stop()
        self.redis.close()
        self.pg.close()


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return bool(json.loads(r.read()).get("status") == "ok")
    except OSError:
        return False


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 1.0))


def run(quick: bool) -> Iterator[Row]:
    n_spread = n_burst = 2_000 if quick else 10_000
    period, windows, runs = (3, 2, 1) if quick else (10, 3, 2)
    workload = f"{n_spread // 1000}k spread + {n_burst // 1000}k burst"
    n = n_spread + n_burst
    workdir = Path(tempfile.mkdtemp(prefix="wfsched-bench-replicas-"))
    bench = Bench(workdir, n_spread=n_spread, n_burst=n_burst, period=period)
    results: dict[int, list[dict[str, float]]] = {1: [], 2: [], 3: []}
    try:
        for i in range(runs):
            for replicas in (1, 2, 3) if i % 2 == 0 else (3, 2, 1):
                results[replicas].append(bench.measure(replicas, windows))
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)

    def med(replicas: int, key: str) -> float:
        return median([r[key] for r in results[replicas]])

    yield Row(SUITE, BASELINE, workload, n, "lateness_p99_spread", med(1, "spread_p99_ms"), "ms")
    yield Row(SUITE, BASELINE, workload, n, "lateness_p99_burst", med(1, "burst_p99_ms"), "ms")
    yield Row(SUITE, BASELINE, workload, n, "claims_per_s", med(1, "claims_per_s"), "1/s")
    for replicas in (2, 3):
        name = f"{replicas} replicas: {workload}"
        for key in ("duplicates", "misses"):
            yield Row(
                SUITE, "wfsched", name, n, key, max(r[key] for r in results[replicas]), "events"
            )
        for key, metric in (
            ("spread_p99_ms", "lateness_p99_spread"),
            ("burst_p99_ms", "lateness_p99_burst"),
        ):
            yield compare(
                SUITE,
                name,
                n,
                metric,
                "ms",
                med(replicas, key),
                BASELINE,
                med(1, key),
                higher_is_better=False,
            )
        yield compare(
            SUITE,
            name,
            n,
            "claims_per_s",
            "1/s",
            med(replicas, "claims_per_s"),
            BASELINE,
            med(1, "claims_per_s"),
            higher_is_better=True,
        )
        yield compare(
            SUITE,
            f"{replicas} replicas: kill -9 the lock holder",
            1,
            "recovery_after_kill9",
            "s",
            med(replicas, "recovery_s"),
            f"bound: lease TTL {TTL:g} s + tick {TICK:g} s",
            TTL + TICK,
            higher_is_better=False,
        )
