"""One dispatch attempt's result: the outcome written back (the retry policy), its metrics
and its ``dispatch attempt`` log line. The dispatcher decides when to send; this decides what
an attempt amounts to, for one event sent by a worker or a batch settled as it is recorded.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from wfsched.logs import log_fields
from wfsched.metrics import DISPATCH_ATTEMPTS, DISPATCH_DURATION, event_counter
from wfsched.models import DispatchOutcome, TriggerEvent
from wfsched.target import DispatchError

log = logging.getLogger("wfsched.dispatch")
_RESULTS = {"dispatched": "ok", "pending": "retry", "failed": "failed"}
"""An outcome's status as the metrics' ``outcome`` label."""


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, full jitter within [base, cap]."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    delay = random.uniform(base, max(base, ceiling))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class Attempts:
    """The outcomes, metrics and log lines of one dispatcher's attempts (``mode``: its
    sender's, as the metrics and lines name it)."""

    def __init__(
        self,
        mode: str,
        *,
        max_attempts: int,
        retry_base: float,
        retry_max: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.mode = mode
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.clock = clock
        self._series = {
            r: (DISPATCH_DURATION.labels(mode, r), DISPATCH_ATTEMPTS.labels(mode, r))
            for r in ("ok", "retry", "failed")
        }

    def delivered(self, event: TriggerEvent, at: datetime) -> DispatchOutcome:
        # The last error stays on a delivered event: it tells why it took retries.
        return DispatchOutcome(
            execution_id=event.execution_id,
            status="dispatched",
            error=event.last_error,
            dispatched_at=at,
            fired_at=event.fired_at,
        )

    def failed(self, event: TriggerEvent, exc: DispatchError) -> DispatchOutcome:
        """A retry at its backoff, or a final failure once the round's attempts are spent."""
        attempt = event.attempts + 1
        # ``attempts`` keeps counting across redeliveries, so history shows every attempt;
        # each max_attempts of them are one round, and a redelivery starts the next round.
        in_round = (attempt - 1) % self.max_attempts + 1
        if exc.retry and in_round < self.max_attempts:
            delay = backoff(in_round, self.retry_base, self.retry_max, exc.retry_after)
            return DispatchOutcome(
                execution_id=event.execution_id,
                status="pending",
                error=str(exc),
                next_attempt_at=self.clock() + timedelta(seconds=delay),
                fired_at=event.fired_at,
            )
        error = str(exc)
        if exc.retry:
            error = f"gave up after {attempt} attempts: {error}"
        return DispatchOutcome(
            execution_id=event.execution_id, status="failed", error=error, fired_at=event.fired_at
        )

    def count(
        self, event: TriggerEvent, outcome: DispatchOutcome, elapsed: float, code: int | None
    ) -> None:
        """Count one sent attempt and write its line."""
        result = _RESULTS[outcome.status]
        duration, attempts = self._series[result]
        duration.observe(elapsed)
        attempts.inc()
        event_counter(event.trigger_type, "retried" if result == "retry" else outcome.status).inc()
        level = logging.INFO if result == "ok" else logging.WARNING
        if log.isEnabledFor(level):
            self._line(level, event, outcome, elapsed, code)

    def count_settled(
        self, events: Sequence[TriggerEvent], outcomes: Sequence[DispatchOutcome]
    ) -> None:
        """Count a batch dispatched without a send (each took no time) and write their lines."""
        duration, attempts = self._series["ok"]
        duration.observe(0.0, len(events))
        attempts.inc(len(events))
        for trigger_type, n in Counter(e.trigger_type for e in events).items():
            event_counter(trigger_type, "dispatched").inc(n)
        if log.isEnabledFor(logging.INFO):
            for event, outcome in zip(events, outcomes, strict=True):
                self._line(logging.INFO, event, outcome, 0.0, None)

    def _line(
        self,
        level: int,
        event: TriggerEvent,
        outcome: DispatchOutcome,
        elapsed: float,
        code: int | None,
    ) -> None:
        log_fields(
            log,
            level,
            "dispatch attempt",
            {
                "workflow_id": event.workflow_id,
                "trigger_type": event.trigger_type,
                "trigger_id": event.trigger_id,
                "execution_id": event.execution_id,
                "duration_ms": round(elapsed * 1000, 2),
                "status": outcome.status,
                "attempt": event.attempts + 1,
                "error": outcome.error,
                "code": code,
                "mode": self.mode,
            },
        )
