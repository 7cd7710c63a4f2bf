"""The durable floor: the minimal equivalent of wfsched's work for an HMAC webhook in log mode.

Served by ``uvicorn benchmarks._ingress_floor:app`` with the same flags as the other systems.
Raw ASGI (no framework), the HMAC check over the raw body, the body parsed with orjson, the
payload wfsched stores (method, path, query, headers, body), one row per request in wfsched's
own ``events`` table (same file format, every migration, same pragmas: WAL,
``synchronous=FULL`` as wfsched's default ``store.sync``) inserted by group commit in one
worker thread, the 202 sent only after the commit, then the rows marked dispatched in a second
transaction, as ``log`` mode does. No routing, no other auth schemes, no dedupe header, no
metrics, no logging, no limits, no error answers worth the name: the work wfsched must do at
the least, on the same stack, to read its figures against. ``_ingress_floor_pg`` is the same
on PostgreSQL; both share :class:`Floor` (the request) and :class:`GroupCommit`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import orjson

from benchmarks._asgi import read_body

SECRET = os.environ.get("BENCH_SECRET", "").encode()
_JSON = [(b"content-type", b"application/json")]
Row = tuple[Any, ...]
"""(execution_id, workflow_id, trigger_id, trigger_type, dedupe_key, fired_at, payload)"""
Write = Callable[[list[Row]], Awaitable[None]]


class GroupCommit:
    """Rows queue while a batch commits; each batch is one insert, the callers are answered
    after it, then the batch is marked dispatched in a second transaction."""

    def __init__(self, insert: Write, dispatched: Write) -> None:
        self.insert, self.dispatched = insert, dispatched
        self.pending: list[tuple[Row, asyncio.Future[None]]] = []
        self.flushing = False

    def add(self, row: Row) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self.pending.append((row, done))
        if not self.flushing:
            self.flushing = True
            loop.create_task(self._flush())
        return done

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                rows = [row for row, _ in batch]
                try:
                    await self.insert(rows)
                except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
                await self.dispatched(rows)
        finally:
            self.flushing = False


async def answer(send: Any, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Floor:
    """The raw ASGI app; ``open`` (run at lifespan start) returns the store's GroupCommit."""

    def __init__(self, open_store: Callable[[], Awaitable[GroupCommit]]) -> None:
        self.open_store = open_store
        self.commits: GroupCommit | None = None
        self.ids = itertools.count(time.time_ns() // 1000)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "lifespan.shutdown":
            try:
                self.commits = await self.open_store()
            except Exception as exc:  # noqa: BLE001 - uvicorn (--lifespan on) exits with it
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        body = await read_body(receive)
        signature = dict(scope["headers"]).get(b"x-signature-256", b"")
        expected = b"sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, signature):
            await answer(send, 401, b'{"error":"unauthorized"}')
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        del headers["x-signature-256"]
        payload = orjson.dumps(
            {
                "method": scope["method"],
                "path": scope["path"],
                "query": {},
                "headers": headers,
                "body": orjson.loads(body),
                "body_encoding": "json",
            }
        )
        execution_id = f"{next(self.ids):026d}"
        fired = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        assert self.commits is not None
        await self.commits.add(
            (execution_id, "bench", "webhook", "webhook", execution_id, fired, payload)
        )
        reply = {"execution_id": execution_id, "workflow_id": "bench", "status": "accepted"}
        await answer(send, 202, orjson.dumps(reply))


# SQLite ------------------------------------------------------------------------------------
_INSERT = (
    "INSERT INTO events (execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,"
    " fired_at, payload, status, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
)
_DISPATCHED = (
    "UPDATE events SET status='dispatched', attempts=1, dispatched_at=? WHERE execution_id=?"
)


def _open_sqlite() -> sqlite3.Connection:
    path = os.path.join(os.environ.get("FLOOR_DIR") or tempfile.mkdtemp(), "floor.db")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # as wfsched's default store.sync
    if conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
        raise RuntimeError("the SQLite floor must run synchronous=FULL")
    folder = resources.files("wfsched.store") / "migrations" / "sqlite"
    for script in sorted(folder.iterdir(), key=lambda f: f.name):
        if script.name.endswith(".sql"):
            conn.executescript(script.read_text())
    return conn


async def _sqlite() -> GroupCommit:
    pool = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    conn = await loop.run_in_executor(pool, _open_sqlite)

    def write(sql: str, rows: list[Row]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")

    async def insert(rows: list[Row]) -> None:
        await loop.run_in_executor(pool, write, _INSERT, [(*r, r[5]) for r in rows])

    async def dispatched(rows: list[Row]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        await loop.run_in_executor(pool, write, _DISPATCHED, [(stamp, r[0]) for r in rows])

    return GroupCommit(insert, dispatched)


app = Floor(_sqlite)
