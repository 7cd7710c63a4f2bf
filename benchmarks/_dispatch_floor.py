"""The floor of the dispatch suite: a bare aiohttp client loop, no store, no retries.

It posts the same body and headers wfsched sends (``Idempotency-Key`` and a ``traceparent``
of the same shape, ``Content-Type``, ``User-Agent``), at the same open-loop rate (or as one
burst) with the same number of requests in flight and the same keep-alive pool, to the same
engine, on the same event loop (uvloop, as ``wfsched serve``), with the same JSON encoder
(orjson). Whatever wfsched adds on top (the durable record, the claim, the outcome write,
logs, metrics) is the difference.
``python -m benchmarks._dispatch_floor URL WORKFLOW RATE COUNT BURST CONCURRENCY``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
import orjson
import uvloop

WARMUP = 20


async def main(
    url: str, workflow: str, rate: float, count: int, burst: bool, concurrency: int
) -> None:
    target = f"{url}/v1/workflows/{workflow}/execute"
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=4.0)
    headers = {"Content-Type": "application/json", "User-Agent": "wfsched-floor/1.0"}
    # A traceparent of the shape wfsched sends; making a fresh one is wfsched's own work.
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=30),
        skip_auto_headers=("Accept-Encoding",),
    ) as session:
        seq = 0

        async def post(t: float | None = None, warmup: bool = False) -> None:
            nonlocal seq
            seq += 1
            key = f"floor-{seq:026d}"
            body = orjson.dumps(
                {
                    "execution_id": key,
                    "workflow_id": workflow,
                    "trigger": {"id": "loadgen", "type": "loadgen"},
                    "scheduled_at": None,
                    "fired_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                    "payload": {"t": time.time() if t is None else t, "warmup": warmup},
                }
            )
            async with (
                slots,
                session.post(
                    target,
                    data=body,
                    allow_redirects=False,
                    headers={"Idempotency-Key": key, "traceparent": trace},
                ) as resp,
            ):
                await resp.read()
                resp.raise_for_status()

        cpu = time.process_time()
        for _ in range(WARMUP):
            await post(warmup=True)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        tasks: list[asyncio.Task[None]] = []
        if burst:
            start = time.time()
            tasks = [asyncio.create_task(post(start)) for _ in range(count)]
        else:
            began = time.monotonic()
            while len(tasks) < count:
                wait = began + len(tasks) / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = time.monotonic()
                while len(tasks) < count and began + len(tasks) / rate <= now:
                    tasks.append(asyncio.create_task(post()))
        await asyncio.gather(*tasks)
        cpu = time.process_time() - cpu
    print(json.dumps({"sent": count, "cpu_s": cpu}))


if __name__ == "__main__":
    url, workflow, rate, count, burst, concurrency = sys.argv[1:7]
    uvloop.run(main(url, workflow, float(rate), int(count), burst == "1", int(concurrency)))
