"""The stand-in workflow engine of the dispatch suite: a raw ASGI app on uvicorn.

``POST /v1/workflows/{id}/execute`` notes the arrival time (``time.time()``, the clock every
process on the host shares) and subtracts the fire time the sender put in ``payload.t``.
``GET /stats/{id}`` returns what one workflow received. Run:
``python -m benchmarks._dispatch_engine PORT``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from benchmarks._asgi import read_body

Scope = dict[str, Any]
Message = dict[str, Any]


class Received:
    __slots__ = ("count", "keys", "last", "latencies")

    def __init__(self) -> None:
        self.count = 0
        self.keys: set[str] = set()
        self.latencies: list[float] = []
        self.last = 0.0


STATS: dict[str, Received] = {}
OK = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}
ACCEPTED = {"type": "http.response.body", "body": b'{"status":"accepted"}'}


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    request_body = await read_body(receive)
    arrived = time.time()
    parts = scope["path"].split("/")
    execute = len(parts) == 5 and parts[4] == "execute"
    # /ce/{workflow}: a CloudEvents sink (cloudevents target), the same body and key.
    cloudevent = len(parts) == 3 and parts[1] == "ce"
    if scope["method"] == "POST" and (execute or cloudevent):
        doc = json.loads(request_body)
        payload = doc["payload"]
        if not payload.get("warmup"):
            got = STATS.setdefault(parts[3] if execute else parts[2], Received())
            got.count += 1
            got.keys.add(dict(scope["headers"]).get(b"idempotency-key", b"").decode())
            if "t" in payload:  # not in a webhook's payload (the scale suite's second load)
                got.latencies.append(arrived - payload["t"])
            got.last = max(got.last, arrived)
        await send(OK)
        await send(ACCEPTED)
        return
    if scope["method"] == "GET" and len(parts) == 3 and parts[1] == "stats":
        got = STATS.get(parts[2], Received())
        body = json.dumps(
            {
                "count": got.count,
                "distinct": len(got.keys),
                "last": got.last,
                "latencies": got.latencies,
            }
        ).encode()
        await send(OK)
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        http="httptools",
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
