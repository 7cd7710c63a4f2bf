"""Pruning in small steps: the loop the daemon and ``wfsched prune`` share.

Each ``Store.prune`` step is one short transaction. The loop sizes the steps by their
duration, aiming at ``TARGET`` seconds each (a SQLite step holds the one connection the
group commit also needs, so a long step would delay webhook acknowledgements), and rests
between steps as long as the step took, so pruning takes at most half of the store's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from wfsched.store import Retention, Store

TARGET = 0.02
"""Seconds a step should take: a few group commits' worth of delay at most."""
MIN_BATCH, MAX_BATCH = 50, 5000
FIRST_BATCH = 500


async def prune_all(
    store: Store,
    retention: Retention,
    *,
    stop: Callable[[], bool] = lambda: False,
    rest: bool = True,
) -> int:
    """Prune until nothing is left (or ``stop()`` turns true); return the events deleted."""
    batch, total = FIRST_BATCH, 0
    while not stop():
        started = time.perf_counter()
        step = await store.prune(retention, limit=batch)
        took = time.perf_counter() - started
        total += step.deleted
        if not step.more:
            break
        # Grow or shrink towards TARGET, by at most a factor of two per step.
        scale = min(2.0, max(0.5, TARGET / took)) if took > 0 else 2.0
        batch = max(MIN_BATCH, min(MAX_BATCH, int(batch * scale)))
        if rest:
            await anyio.sleep(took)
    return total
