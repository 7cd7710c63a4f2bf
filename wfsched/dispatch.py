"""The outbox worker: claims pending events, delivers them, writes the outcome back.

Delivery is at least once: an event is marked dispatched only after its sender returned,
a crash before that leaves it pending (its claim expires after ``dispatch.claim_ttl``),
and every attempt carries the execution id as Idempotency-Key.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from wfsched.metrics import DISPATCH_ATTEMPTS, DISPATCH_DURATION, TRIGGER_EVENTS
from wfsched.models import DispatchOutcome, TriggerEvent, iso, utcnow
from wfsched.store import Store

log = logging.getLogger("wfsched.dispatch")


class DispatchError(Exception):
    """A failed attempt. ``retry`` says whether another attempt may succeed; ``retry_after``
    is the delay the receiver asked for; ``code`` its status code (HTTP or SMTP), if any."""

    def __init__(
        self,
        message: str,
        *,
        retry: bool,
        retry_after: float | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after
        self.code = code


def event_document(event: TriggerEvent) -> dict[str, Any]:
    """The event as dispatched (SPEC section 6): the engine's POST body, the notify JSON."""
    return {
        "execution_id": event.execution_id,
        "workflow_id": event.workflow_id,
        "trigger": {"id": event.trigger_id, "type": event.trigger_type},
        "scheduled_at": iso(event.scheduled_at),
        "fired_at": iso(event.fired_at),
        "payload": dict(event.payload),
    }


class Sender(Protocol):
    """Delivers one event; raises DispatchError on failure."""

    mode: str

    async def send(self, event: TriggerEvent) -> None: ...

    async def aclose(self) -> None: ...


class LogSender:
    """``log`` mode: the event is logged and counts as dispatched."""

    mode = "log"

    async def send(self, event: TriggerEvent) -> None:
        log.info(
            "event dispatched to log",
            extra={
                "workflow_id": event.workflow_id,
                "trigger_type": event.trigger_type,
                "trigger_id": event.trigger_id,
                "execution_id": event.execution_id,
            },
        )

    async def aclose(self) -> None:
        return None


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, full jitter within [base, cap]."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    delay = random.uniform(base, max(base, ceiling))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class Dispatcher:
    """Claims due events and hands them to a Sender with bounded concurrency.

    A claim never leases more events than there are free slots, and a slot frees only once
    its outcome is stored, so at most ``max_workers`` events are leased at any time. Claims
    happen when woken (a fire committed, a retry came due) and every ``poll_interval`` for
    work that other processes queued (CLI, other replicas).
    """

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        max_workers: int = 10,
        max_attempts: int = 8,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        claim_ttl: float = 10.0,
        poll_interval: float = 0.5,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.sender = sender
        self.max_workers = max(1, max_workers)
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.claim_ttl = claim_ttl
        self.poll_interval = poll_interval
        self.clock = clock
        self.owner = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._wake = anyio.Event()
        self._slots = anyio.Semaphore(self.max_workers)
        self._outcomes: list[DispatchOutcome] = []
        self._outcome_ready = anyio.Event()
        self._in_flight = 0
        self._accepting = True
        self._soonest: datetime | None = None
        """Earliest retry this dispatcher scheduled: it wakes for it instead of polling."""

    def wake(self) -> None:
        """Tell the dispatcher new events may be due (called after a commit)."""
        self._wake.set()

    async def run(self, tg: TaskGroup) -> None:
        """Claim and deliver until cancelled or drained."""
        tg.start_soon(self._finisher, name="dispatch-finisher")
        while True:
            # Wait for a free slot first, so a claim never leases what cannot be sent now.
            await self._slots.acquire()
            self._slots.release()
            if not self._accepting:
                return
            free = self._slots.value
            now = self.clock()
            if self._soonest is not None and self._soonest <= now:
                self._soonest = None
            try:
                events = await self.store.claim(self.owner, free, self.claim_ttl, now)
            except Exception as exc:  # noqa: BLE001 - store outage: wait and retry
                log.warning("claiming events failed", extra={"error": str(exc)})
                await anyio.sleep(1.0)
                continue
            for event in events:
                self._slots.acquire_nowait()
                self._in_flight += 1
                tg.start_soon(self._deliver, event, name=f"dispatch:{event.execution_id}")
            if events and len(events) == free:
                continue  # a full batch: more may be due right now
            await self._sleep_until_due(now)

    async def _sleep_until_due(self, now: datetime) -> None:
        timeout = self.poll_interval
        if self._soonest is not None:
            timeout = min(timeout, max(0.0, (self._soonest - now).total_seconds()))
        with anyio.move_on_after(timeout):
            await self._wake.wait()
        self._wake = anyio.Event()

    async def _deliver(self, event: TriggerEvent) -> None:
        started = time.perf_counter()
        attempt = event.attempts + 1
        code: int | None = None
        outcome: DispatchOutcome
        try:
            await self.sender.send(event)
        except DispatchError as exc:
            code = exc.code
            outcome = self._failed(event, attempt, exc)
        except Exception as exc:  # noqa: BLE001 - a sender bug must not lose the event
            outcome = self._failed(
                event, attempt, DispatchError(f"{type(exc).__name__}: {exc}", retry=True)
            )
        else:
            # The last error stays on a delivered event: it tells why it took retries.
            outcome = DispatchOutcome(
                execution_id=event.execution_id, status="dispatched", error=event.last_error
            )
        elapsed = time.perf_counter() - started
        result = (
            "ok"
            if outcome.status == "dispatched"
            else ("retry" if outcome.status == "pending" else "failed")
        )
        DISPATCH_DURATION.labels(self.sender.mode, result).observe(elapsed)
        DISPATCH_ATTEMPTS.labels(self.sender.mode, result).inc()
        TRIGGER_EVENTS.labels(
            event.trigger_type, "retried" if result == "retry" else outcome.status
        ).inc()
        level = logging.INFO if result == "ok" else logging.WARNING
        log.log(
            level,
            "dispatch attempt",
            extra={
                "workflow_id": event.workflow_id,
                "trigger_type": event.trigger_type,
                "execution_id": event.execution_id,
                "duration_ms": round(elapsed * 1000, 2),
                "status": outcome.status,
                "attempt": attempt,
                "error": outcome.error,
                "code": code,
                "mode": self.sender.mode,
            },
        )
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    def _failed(self, event: TriggerEvent, attempt: int, exc: DispatchError) -> DispatchOutcome:
        if exc.retry and attempt < self.max_attempts:
            delay = backoff(attempt, self.retry_base, self.retry_max, exc.retry_after)
            return DispatchOutcome(
                execution_id=event.execution_id,
                status="pending",
                error=str(exc),
                next_attempt_at=self.clock() + timedelta(seconds=delay),
            )
        error = str(exc)
        if exc.retry:
            error = f"gave up after {attempt} attempts: {error}"
        return DispatchOutcome(execution_id=event.execution_id, status="failed", error=error)

    async def _finisher(self) -> None:
        """Write outcomes in batches; a slot frees only once its outcome is stored."""
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready = anyio.Event()
            while self._outcomes:
                batch, self._outcomes = self._outcomes, []
                await self._write(batch)
                for _ in batch:
                    self._slots.release()
                    self._in_flight -= 1
                retries = [
                    o.next_attempt_at
                    for o in batch
                    if o.status == "pending" and o.next_attempt_at is not None
                ]
                if retries:
                    # Only now is the retry claimable: its row is written and unclaimed.
                    soonest = min(retries)
                    if self._soonest is None or soonest < self._soonest:
                        self._soonest = soonest
                    self._wake.set()

    async def _write(self, batch: list[DispatchOutcome]) -> None:
        delay = 0.5
        while True:
            try:
                await self.store.finish(self.owner, batch)
                return
            except Exception as exc:  # noqa: BLE001 - keep the outcomes until the store is back
                log.warning("writing dispatch outcomes failed; retrying", extra={"error": str(exc)})
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def drain(self, timeout: float) -> None:
        """Stop claiming; wait up to ``timeout`` for in-flight deliveries to be written."""
        self._accepting = False
        self._wake.set()
        with anyio.move_on_after(timeout):
            while self._in_flight:
                await anyio.sleep(0.05)
