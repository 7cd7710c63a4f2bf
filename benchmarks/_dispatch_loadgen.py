"""A load-generating trigger type for the dispatch suite (loaded from ``plugins.dir``).

Written on the public plugin API only, like any third-party trigger: once deployed it fires
``count`` events at ``rate`` per second (open loop: a slow commit does not delay the next
fire), or all at once with ``burst = true``. Each payload carries the fire instant ``t``
(``time.time()``, taken just before ``ctx.fire``) for the engine to measure against.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

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
        async with anyio.create_task_group() as tg:
            for _ in range(WARMUP):
                tg.start_soon(self._fire, None, True)
                await anyio.sleep(0.01)
        await anyio.sleep(0.5)
        if self.config.get("burst"):
            start = time.time()
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(self._fire, start)
            return
        began = time.monotonic()
        fired = 0
        async with anyio.create_task_group() as tg:
            while fired < count:
                due = began + fired / rate
                wait = due - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                now = time.monotonic()
                while fired < count and began + fired / rate <= now:
                    tg.start_soon(self._fire)
                    fired += 1


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(LoadTrigger)
