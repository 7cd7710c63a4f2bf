"""The inbound half of the occurrence ledger: deliveries that made no event, kept cheaply.

A refused request (bad signature, rate limit, too large), a delivery a filter turned away and
a repeat of an earlier delivery are each an :class:`~wfsched.models.Occurrence`. Triggers
report them through ``ctx.record_occurrence``; :class:`OccurrenceLog` counts each one in
``wfsched_occurrences_total`` at once, appends it to an in-memory buffer (a bounded deque, so a
flood of refused requests costs a fixed amount of memory and drops the oldest unwritten
entries) and writes the buffer to the store in one batch per second. Nothing of this is on a
request's critical path: the request appends and answers; a store outage loses at most the
buffer, never delays a reply.

Fires are not written here: every event is already a row, and ``explain`` reads those. Time
triggers' skipped, missed, paused and pending instants are computed when asked, from the
schedule, the events, the daemons' heartbeats and the deployment's history.

``WFSCHED_LEDGER=off`` (an internal switch for the cost benchmarks) turns the whole ledger off:
nothing buffered, nothing counted, no per-fire lateness of deliveries.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import anyio

from wfsched.metrics import occurrence_counter
from wfsched.models import Occurrence

log = logging.getLogger("wfsched.ledger")
ENABLED = os.environ.get("WFSCHED_LEDGER", "on").lower() != "off"
"""False under ``WFSCHED_LEDGER=off`` (cost benchmarks only)."""
MAX_BUFFER = 50_000
"""Entries waiting for their write at most; past it the oldest are dropped."""
FLUSH_EVERY = 1.0
"""Seconds between two batch writes."""


class OccurrenceSink(Protocol):
    """The store's side: one transaction per batch."""

    async def add_occurrences(self, rows: Sequence[Occurrence]) -> None: ...


class OccurrenceLog:
    """Buffers occurrences and writes them in batches (``run``), off the request path."""

    def __init__(self, store: OccurrenceSink, *, enabled: bool = ENABLED) -> None:
        self._store = store
        self.enabled = enabled
        self._buffer: deque[Occurrence] = deque(maxlen=MAX_BUFFER)
        self.dropped = 0
        """Entries lost to a full buffer (a flood while the store was slow or down)."""

    def add(self, occurrence: Occurrence) -> None:
        """Count ``occurrence`` and queue it for the next batch (O(1), never blocks)."""
        if not self.enabled:
            return
        occurrence_counter(occurrence.trigger_type, occurrence.outcome).inc()
        if len(self._buffer) == MAX_BUFFER:
            self.dropped += 1
        self._buffer.append(occurrence)

    def __len__(self) -> int:
        return len(self._buffer)

    async def flush(self) -> int:
        """Write what is buffered in one transaction; return how many entries were written.

        On a store error the entries go back to the front of the buffer (as room allows) and
        the error propagates: the next flush tries again.
        """
        if not self._buffer:
            return 0
        rows = list(self._buffer)
        self._buffer.clear()
        try:
            await self._store.add_occurrences(rows)
        except BaseException:
            room = MAX_BUFFER - len(self._buffer)
            self._buffer.extendleft(reversed(rows[-room:] if room > 0 else []))
            raise
        return len(rows)

    async def run(self, every: float = FLUSH_EVERY) -> None:
        """Flush every ``every`` seconds until cancelled; a last flush on the way out."""
        try:
            while True:
                await anyio.sleep(every)
                await self._flush_logged()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - retried at the next beat
            log.warning("writing the occurrence ledger failed", extra={"error": str(exc)})
