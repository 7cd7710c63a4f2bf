"""Pruning in small steps: the loop the daemon and ``wfsched prune`` share.

Each ``Store.prune`` step is one short transaction. The loop sizes the steps by their
duration, aiming at ``TARGET`` seconds each (a SQLite step holds the one connection the
group commit also needs, so a long step would delay webhook acknowledgements), and rests
between steps as long as the step took, so pruning takes at most half of the store's time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from wfsched.store import Retention, Store

log = logging.getLogger("wfsched.store")

TARGET = 0.005
"""Seconds a step should take. A SQLite group commit waiting behind a step waits this long at
most; measured in-process at 1,000 events/s, 20 ms steps added about a third to the commit
p99, 5 ms steps nothing measurable."""
MIN_BATCH, MAX_BATCH = 50, 5000
FIRST_BATCH = 200


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
        log.debug(
            f"prune step: {step.deleted} events in {took * 1000:.1f} ms (batch {batch})",
            extra={"duration_ms": round(took * 1000, 1)},
        )
        if not step.more:
            break
        # Grow or shrink towards TARGET, by at most a factor of two per step.
        scale = min(2.0, max(0.5, TARGET / took)) if took > 0 else 2.0
        batch = max(MIN_BATCH, min(MAX_BATCH, int(batch * scale)))
        if rest:
            await anyio.sleep(took)
    return total
