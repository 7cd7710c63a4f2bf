"""Benchmark plugin (copied into a plugins dir): a lock-elected ticker, like a mailbox watcher.

Every replica runs the trigger; only the holder of the cluster lock ``bench-leader`` fires,
once per ``tick`` seconds (dedupe key ``tick@<n>``), with its pid in the payload. Killing the
holder shows how long the others take to elect a new one: at most the lease TTL plus a tick.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from wfsched import BaseTrigger, Fields, FireRequest, hookimpl


class LeaderTick(BaseTrigger):
    """Fires once per tick while holding the cluster-wide lock."""

    type = "bench-leader"
    has_run = True

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        fields = Fields(config, allowed={"ttl", "tick"})
        return {"ttl": fields.number("ttl", 3.0), "tick": fields.number("tick", 0.5)}

    async def run(self) -> None:
        ttl, tick = float(self.config["ttl"]), float(self.config["tick"])
        while True:
            async with self.ctx.lock("bench-leader", ttl=ttl) as lease:
                while not lease.lost:
                    n = math.floor(time.time() / tick)
                    await self.ctx.fire(
                        FireRequest(dedupe_key=f"tick@{n}", payload={"holder": os.getpid(), "n": n})
                    )
                    await anyio.sleep(max(0.0, (n + 1) * tick - time.time()))


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(LeaderTick)
