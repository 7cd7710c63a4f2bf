"""The fire path: record events durably with group commit, hand them to the dispatcher.

Concurrent fires share one transaction: while a batch is being committed, new fires queue
and go out together in the next one. Nobody is acknowledged before their batch commits.
As many events as the local dispatcher has room for are recorded already leased to it and
handed over in memory; it wakes to claim from the store only for the rest. The outcomes the
dispatcher settled at once, without a send (``log`` mode), are written between two batches
(``write_settled``), so that the next batch gathers every fire that arrived during both
writes. Written alongside a batch instead (SQLite's shared transaction) or racing it
(PostgreSQL), they split a steady load into two halves that take turns: batches half the
size, for the same number of commits per fire.

One caller's bad row must not fail the others sharing its transaction. Callers validate
what they record (the HTTP edge refuses what no store can hold), but when the store still
rejects a batch for its data (``StoreRejected``, or an error that is not a ``StoreError``,
e.g. text the driver cannot encode), each caller's events are committed again on their own
and only the caller whose row is refused gets the error. A store that is down
(``StoreError``) fails the whole batch at once: retrying row by row would only multiply
the wait.

A commit has a deadline (``commit_timeout``, counted from when the batch opened, so every
caller waits at most that long). Past it the batch's callers get a ``StoreError`` (the
web layer answers 503 with Retry-After), never a late success:

* a batch still queued behind the stalled one is dropped: its events are never written;
* a batch already handed to the store cannot be taken back. If its commit completes later,
  its rows are in the store although their callers were told to retry. That is the
  at-least-once side of the trade (a webhook sender retries; a ``webhook-id`` or dedupe
  header makes the retry a no-op), never the other: a success without a record.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from wfsched import otel
from wfsched.errors import StoreError, StoreRejected
from wfsched.metrics import event_counter, lateness, occurrence_counter
from wfsched.models import Claim, NewEvent, TriggerEvent, new_execution_id, utcnow
from wfsched.occurrences import ENABLED as LEDGER

Recorded = list[tuple[TriggerEvent, bool]]
DEFAULT_COMMIT_TIMEOUT = 5.0
"""Seconds a batch may take to commit before its callers are failed (``store.commit_timeout``)."""


def new_event(
    *,
    workflow_id: str,
    trigger_id: str,
    trigger_type: str,
    static_payload: Mapping[str, Any],
    payload: Mapping[str, Any],
    dedupe_key: str | None,
    fired_at: datetime,
    scheduled_at: datetime | None = None,
) -> NewEvent:
    """Make the event row of one fire: the one factory behind ``ctx.fire`` and the timer.

    The fire's own payload is merged over the trigger's static ``payload`` table; a fire
    without a dedupe key gets a unique one (``exec:<execution id>``), so it never collides.
    """
    execution_id = new_execution_id()
    return NewEvent(
        execution_id=execution_id,
        workflow_id=workflow_id,
        trigger_id=trigger_id,
        trigger_type=trigger_type,
        dedupe_key=dedupe_key or f"exec:{execution_id}",
        # No fire payload (every cron fire): the static table is shared, not copied.
        payload={**static_payload, **payload} if payload else static_payload,
        fired_at=fired_at,
        scheduled_at=scheduled_at,
    )


class Recorder(Protocol):
    def record(self, events: Sequence[NewEvent]) -> Awaitable[Recorded]: ...


class EventStore(Protocol):
    async def record(self, events: Sequence[NewEvent], claim: Claim | None = None) -> Recorded: ...


class Handoff(Protocol):
    """The local dispatcher, taking events recorded already leased to it."""

    def lease(self, events: Sequence[NewEvent]) -> Claim | None:
        """A claim on the first of ``events``, about to be recorded (None: no room)."""

    def adopt(self, events: list[TriggerEvent]) -> None:
        """Take events recorded under the last ``lease``."""

    async def write_settled(self) -> None:
        """Write the outcomes settled at once (``log`` mode), now (one try; the dispatcher
        keeps what fails). Called between batches: a batch's outcomes would otherwise race
        the next batch or ride in it, and every batch be half as large."""


def _rows_at_fault(exc: Exception) -> bool:
    """True when ``exc`` is about the rows sent rather than the store being unavailable."""
    return isinstance(exc, StoreRejected) or not isinstance(exc, StoreError)


class _Entry:
    """The events of one ``record`` call and the future its caller awaits."""

    __slots__ = ("done", "error", "events", "result")

    def __init__(self, events: Sequence[NewEvent], done: asyncio.Future[Recorded]) -> None:
        self.events = events
        self.done = done
        self.result: Recorded = []
        self.error: Exception | None = None


class _Batch:
    """Entries committed together; each caller awaits its entry's future, all of them
    resolved by :meth:`finish` (a caller cancelled while waiting cancels only its own)."""

    __slots__ = ("deadline", "done", "entries", "error", "size", "started")

    def __init__(self, deadline: float) -> None:
        self.entries: list[_Entry] = []
        self.size = 0
        self.deadline = deadline
        self.started = False
        self.done = False
        self.error: BaseException | None = None  # for every caller (outage, deadline, stop)

    def finish(self) -> None:
        """The batch is over (committed, failed or expired): answer every caller."""
        self.done = True
        error = self.error
        for entry in self.entries:
            done = entry.done
            if done.done():  # its caller was cancelled
                continue
            failure = error or entry.error
            if failure is not None:
                done.set_exception(failure)
                # Marked read: a caller cancelled before it wakes must not have the error
                # logged as never retrieved (one that awaits raises it all the same).
                done.exception()
            else:
                done.set_result(entry.result)

    def events(self) -> list[NewEvent]:
        if len(self.entries) == 1:
            return list(self.entries[0].events)
        return [e for entry in self.entries for e in entry.events]


class GroupCommitRecorder:
    """A Recorder that batches concurrent ``record`` calls into one store transaction."""

    def __init__(
        self,
        store: EventStore,
        *,
        on_created: Callable[[], None] = lambda: None,
        handoff: Handoff | None = None,
        max_batch: int = 1000,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
    ) -> None:
        self._store = store
        self._on_created = on_created
        self._handoff = handoff
        self._max_batch = max_batch
        self._commit_timeout = commit_timeout
        self._queue: deque[_Batch] = deque()
        self._wake = asyncio.Event()
        # Open batches in opening order, so their deadlines are in order too; the watchdog
        # sleeps until the first one's, however many batches there are.
        self._watched: deque[_Batch] = deque()
        self._watch_wake = asyncio.Event()
        self._running = False
        self._event_loop: asyncio.AbstractEventLoop | None = None

    def record(self, events: Sequence[NewEvent]) -> Awaitable[Recorded]:
        # Not a coroutine: the caller awaits its entry's future itself, so a fire pays for no
        # frame between its own and the group commit.
        if otel.ENABLED:  # a span per caller, in the caller's trace
            return otel.record_span(self._enqueue, events)
        return self._enqueue(events)

    def _enqueue(self, events: Sequence[NewEvent]) -> Awaitable[Recorded]:
        if not self._running:
            # Not started (CLI, tests): write straight through.
            return self._write_through(events)
        queue = self._queue
        if not queue or queue[-1].size + len(events) > self._max_batch:
            opened = _Batch(anyio.current_time() + self._commit_timeout)
            queue.append(opened)
            self._watched.append(opened)
            self._watch_wake.set()
            # Woken once per batch: while a batch is queued, the committing task is awake
            # or already woken, and takes it (``_loop`` drains the queue).
            self._wake.set()
        batch = queue[-1]
        loop = self._event_loop
        assert loop is not None  # set by start(), as _running
        entry = _Entry(events, loop.create_future())
        batch.entries.append(entry)
        batch.size += len(events)
        return entry.done

    async def _write_through(self, events: Sequence[NewEvent]) -> Recorded:
        result = await self._store.record(events)
        self._count(result)
        return result

    def start(self, tg: TaskGroup) -> None:
        """Start the committing task and its deadline watchdog in ``tg``."""
        # The loop every fire runs on while the recorder runs: asking for it per fire costs
        # a getpid system call (asyncio checks the running loop's process).
        self._event_loop = asyncio.get_running_loop()
        self._running = True
        tg.start_soon(self._loop, name="group-commit")
        tg.start_soon(self._watch, name="group-commit-deadline")

    async def _loop(self) -> None:
        batch: _Batch | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake = asyncio.Event()
                while self._queue:
                    batch = self._queue.popleft()
                    await self._flush(batch)
                    batch = None
                    if self._handoff is not None:
                        await self._handoff.write_settled()
        finally:
            self._running = False
            # Shutdown: callers get an error they can answer (503), not a cancellation.
            # A batch cancelled mid-commit may have been written: its callers are told so.
            if batch is not None and not batch.done:
                batch.error = StoreError(
                    "the daemon stopped while the event was being "
                    "recorded; it may or may not have been stored"
                )
                batch.finish()
            for waiting in self._queue:
                waiting.error = StoreError("the daemon is stopping; nothing was recorded")
                waiting.finish()
            self._queue.clear()

    async def _watch(self) -> None:
        """Fail the callers of every batch that has not committed by its deadline."""
        watched = self._watched
        while True:
            while watched and watched[0].done:
                watched.popleft()
            if not watched:
                await self._watch_wake.wait()
                self._watch_wake = asyncio.Event()
                continue
            deadline = watched[0].deadline
            if anyio.current_time() < deadline:
                # Only the instant is held while asleep: a batch that commits meanwhile is let
                # go at once (``_flush``), not kept alive here until its deadline.
                await anyio.sleep_until(deadline)
                continue
            self._expire(watched[0])

    def _expire(self, batch: _Batch) -> None:
        timeout = (
            f"the store did not commit within {self._commit_timeout:g} s (store.commit_timeout)"
        )
        if batch.started:
            batch.error = StoreError(f"{timeout}; the event may or may not have been recorded")
        else:
            self._queue.remove(batch)  # never sent: nothing of it will be written
            batch.error = StoreError(f"{timeout}; nothing was recorded")
        batch.finish()

    async def _flush(self, batch: _Batch) -> None:
        batch.started = True
        try:
            result = await self._commit(batch.events())
        except Exception as exc:  # noqa: BLE001 - handed to the callers it concerns
            if len(batch.entries) > 1 and _rows_at_fault(exc):
                await self._commit_apart(batch.entries)
            else:
                batch.error = batch.error or exc
        else:
            start = 0
            for entry in batch.entries:
                entry.result = result[start : start + len(entry.events)]
                start += len(entry.events)
        batch.finish()
        # Batches commit in the order they opened: the watchdog lets go of this one now, not
        # at its deadline (it would hold every event of the last few seconds, payloads and
        # all, for the cyclic GC to walk again and again).
        watched = self._watched
        while watched and watched[0].done:
            watched.popleft()

    async def _commit_apart(self, entries: list[_Entry]) -> None:
        """Commit each caller's events on their own, so a rejected row fails its caller only."""
        for i, entry in enumerate(entries):
            try:
                entry.result = await self._commit(entry.events)
            except Exception as exc:  # noqa: BLE001 - this caller's answer
                entry.error = exc
                if not _rows_at_fault(exc):  # the store itself failed: the rest would too
                    for rest in entries[i + 1 :]:
                        rest.error = exc
                    return

    async def _commit(self, events: Sequence[NewEvent]) -> Recorded:
        """One store transaction; new events leased to the dispatcher are handed over."""
        claim = None if self._handoff is None else self._handoff.lease(events)
        if claim is None:
            result = await self._store.record(events)
        else:
            result = await self._store.record(events, claim)
        leased = 0
        if claim is not None and self._handoff is not None:
            leased = claim.limit
            self._handoff.adopt([event for event, created in result[:leased] if created])
        self._count(result, leased)
        return result

    def _count(self, result: Recorded, leased: int = 0) -> None:
        """Count recorded and duplicate events; wake the dispatcher for unleased new ones."""
        unleased = False
        counts: Counter[tuple[str, str]] = Counter()
        now: datetime | None = None
        for i, (event, created) in enumerate(result):
            counts[event.trigger_type, "recorded" if created else "duplicate"] += 1
            unleased = unleased or (created and i >= leased)
            if LEDGER and created and event.scheduled_at is None:
                # A delivery's lateness: from its receipt to its commit (the timer observes
                # scheduled fires itself, from their nominal instant and spread).
                now = now or utcnow()
                lateness(event.trigger_type).observe((now - event.fired_at).total_seconds())
        for (trigger_type, status), n in counts.items():
            event_counter(trigger_type, status).inc(n)
            if LEDGER and status == "recorded":
                # Every fire is an occurrence too. A repeat is counted where it is known to be
                # a repeated delivery (the trigger context's ledger), not here: a timer's
                # duplicate is a replica's harmless re-fire.
                occurrence_counter(trigger_type, "fired").inc(n)
        if unleased:
            self._on_created()
