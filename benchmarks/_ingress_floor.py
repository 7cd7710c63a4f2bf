"""The durable floor: the minimal equivalent of wfsched's work for an HMAC webhook in log mode.

Served by ``uvicorn benchmarks._ingress_floor:app`` with the same flags as the other systems.
Raw ASGI (no framework), the HMAC check over the raw body, the body parsed with orjson, the
payload wfsched stores (method, path, query, headers, body), one row per request in wfsched's
own ``events`` table (same file format, indexes and pragmas) inserted by group commit in one
worker thread, the 202 sent only after the commit, then the rows marked dispatched in a second
transaction, as ``log`` mode does. No routing, no other auth schemes, no dedupe header, no
metrics, no logging, no limits, no error answers worth the name: the work wfsched must do at
the least, on the same stack, to read its figures against.
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
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import orjson

from benchmarks._asgi import read_body

SECRET = os.environ.get("BENCH_SECRET", "").encode()
_INSERT = (
    "INSERT INTO events (execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,"
    " fired_at, payload, status, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
)
_DISPATCHED = (
    "UPDATE events SET status='dispatched', attempts=1, dispatched_at=? WHERE execution_id=?"
)
_JSON = [(b"content-type", b"application/json")]
_ids = itertools.count(time.time_ns() // 1000)
_pool = ThreadPoolExecutor(1)
_pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
_db: list[sqlite3.Connection] = []
_flushing = False


def _open() -> sqlite3.Connection:
    path = os.path.join(os.environ.get("FLOOR_DIR") or tempfile.mkdtemp(), "floor.db")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # as wfsched's default store.sync
    ddl = resources.files("wfsched.store") / "migrations" / "sqlite" / "0001_init.sql"
    conn.executescript(ddl.read_text())
    return conn


def _write(sql: str, rows: list[tuple[Any, ...]]) -> None:
    conn = _db[0]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")


async def _flush() -> None:
    global _flushing
    loop = asyncio.get_running_loop()
    try:
        while _pending:
            batch = _pending[:]
            _pending.clear()
            rows = [row for row, _ in batch]
            try:
                await loop.run_in_executor(_pool, _write, _INSERT, rows)
            except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            await loop.run_in_executor(_pool, _write, _DISPATCHED, [(stamp, r[0]) for r in rows])
    finally:
        _flushing = False


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        try:
            _db.append(_open())
        except Exception as exc:  # noqa: BLE001 - uvicorn (--lifespan on) exits with it
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _flushing
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await read_body(receive)
    signature = dict(scope["headers"]).get(b"x-signature-256", b"")
    expected = b"sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, signature):
        await _answer(send, 401, b'{"error":"unauthorized"}')
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
    execution_id = f"{next(_ids):026d}"
    fired = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    row = (execution_id, "bench", "webhook", "webhook", execution_id, fired, payload, fired)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    _pending.append((row, done))
    if not _flushing:
        _flushing = True
        loop.create_task(_flush())
    await done
    answer = {"execution_id": execution_id, "workflow_id": "bench", "status": "accepted"}
    await _answer(send, 202, orjson.dumps(answer))
