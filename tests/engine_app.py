"""A stand-in workflow engine on loopback: records every execute request, answers by script.

In async tests ``Engine`` runs on the test's own event loop (``await engine.start()``); for
tests that drive a daemon subprocess, ``EngineThread`` runs it on a loop in a thread so it
can be stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """What the engine answers; ``delay`` is spent after recording, before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str = '{"status": "accepted"}'
    hang_up: bool = False
    """Close the connection without answering, as a server closing a keep-alive socket."""


@dataclass
class Received:
    """One request as the engine saw it."""

    path: str
    workflow_id: str
    key: str | None
    body: Any
    headers: dict[str, str]
    at: float
    raw: bytes = b""
    """The body as sent."""


Responder = Callable[[Received, int], Reply]
"""Decides the reply from the request and how often its Idempotency-Key was seen before."""


class Engine:
    """An aiohttp app serving ``POST /…/v1/workflows/{id}/execute`` under any path prefix, and
    ``POST /sink…`` as a CloudEvents sink."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.replies: list[Reply] = []
        self.responder: Responder | None = None
        self.overlaps: list[str] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._active: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, *replies: int | Reply) -> None:
        """Answer the next requests with these replies, then 200."""
        self.replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request, in arrival order ("" when missing)."""
        return [r.key or "" for r in self.received]

    def distinct_keys(self) -> set[str]:
        return set(self.keys())

    async def _execute(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        got = Received(
            path=request.path,
            workflow_id=request.match_info.get("workflow_id", ""),
            key=request.headers.get("Idempotency-Key"),
            body=body,
            headers=dict(request.headers),
            at=time.time(),
            raw=raw,
        )
        self.received.append(got)
        key = got.key or ""
        if self.responder is not None:
            reply = self.responder(got, self._seen[key])
        elif self.replies:
            reply = self.replies.pop(0)
        else:
            reply = Reply()
        self._seen[key] += 1
        self._active[key] += 1
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if self._active[key] > 1:
            self.overlaps.append(key)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
        finally:
            self._active[key] -= 1
            self._in_flight -= 1
        if reply.hang_up and request.transport is not None:
            request.transport.close()
        return web.Response(
            status=reply.status,
            text=reply.body,
            headers=reply.headers,
            content_type="application/json",
        )

    async def _other(self, request: web.Request) -> web.StreamResponse:
        self.received.append(
            Received(
                path=request.path,
                workflow_id="",
                key=None,
                body=None,
                headers=dict(request.headers),
                at=time.time(),
            )
        )
        return web.Response(status=404, text="no such route")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(r"/{prefix:.*}v1/workflows/{workflow_id}/execute", self._execute)
        # Any POST under /sink: a CloudEvents sink (one URL for every workflow).
        app.router.add_post(r"/sink{tail:.*}", self._execute)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (``port`` 0: a free one); return the base URL."""
        self._runner = web.AppRunner(self.app(), shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = self._runner.addresses
        self.url = f"http://127.0.0.1:{sockets[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class EngineThread:
    """An Engine on its own event loop in a daemon thread, for synchronous tests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.engine = Engine()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the engine's loop (to read or change it without races)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.start(self.port), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.stop(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
