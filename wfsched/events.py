"""The fire path: record events durably with group commit, wake the dispatcher.

Concurrent fires share one transaction: while a batch is being committed, new fires queue
and go out together in the next one. Nobody is acknowledged before their batch commits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from wfsched.metrics import TRIGGER_EVENTS
from wfsched.models import NewEvent, TriggerEvent

Recorded = list[tuple[TriggerEvent, bool]]


class Recorder(Protocol):
    async def record(self, events: Sequence[NewEvent]) -> Recorded: ...


class _Waiter:
    __slots__ = ("done", "error", "events", "result")

    def __init__(self, events: Sequence[NewEvent]) -> None:
        self.events = events
        self.done = anyio.Event()
        self.result: Recorded = []
        self.error: BaseException | None = None


class GroupCommitRecorder:
    """A Recorder that batches concurrent ``record`` calls into one store transaction."""

    def __init__(
        self,
        store: Recorder,
        *,
        on_created: Callable[[], None] = lambda: None,
        max_batch: int = 1000,
    ) -> None:
        self._store = store
        self._on_created = on_created
        self._max_batch = max_batch
        self._queue: deque[_Waiter] = deque()
        self._wake = anyio.Event()
        self._running = False

    async def record(self, events: Sequence[NewEvent]) -> Recorded:
        if not self._running:
            # Not started (CLI, tests): write straight through.
            result = await self._store.record(events)
            self._count(result)
            return result
        waiter = _Waiter(events)
        self._queue.append(waiter)
        self._wake.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def start(self, tg: TaskGroup) -> None:
        """Start the committing task in ``tg``."""
        self._running = True
        tg.start_soon(self._loop, name="group-commit")

    async def _loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._queue:
                    await self._flush()
        finally:
            self._running = False
            for waiter in self._queue:
                waiter.error = anyio.get_cancelled_exc_class()()
                waiter.done.set()

    async def _flush(self) -> None:
        batch: list[_Waiter] = []
        size = 0
        while self._queue and (size == 0 or size + len(self._queue[0].events) <= self._max_batch):
            waiter = self._queue.popleft()
            batch.append(waiter)
            size += len(waiter.events)
        events = [e for w in batch for e in w.events]
        try:
            result = await self._store.record(events)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter of the batch
            for waiter in batch:
                waiter.error = exc
                waiter.done.set()
            return
        self._count(result)
        pos = 0
        for waiter in batch:
            waiter.result = result[pos : pos + len(waiter.events)]
            pos += len(waiter.events)
            waiter.done.set()

    def _count(self, result: Recorded) -> None:
        created = False
        for event, was_created in result:
            TRIGGER_EVENTS.labels(
                event.trigger_type, "recorded" if was_created else "duplicate"
            ).inc()
            created = created or was_created
        if created:
            self._on_created()
