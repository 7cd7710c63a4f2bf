"""What the timer computes and stores outside its loop: its members and groups, instants
within a trigger's window, catch-up after downtime, shards, cursors, and the arm records that
let a restart skip spec parsing.

An arm record is one line of text stored in the trigger's cursor: the deployment's spec hash,
a digest of the environment (version, trigger class, settings) and the fields of its
TimerSpec. It is only trusted when both hashes match what the daemon sees.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from wfsched.models import iso
from wfsched.schedules.series import series_from_key
from wfsched.trigger import CatchUp, TimerSpec

log = logging.getLogger("wfsched.timers")
MAX_CATCHUP_FIRES = 10_000
SPREAD_RESOLUTION = 0.1
"""Spread offsets are applied in 100 ms steps, so hash-spread triggers still share groups
(and transactions): 100k per-minute triggers spread over a minute make 600 groups, not 100k."""
CURSOR_FIELDS = ("key", "last", "arm")
"""The members of a timer cursor (a JSON object)."""
EMPTY: Mapping[str, Any] = {}
SHARDS = 16
"""Time-based triggers fall in this many shards; with replicas, each replica fires the shards
it holds a lease on (wfsched.timer.shards)."""
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


def instants_between(spec: TimerSpec, since: datetime, until: datetime) -> list[datetime]:
    """Every instant in ``(since, until]`` whatever the catch-up policy (a shard takeover),
    at most ``MAX_CATCHUP_FIRES`` (the latest)."""
    return _last_instants(spec, since, until, MAX_CATCHUP_FIRES)


def shard_of(workflow_id: str, trigger_id: str) -> int:
    """The timer shard of a trigger: stable across processes and releases."""
    return zlib.crc32(f"{workflow_id}\0{trigger_id}".encode()) % SHARDS


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


def parse_cursor(value: Any) -> tuple[str | None, datetime | None]:
    """Return ``(schedule key, last instant)`` of a stored timer cursor."""
    if not isinstance(value, dict):
        return None, None
    last = value.get("last")
    when = _instant(last) if isinstance(last, str) else None
    key = value.get("key")
    return (key if isinstance(key, str) else None), when


@lru_cache(maxsize=4096)
def _instant(text: str) -> datetime | None:
    # Triggers of one group share their last instant: a restart parses each one once.
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def arm_record(stamp: str, env: str, kind: str, payload: Mapping[str, Any], spec: TimerSpec) -> str:
    """The compact form of an armed trigger, stored with its cursor (see ``restore``)."""
    text = json.dumps(payload, separators=(",", ":")) if payload else ""
    fields = (
        _ARM_VERSION,
        stamp,
        env,
        kind,
        repr(spec.spread),
        spec.catchup,
        repr(spec.catchup_window),
        iso(spec.start_at) or "",
        iso(spec.end_at) or "",
        text,
    )
    return "|".join(fields)


def armed_cursor(
    stamp: str, env: str, kind: str, payload: Mapping[str, Any], spec: TimerSpec
) -> dict[str, Any] | None:
    """A fresh trigger's cursor with its arm record, or None if ``restore`` could not use it."""
    if series_from_key(spec.schedule.key) is None:
        return None
    return {
        "key": spec.schedule.key,
        "last": None,
        "arm": arm_record(stamp, env, kind, payload, spec),
    }


_ARM_VERSION = "a1"


def restore(
    cursor: Any, spec_hash: str, env: Callable[[str], str | None]
) -> tuple[str, Mapping[str, Any], TimerSpec] | None:
    """Return ``(type, payload, spec)`` from a stored arm record, or None.

    The record must have been made from the deployment ``spec_hash`` in the same environment
    (``env(type)``). None means "parse the spec instead": no record, another definition, or a
    schedule key this process cannot rebuild.
    """
    if not isinstance(cursor, dict):
        return None
    arm = cursor.get("arm")
    key = cursor.get("key")
    if not isinstance(arm, str) or not isinstance(key, str):
        return None
    head = f"{_ARM_VERSION}|{spec_hash}|"
    if not arm.startswith(head):
        return None
    # Most triggers share all but the spec hash with many others: decode each variant once.
    cache_key = (key, arm[len(head) :])
    found = _RESTORED.get(cache_key)
    if found is None:
        found = _decode(key, cache_key[1])
        if found is None:
            return None
        if len(_RESTORED) > 65536:
            _RESTORED.clear()
        _RESTORED[cache_key] = found
    if found[0] != env(found[1]):
        return None
    return found[1], found[2], found[3]


_RESTORED: dict[tuple[str, str], tuple[str, str, Mapping[str, Any], TimerSpec]] = {}


def _decode(key: str, rest: str) -> tuple[str, str, Mapping[str, Any], TimerSpec] | None:
    parts = rest.split("|", 7)
    if len(parts) != 8:
        return None
    environment, kind, spread, catchup, window, start, end, payload_text = parts
    schedule = series_from_key(key)
    if schedule is None or catchup not in ("skip", "latest", "all"):
        return None
    try:
        payload = json.loads(payload_text) if payload_text else EMPTY
        spec = TimerSpec(
            schedule=schedule,
            spread=float(spread),
            catchup=catchup,  # type: ignore[arg-type]
            catchup_window=float(window),
            start_at=datetime.fromisoformat(start) if start else None,
            end_at=datetime.fromisoformat(end) if end else None,
        )
    except ValueError:
        return None
    if not isinstance(payload, Mapping):
        return None
    return environment, kind, payload, spec


@dataclass(slots=True, eq=False)
class Member:
    """One trigger armed in the timer."""

    workflow_id: str
    trigger_id: str
    trigger_type: str
    payload: Mapping[str, Any]
    spec: TimerSpec
    floor: float
    """Instants at or before this timestamp are not the timer's (caught up or skipped)."""
    last: datetime | None = None
    """The last scheduled instant handled: the cursor."""
    stamp: str | None = None
    """The deployment's spec hash this member was armed from; stored with the cursor so a
    restart can re-arm it without parsing the spec (None: store no arm record)."""
    group: Group | None = None
    shard: int = -1
    """Its timer shard; computed once the timer is sharded (replicas)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.workflow_id, self.trigger_id)


@dataclass(slots=True, eq=False)
class Group:
    """Members sharing schedule, window and spread; ``nominal`` is their next instant."""

    key: tuple[Any, ...]
    spec: TimerSpec
    spread: float
    members: dict[tuple[str, str], Member] = field(default_factory=dict)
    nominal: datetime | None = None
    version: int = 0
