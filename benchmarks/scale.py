"""Scale suite: the age of the event log. A constant 1,000 fires/s with a short retention.

Workloads (each its own function; later rows of this suite add theirs beside them):

* ``retention_plateau``: the real daemon (``wfsched serve``, engine mode, JSON logs at
  warning, the dispatch suite's stand-in engine and load-generating trigger) fires 1,000
  events/s for six retention periods while ``Hooks`` sends a steady 100 signed webhooks/s,
  once with retention off and once with it on (A B; A B B A in the full run), on SQLite and
  PostgreSQL. The store's size (SQLite: database + WAL; PostgreSQL: every events partition
  and the key table) is sampled at each turnover; figures: size per turnover, the ratio
  last / first plateau (1.0: flat), and with pruning against without (ratio > 1: pruning
  costs nothing), from the end of the first retention period on: **dispatch** p50/p99
  (fire to engine arrival) and **ingress** p50/p99 (webhook scheduled send to its 202).
* ``prune_rate``: events deleted per second by ``prune_all`` (exact row deletes, no rest
  between steps) on a store seeded with old dispatched events, on SQLite and PostgreSQL.
* routing rows (:mod:`benchmarks.scale_routing`): req/s, CPU and RSS with 1 to 100k deployed
  webhook workflows, deploy and start-up time, GitHub deliveries with 10k github workflows.
* ``dashboard_pages``: render time of each dashboard page (the fleet, a search, a deep page,
  one workflow with history and, in the full form, its history filters, fire density) served
  by the real daemon over HTTP, on a SQLite store seeded with many deployments (a cron and a
  manual trigger each) and events (10 million in the full form, inserted by SQL). One in
  five deployments (one in four, quick) also has an ``every`` trigger that fires with all the
  others of its kind (``Bursts``): 20,000 fires at :30 of every minute (2,500 every 20 s,
  quick). Two phases, each with a fresh daemon: the pages requested in turn only while a
  burst is being dispatched, and only while none is (from its window on, once the counter of
  dispatched events has stopped moving): the first request after start (cold) and the
  median, p95 and maximum of the warm ones, per phase.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks import scale_routing
from benchmarks.dispatch import Bench, _get, _wait
from benchmarks.harness import Row, compare, median, percentile

SUITE = "scale"
RATE = 1000
HOOK_RATE, HOOK_CONNS = 100, 4
HOOK_WORKFLOW = "hooks"
HOOK_PATH = f"/api/v1/public/webhook/workflow/{HOOK_WORKFLOW}"
HOOK_SECRET = "bench-scale-secret-0123456789abcdef"
PG_DSN = os.environ.get("WFSCHED_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class PgSchema:
    """A fresh schema for one run, dropped afterwards."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"bench_{secrets.token_hex(4)}"
        self.conn = psycopg.connect(PG_DSN, autocommit=True)
        self.conn.execute(f"CREATE SCHEMA {self.name}")
        sep = "&" if "?" in PG_DSN else "?"
        self.url = f"{PG_DSN}{sep}options=-csearch_path%3D{self.name}"

    def size(self) -> int:
        row = self.conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'wfsched_event%%'",
            (self.name,),
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.execute(f"DROP SCHEMA {self.name} CASCADE")
        self.conn.close()


def _sqlite_size(workdir: Path) -> Callable[[], int]:
    def size() -> int:
        total = 0
        for suffix in ("", "-wal"):
            path = workdir / f"wfsched.db{suffix}"
            total += path.stat().st_size if path.exists() else 0
        return total

    return size


class Hooks(threading.Thread):
    """A steady webhook load beside the fires: HOOK_RATE signed requests/s on HOOK_CONNS
    keep-alive connections, each sent at its scheduled instant. A request's latency runs from
    that instant to its 202 (an answer that comes late also delays the next request of its
    connection, and that delay counts: no coordinated omission)."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.samples: list[tuple[float, float]] = []  # (scheduled offset, latency) in s
        self.errors = 0

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from benchmarks._ingress_load import Conn, build_request
        from wfsched.triggers.webhook.auth import sign_hmac_sha256_hex

        conns = [await Conn.open("127.0.0.1", self.port) for _ in range(HOOK_CONNS)]
        start = time.monotonic()

        async def worker(k: int, conn: Conn) -> None:
            for i in itertools.count(k, HOOK_CONNS):
                due = start + i / HOOK_RATE
                if due - start > self.seconds:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                body = json.dumps({"n": i, "pad": "x" * 900}).encode()
                headers = {
                    "Content-Type": "application/json",
                    "X-Signature-256": sign_hmac_sha256_hex(HOOK_SECRET, body),
                }
                status, _ = await conn.send(
                    build_request("127.0.0.1", self.port, HOOK_PATH, body, headers)
                )
                if status != 202:
                    self.errors += 1
                self.samples.append((due - start, time.monotonic() - due))

        try:
            await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
        finally:
            for conn in conns:
                conn.close()


def _deploy_hooks(bench: Bench) -> None:
    """Deploy the webhook workflow over the management API and wait until it answers."""
    spec = {
        "id": HOOK_WORKFLOW,
        "triggers": [{"type": "webhook", "auth": {"type": "hmac", "secret": HOOK_SECRET}}],
    }
    base = f"http://127.0.0.1:{bench.port}"
    _get(f"{base}/api/v1/deployment/workflows/{HOOK_WORKFLOW}/deploy", timeout=30, body=spec)
    _wait(lambda: _get(f"{base}/api/v1/public/webhooks/status")["webhooks"], 30, "the webhook")


def _one_run(
    kind: str, retention: float, seconds: float, env: dict[str, str]
) -> tuple[dict[str, float], list[int]]:
    """Fire RATE/s and send HOOK_RATE webhooks/s for ``seconds``; sample the store size at
    every ``retention`` seconds. Latencies count from the end of the first retention period
    (pruning under way when it is on)."""
    workdir = Path(tempfile.mkdtemp(prefix="wfsched-bench-scale-"))
    schema = PgSchema() if kind == "postgres" else None
    extra = {**env, "WFSCHED_LOG_LEVEL": "warning"}
    if schema is not None:
        extra["DATABASE_URL"] = schema.url
    bench = Bench(workdir, extra)
    size = schema.size if schema is not None else _sqlite_size(workdir)
    result: dict[str, Any] = {}
    count = int(RATE * seconds)
    samples: list[int] = []
    try:
        _deploy_hooks(bench)
        hooks = Hooks(bench.port, seconds)
        thread = threading.Thread(target=lambda: result.update(bench.wfsched(RATE, count, False)))
        thread.start()
        hooks.start()
        began = time.monotonic()
        while thread.is_alive():
            thread.join(timeout=max(0.0, began + retention * (len(samples) + 1) - time.monotonic()))
            if time.monotonic() - began <= seconds + 1:
                samples.append(size())
        hooks.join(30)
        if result.get("distinct") != count or hooks.errors:
            sys.stderr.write(
                f"scale: {kind} fired {count}, engine saw {result.get('distinct')} distinct;"
                f" {hooks.errors} webhooks not answered 202\n"
            )
        fires = [x * 1000 for x in result["latencies"][int(RATE * retention) :]]
        hooks_ms = [lat * 1000 for at, lat in hooks.samples if at >= retention]
        figures = {
            "dispatch_p50": percentile(fires, 50),
            "dispatch_p99": percentile(fires, 99),
            "ingress_p50": percentile(hooks_ms, 50),
            "ingress_p99": percentile(hooks_ms, 99),
        }
        sys.stderr.write(f"scale: {kind} {env['WFSCHED_HISTORY_RETENTION']} {figures}\n")
        return figures, samples
    finally:
        bench.close()
        if schema is not None:
            schema.close()
        shutil.rmtree(workdir, ignore_errors=True)


def retention_plateau(kind: str, quick: bool) -> Iterator[Row]:
    retention = 2.0 if quick else 10.0
    seconds = (5 if quick else 6) * retention
    on = {
        "WFSCHED_HISTORY_RETENTION": f"{retention:g}s",
        "WFSCHED_HISTORY_FAILED_RETENTION": f"{retention:g}s",
        "WFSCHED_HISTORY_PRUNE_INTERVAL": "0.5s" if quick else "1s",
        "WFSCHED_HISTORY_PARTITION_INTERVAL": f"{retention / 2:g}s",
    }
    off = {"WFSCHED_HISTORY_RETENTION": "0", "WFSCHED_HISTORY_FAILED_RETENTION": "0"}
    # Off and on alternate (A B, or A B B A in the full run): the machine's noise then
    # falls on both; latency figures are medians over the runs of each.
    order = ["off", "on"] if quick else ["off", "on", "on", "off"]
    figures: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    sizes: dict[str, list[list[int]]] = {"off": [], "on": []}
    for which in order:
        got, sampled = _one_run(kind, retention, seconds, on if which == "on" else off)
        figures[which].append(got)
        sizes[which].append(sampled)
    count = int(RATE * seconds)
    workload = f"1000 fires/s + {HOOK_RATE} webhooks/s, {retention:g}s retention, {kind}"
    sizes_on, sizes_off = sizes["on"][0], sizes["off"][0]
    for i, value in enumerate(sizes_on):
        yield Row(SUITE, "wfsched", workload, count, f"size_turnover_{i + 1}", value / 1e6, "MB")
    if len(sizes_on) >= 3:
        plateau = sizes_on[1]  # after the first full retention period has passed
        yield Row(
            SUITE,
            "wfsched",
            workload,
            count,
            "size_last_over_first_plateau",
            round(sizes_on[-1] / plateau, 3),
            "x",
        )
    if sizes_off:
        yield compare(
            SUITE,
            workload,
            count,
            "size_end",
            "MB",
            sizes_on[-1] / 1e6,
            "retention off",
            sizes_off[-1] / 1e6,
            higher_is_better=False,
        )
    for metric in ("dispatch_p50", "dispatch_p99", "ingress_p50", "ingress_p99"):
        yield compare(
            SUITE,
            workload,
            count,
            f"{metric}_pruning",
            "ms",
            median([f[metric] for f in figures["on"]]),
            "retention off",
            median([f[metric] for f in figures["off"]]),
            higher_is_better=False,
        )


async def _seed_and_prune(url: str, n: int) -> float:
    from wfsched.backends import open_store
    from wfsched.models import NewEvent, new_execution_id, utcnow
    from wfsched.store import Retention
    from wfsched.store.retention import prune_all

    store = open_store(url)
    await store.open()
    try:
        old = utcnow() - timedelta(days=2)
        for i in range(0, n, 5000):
            await store.record(
                [
                    NewEvent(
                        execution_id=new_execution_id(),
                        workflow_id="wf",
                        trigger_id="t",
                        trigger_type="bench",
                        dedupe_key=new_execution_id(),
                        payload={"pad": "x" * 200},
                        fired_at=old,
                    )
                    for _ in range(min(5000, n - i))
                ]
            )
        claimed = await store.claim("bench", n, 600, utcnow())
        from wfsched.models import DispatchOutcome

        for i in range(0, len(claimed), 5000):
            await store.finish(
                "bench",
                [
                    DispatchOutcome(
                        execution_id=e.execution_id, status="dispatched", fired_at=e.fired_at
                    )
                    for e in claimed[i : i + 5000]
                ],
            )
        started = time.perf_counter()
        deleted = await prune_all(store, Retention(utcnow() - timedelta(days=1), None), rest=False)
        took = time.perf_counter() - started
        return deleted / took
    finally:
        await store.close()


def prune_rate(kind: str, quick: bool) -> Iterator[Row]:
    import anyio

    n = 10_000 if quick else 200_000
    workdir = Path(tempfile.mkdtemp(prefix="wfsched-bench-prune-"))
    schema = PgSchema() if kind == "postgres" else None
    try:
        url = schema.url if schema is not None else f"sqlite:///{workdir}/wfsched.db"
        rate = anyio.run(_seed_and_prune, url, n)
        yield Row(
            SUITE, "wfsched", f"prune {kind} (row deletes)", n, "prune_rate", round(rate), "rows/s"
        )
    finally:
        if schema is not None:
            schema.close()
        shutil.rmtree(workdir, ignore_errors=True)


CRONS = ("0 9 * * *", "*/15 * * * *", "H 9 * * *", "H/5 * * * *", "30 6 * * 1-5", "0 * * * *")
PAGES = {
    "fleet": "/ui/",
    "search": "/ui/?q=Workflow%2099",
    "deep page": "/ui/?page={deep}",
    "workflow": "/ui/workflows/wf-000003",
    "density": "/ui/density",
}
FILTERED = {
    # The full form also times the workflow page's history filters (wf-000003 holds 1 in
    # 1,000 of the events): a status no event has, and a trigger on a later page.
    "workflow, failed only": "/ui/workflows/wf-000003?status=failed",
    "workflow, trigger c, page 3": "/ui/workflows/wf-000003?trigger=c&page=3",
}


@dataclass(frozen=True)
class Bursts:
    """One deployment in ``share`` also has an ``every`` trigger of ``period`` seconds, offset
    ``offset`` from the epoch: they all fire at once, away from the crons' minute boundary.
    Pages are measured during a burst from its instant for ``window`` seconds, and quiet from
    ``quiet_from`` seconds after it (and once the burst is dispatched) to ``quiet_to``."""

    share: int
    period: float
    offset: float
    window: float
    quiet_from: float
    quiet_to: float

    def trigger(self) -> dict[str, str]:
        return {
            "type": "cron",
            "id": "b",
            "every": f"{self.period:g}s",
            "offset": f"{self.offset:g}s",
        }

    def size(self, deployments: int) -> int:
        return len(range(0, deployments, self.share))

    def window_of(self, phase: str, now: float) -> tuple[float, float]:
        """The window of ``phase`` (``burst`` or ``quiet``) open at ``now`` or next (Unix s)."""
        start, end = (0.0, self.window) if phase == "burst" else (self.quiet_from, self.quiet_to)
        last = now - (now - self.offset) % self.period  # the latest burst instant
        for instant in (last, last + self.period):
            if now < instant + end:
                return max(instant + start, now), instant + end
        raise AssertionError("unreachable")


QUICK_BURSTS = Bursts(share=4, period=20, offset=10, window=4, quiet_from=6, quiet_to=9.5)
"""2,500 of 10,000 deployments fire together every 20 s, at :10, :30 and :50 (the crons fire
at :00: after the quiet window of the :50 burst)."""
FULL_BURSTS = Bursts(share=5, period=60, offset=30, window=10, quiet_from=15, quiet_to=28)
"""20,000 of 100,000 deployments fire together at :30 of every minute (the crons at :00)."""


async def _seed_fleet(url: str, deployments: int, bursts: Bursts | None = None) -> None:
    from wfsched.backends import open_store
    from wfsched.plugins import configure
    from wfsched.spec import parse_spec

    _, registry = configure(None)
    store = open_store(url)
    await store.open()
    try:
        for start in range(0, deployments, 5000):
            specs = []
            for i in range(start, min(deployments, start + 5000)):
                cron = {"type": "cron", "id": "c", "cron": CRONS[i % len(CRONS)]}
                triggers = [cron, {"type": "manual", "id": "m"}]
                if bursts is not None and i % bursts.share == 0:
                    triggers.append(bursts.trigger())
                document = {"id": f"wf-{i:06d}", "name": f"Workflow {i}", "triggers": triggers}
                specs.append(parse_spec(document, registry))
            await store.apply(specs)
    finally:
        await store.close()


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Dispatched cron events n in [?1, ?2), fired ?5 ms apart from ?3 (Unix ms), of workflow
# n % ?4, made by SQLite itself: the execution id is the ULID's 10 time characters (as
# wfsched.models encodes them) then n in hex (Crockford digits too), so ids are unique and
# sort by fire time.
_EVENT_ROWS = f"""
WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2),
r AS (SELECT i, ?3 + i * ?5 AS ms FROM n),
s AS (SELECT i, ms, strftime('%Y-%m-%dT%H:%M:%f', ms / 1000.0, 'unixepoch') || '000Z' AS at
      FROM r)
INSERT INTO events (execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,
    scheduled_at, fired_at, payload, status, attempts, dispatched_at)
SELECT {" || ".join(f"substr('{_CROCKFORD}', ((ms >> {45 - 5 * k}) & 31) + 1, 1)" for k in range(10))}
    || printf('%016X', i), printf('wf-%06d', i % ?4), 'c', 'cron', 'c@' || at, at, at, '{{}}',
    'dispatched', 1, at FROM s
"""
SEED_SPAN_MS = 29 * 86_400_000
"""The seeded events span the last 29 days: within the default retention (30 days), so the
daemon under measurement prunes none of them."""


def _seed_events(path: Path, events: int, workflows: int = 1000) -> None:
    """``events`` dispatched cron events up to now (one a second, or closer so they span at
    most SEED_SPAN_MS), spread over the first ``workflows`` deployments, inserted by one SQL
    statement per million (no row passes through Python); nothing is left to send."""
    import sqlite3

    from wfsched.models import utcnow

    step = max(1, min(1000, SEED_SPAN_MS // max(1, events)))
    first = int(utcnow().timestamp() * 1000) - events * step
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        # The schema's own secondary indexes, built once after the rows (a sort, not
        # millions of inserts into each), from the statements that made them.
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='events'"
            " AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        for lo in range(0, events, 1_000_000):
            hi = min(events, lo + 1_000_000)
            conn.execute("BEGIN")
            conn.execute(_EVENT_ROWS, (lo, hi, first, workflows, step))
            conn.execute("COMMIT")
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def dashboard_pages(quick: bool) -> Iterator[Row]:
    import anyio

    deployments, events, repeats = (10_000, 100_000, 5) if quick else (100_000, 10_000_000, 20)
    bursts = QUICK_BURSTS if quick else FULL_BURSTS
    workdir = Path(tempfile.mkdtemp(prefix="wfsched-bench-ui-"))
    url = f"sqlite:///{workdir}/wfsched.db"
    pages = {
        name: template.format(deep=deployments // 50 // 2)
        for name, template in (PAGES if quick else {**PAGES, **FILTERED}).items()
    }
    try:
        began = time.perf_counter()
        anyio.run(_seed_fleet, url, deployments, bursts)
        _seed_events(workdir / "wfsched.db", events)
        sys.stderr.write(f"scale: dashboard store seeded in {time.perf_counter() - began:.0f} s\n")
        size = bursts.size(deployments)
        for phase in ("quiet", "burst"):
            # A fresh daemon per phase: the first request of each page (cold) falls in it.
            timings = _dashboard_phase(workdir, url, deployments, pages, repeats, bursts, phase)
            label = "during a burst of " + f"{size:,}" + " fires" if phase == "burst" else "quiet"
            for name, values in timings.items():
                workload = (
                    f"dashboard {name}, {label} (SQLite, {deployments} deployments,"
                    f" {events} events)"
                )
                for metric, value in (
                    ("render_cold", values[0]),
                    ("render_p50", median(values[1:])),
                    ("render_p95", percentile(values[1:], 95)),
                    ("render_max", max(values[1:])),
                ):
                    yield Row(
                        SUITE, "wfsched", workload, deployments, metric, round(value, 1), "ms"
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _dashboard_phase(
    workdir: Path,
    url: str,
    deployments: int,
    pages: dict[str, str],
    repeats: int,
    bursts: Bursts,
    phase: str,
) -> dict[str, list[float]]:
    """Start the daemon, wait until every cron trigger is armed, then request the pages in
    turn (one after another) within ``phase``'s windows until each has 1 + ``repeats``
    timings (ms); the first is the page's first request since the start."""
    import subprocess

    import httpx

    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(port)}
    env.pop("WFSCHED_CONFIG", None)
    log = open(workdir / f"daemon-{phase}.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfsched", "serve"], cwd=workdir, env=env, stdout=log, stderr=log
    )
    timings: dict[str, list[float]] = {name: [] for name in pages}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the daemon did not start (log: {log.name})")
                time.sleep(0.2)
            # Measure the settled daemon: every cron trigger armed.
            while client.get("/api/v1/triggers/health").json()["timers"] < deployments:
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not arm every trigger in time")
                time.sleep(0.2)
            turn = itertools.cycle(pages)
            size = bursts.size(deployments)
            while any(len(t) <= repeats for t in timings.values()):
                opens, closes = bursts.window_of(phase, time.time())
                time.sleep(max(0.0, opens - time.time()))
                if phase == "quiet":
                    # Quiet once the burst before is dispatched (and its log written).
                    _wait_dispatched(client, size, closes)
                before = _dispatched(client) if phase == "burst" else 0
                while time.time() < closes and any(len(t) <= repeats for t in timings.values()):
                    name = next(turn)
                    if len(timings[name]) > repeats:
                        continue
                    began = time.perf_counter()
                    client.get(pages[name]).raise_for_status()
                    timings[name].append((time.perf_counter() - began) * 1000)
                if phase == "burst":
                    # The window was a burst only if the burst was still being dispatched.
                    dispatched = _dispatched(client) - before
                    sys.stderr.write(
                        f"scale: burst window: {dispatched} of {size} fires dispatched by its"
                        " last request\n"
                    )
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    return timings


def _dispatched(client: Any) -> int:
    """Events dispatched so far (the daemon's ``wfsched_trigger_events`` counter)."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("wfsched_trigger_events_total{") and 'status="dispatched"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _wait_dispatched(client: Any, size: int, until: float) -> None:
    """Poll until a burst of ``size`` fires has been dispatched (the counter moves by less
    than a tenth of it in a second), or until ``until`` (Unix s)."""
    last = _dispatched(client)
    while time.time() < until:
        time.sleep(1.0)
        now = _dispatched(client)
        if now - last < size / 10:
            return
        last = now


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(quick: bool) -> Iterator[Row]:
    sys.stderr.write(f"scale: load average before {os.getloadavg()[0]:.2f}\n")
    yield from scale_routing.run(quick)  # the number of deployed workflows (issue #18)
    yield from dashboard_pages(quick)
    for kind in ("sqlite", "postgres"):
        yield from prune_rate(kind, quick)
    for kind in ("sqlite", "postgres"):
        yield from retention_plateau(kind, quick)
