"""A load-generating trigger type for the dispatch suite (loaded from ``plugins.dir``).

Written on the public plugin API only, like any third-party trigger: once deployed it fires
``count`` events at ``rate`` per second (open loop: a slow commit does not delay the next
fire), or all at once with ``burst = true``. Each payload carries the fire instant ``t``
(``time.time()``, taken just before ``ctx.fire``) for the engine to measure against.

Each fire is one ``asyncio`` task, as each request is in the floor (``_dispatch_floor``): the
load costs the same on both sides. (An anyio task group's ``start_soon`` costs several times
``create_task``: measured, about a third of an aiohttp request per fire, none of it wfsched's.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from wfsched import BaseTrigger, FireRequest, hookimpl

WARMUP = 20
"""Fires before the measured ones (connection set-up, first-use costs); not measured."""


class LoadTrigger(BaseTrigger):
    type = "loadgen"
    has_run = True

    async def _fire(self, t: float | None = None, warmup: bool = False) -> None:
        payload = {"t": time.time() if t is None else t, "warmup": warmup}
        await self.ctx.fire(FireRequest(payload=payload))

    async def run(self) -> None:
        rate = float(self.config.get("rate", 100))
        count = int(self.config.get("count", 100))
        warmup = []
        for _ in range(WARMUP):
            warmup.append(asyncio.create_task(self._fire(None, True)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*warmup)
        await asyncio.sleep(0.5)
        tasks: list[asyncio.Task[None]] = []
        if self.config.get("burst"):
            start = time.time()
            tasks = [asyncio.create_task(self._fire(start)) for _ in range(count)]
        else:
            began = time.monotonic()
            while len(tasks) < count:
                wait = began + len(tasks) / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = time.monotonic()
                while len(tasks) < count and began + len(tasks) / rate <= now:
                    tasks.append(asyncio.create_task(self._fire()))
        await asyncio.gather(*tasks)


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(LoadTrigger)
