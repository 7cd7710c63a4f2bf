"""Instants of a time-based trigger: the next one, those within its window, and the ones a
catch-up policy fires after downtime. Pure functions of a TimerSpec and two instants."""

from __future__ import annotations

import logging
import math
from collections import deque
from datetime import UTC, datetime, timedelta

from wfsched.trigger import CatchUp, TimerSpec

log = logging.getLogger("wfsched.timers")
MAX_CATCHUP_FIRES = 10_000
SPREAD_RESOLUTION = 0.1
"""Spread offsets are applied in 100 ms steps, so hash-spread triggers still share groups
(and transactions): 100k per-minute triggers spread over a minute make 600 groups, not 100k."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(t: datetime) -> float:
    """Seconds since the epoch of an aware instant."""
    return (t - _EPOCH).total_seconds()


def quantize(spread: float) -> float:
    """The spread the timer applies: ``spread`` rounded down to SPREAD_RESOLUTION."""
    steps = math.floor(max(0.0, spread) / SPREAD_RESOLUTION + 1e-9)
    return round(steps * SPREAD_RESOLUTION, 6)


def next_instant(spec: TimerSpec, after: datetime) -> datetime | None:
    """Return the next scheduled instant after ``after`` within ``start_at``/``end_at``."""
    if spec.start_at is not None and after < spec.start_at:
        after = spec.start_at - timedelta(microseconds=1)
    t = spec.schedule.next_after(after)
    if t is None or (spec.end_at is not None and t > spec.end_at):
        return None
    return t


def next_fire_time(spec: TimerSpec, now: datetime) -> datetime | None:
    """Return when a trigger fires next after ``now``: its next due instant, spread included."""
    spread = timedelta(seconds=quantize(spec.spread))
    nominal = next_instant(spec, now - spread)
    return None if nominal is None else nominal + spread


def _last_instants(spec: TimerSpec, lower: datetime, upper: datetime, limit: int) -> list[datetime]:
    """Return the last ``limit`` instants in ``(lower, upper]``, looking back from ``upper``.

    Schedules only walk forward, so the look-back grows fourfold until it holds ``limit``
    instants or reaches ``lower``: the cost follows the answer, not the length of the gap.
    """
    if spec.start_at is not None:
        lower = max(lower, spec.start_at - timedelta(microseconds=1))
    if spec.end_at is not None:
        upper = min(upper, spec.end_at)
    if upper <= lower:
        return []
    span = timedelta(seconds=60)
    while True:
        start = max(lower, upper - span)
        found: deque[datetime] = deque(maxlen=limit)
        count = 0
        t = spec.schedule.next_after(start)
        while t is not None and t <= upper:
            found.append(t)
            count += 1
            t = spec.schedule.next_after(t)
        if count >= limit or start <= lower:
            return list(found)
        span *= 4


def last_instant(spec: TimerSpec, since: datetime, until: datetime) -> datetime | None:
    """The latest instant in ``(since, until]``, or None."""
    found = _last_instants(spec, since, until, 1)
    return found[-1] if found else None


def instants_between(spec: TimerSpec, since: datetime, until: datetime) -> list[datetime]:
    """Every instant in ``(since, until]`` whatever the catch-up policy (a shard takeover),
    at most ``MAX_CATCHUP_FIRES`` (the latest)."""
    return _last_instants(spec, since, until, MAX_CATCHUP_FIRES)


def catchup_instants(spec: TimerSpec, since: datetime, until: datetime) -> list[datetime]:
    """Return the instants in ``(since, until]`` that the catch-up policy fires."""
    policy: CatchUp = spec.catchup
    if policy == "skip" or until <= since:
        return []
    if policy == "latest":
        return _last_instants(spec, since, until, 1)
    lower = max(since, until - timedelta(seconds=spec.catchup_window))
    found = _last_instants(spec, lower, until, MAX_CATCHUP_FIRES + 1)
    if len(found) > MAX_CATCHUP_FIRES:
        log.warning(
            "catch-up capped: only the latest fires are recorded",
            extra={"status": f"{MAX_CATCHUP_FIRES} of more"},
        )
        found = found[-MAX_CATCHUP_FIRES:]
    return found
