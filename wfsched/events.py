"""The fire path: record events durably with group commit, hand them to the dispatcher.

Concurrent fires share one transaction: while a batch is being committed, new fires queue
and go out together in the next one. Nobody is acknowledged before their batch commits.
As many events as the local dispatcher has room for are recorded already leased to it and
handed over in memory; it wakes to claim from the store only for the rest.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from wfsched.errors import StoreError
from wfsched.metrics import event_counter
from wfsched.models import Claim, NewEvent, TriggerEvent

Recorded = list[tuple[TriggerEvent, bool]]


class Recorder(Protocol):
    async def record(self, events: Sequence[NewEvent]) -> Recorded: ...


class EventStore(Protocol):
    async def record(self, events: Sequence[NewEvent], claim: Claim | None = None) -> Recorded: ...


class Handoff(Protocol):
    """The local dispatcher, taking events recorded already leased to it."""

    def lease(self, wanted: int) -> Claim | None:
        """A claim for up to ``wanted`` events about to be recorded (None: no room)."""

    def adopt(self, events: list[TriggerEvent]) -> None:
        """Take events recorded under the last ``lease``."""


class _Batch:
    """Events committed together; every caller whose events are in it waits on one Event."""

    __slots__ = ("done", "error", "events", "result")

    def __init__(self) -> None:
        self.events: list[NewEvent] = []
        self.done = anyio.Event()
        self.result: Recorded = []
        self.error: BaseException | None = None


class GroupCommitRecorder:
    """A Recorder that batches concurrent ``record`` calls into one store transaction."""

    def __init__(
        self,
        store: EventStore,
        *,
        on_created: Callable[[], None] = lambda: None,
        handoff: Handoff | None = None,
        max_batch: int = 1000,
    ) -> None:
        self._store = store
        self._on_created = on_created
        self._handoff = handoff
        self._max_batch = max_batch
        self._queue: deque[_Batch] = deque()
        self._wake = anyio.Event()
        self._running = False

    async def record(self, events: Sequence[NewEvent]) -> Recorded:
        if not self._running:
            # Not started (CLI, tests): write straight through.
            result = await self._store.record(events)
            self._count(result)
            return result
        queue = self._queue
        if not queue or len(queue[-1].events) + len(events) > self._max_batch:
            queue.append(_Batch())
        batch = queue[-1]
        start = len(batch.events)
        batch.events.extend(events)
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.result[start : start + len(events)]

    def start(self, tg: TaskGroup) -> None:
        """Start the committing task in ``tg``."""
        self._running = True
        tg.start_soon(self._loop, name="group-commit")

    async def _loop(self) -> None:
        batch: _Batch | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._queue:
                    batch = self._queue.popleft()
                    await self._flush(batch)
                    batch = None
        finally:
            self._running = False
            # Shutdown: callers get an error they can answer (503), not a cancellation.
            # A batch cancelled mid-commit may have been written: its callers are told so.
            if batch is not None:
                batch.error = StoreError(
                    "the daemon stopped while the event was being "
                    "recorded; it may or may not have been stored"
                )
                batch.done.set()
            for waiting in self._queue:
                waiting.error = StoreError("the daemon is stopping; nothing was recorded")
                waiting.done.set()
            self._queue.clear()

    async def _flush(self, batch: _Batch) -> None:
        claim = None if self._handoff is None else self._handoff.lease(len(batch.events))
        try:
            if claim is None:
                batch.result = await self._store.record(batch.events)
            else:
                batch.result = await self._store.record(batch.events, claim)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            batch.error = exc
            batch.done.set()
            return
        batch.done.set()
        leased = 0
        if claim is not None and self._handoff is not None:
            leased = claim.limit
            self._handoff.adopt([event for event, created in batch.result[:leased] if created])
        self._count(batch.result, leased)

    def _count(self, result: Recorded, leased: int = 0) -> None:
        """Count recorded and duplicate events; wake the dispatcher for unleased new ones."""
        unleased = False
        counts: Counter[tuple[str, str]] = Counter()
        for i, (event, created) in enumerate(result):
            counts[event.trigger_type, "recorded" if created else "duplicate"] += 1
            unleased = unleased or (created and i >= leased)
        for (trigger_type, status), n in counts.items():
            event_counter(trigger_type, status).inc(n)
        if unleased:
            self._on_created()
