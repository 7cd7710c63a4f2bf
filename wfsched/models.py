"""Values that flow between the layers: specs, deployments, trigger events.

None of them is changed once made. Those made per fire or per request (events, claims,
outcomes) are plain slotted dataclasses rather than frozen ones: a frozen dataclass sets each
field through ``object.__setattr__`` and costs twice as much to create, and a webhook request
makes several; the others are frozen."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

EventStatus = Literal["pending", "dispatched", "failed"]
DeploymentState = Literal["active", "paused"]
Health = Literal["healthy", "degraded", "failing"]

COMMON_TRIGGER_FIELDS = frozenset({"type", "id", "enabled", "payload"})


@dataclass(frozen=True, kw_only=True, slots=True)
class TriggerSpec:
    """One trigger of a workflow after validation by its trigger type."""

    id: str
    type: str
    enabled: bool = True
    payload: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    """The type-specific fields, as normalised by the trigger type's ``validate``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkflowSpec:
    """A validated workflow spec; ``document`` is the spec as written (for export and hashing)."""

    id: str
    name: str
    triggers: tuple[TriggerSpec, ...]
    document: Mapping[str, Any]
    spec_hash: str
    source: str = ""
    dispatch: Mapping[str, Any] | None = None
    """The workflow's own ``[dispatch]`` table, validated by its target (``mode`` + fields);
    None: the default target, ``dispatch.mode``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Deployment:
    """A deployed workflow as the store holds it."""

    workflow_id: str
    name: str
    document: Mapping[str, Any]
    spec_hash: str
    state: DeploymentState
    revision: int
    updated_at: datetime
    active_since: datetime
    """When the workflow was last created, changed or resumed: time-based triggers catch up
    nothing before it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TriggerState:
    """Per-trigger state the store keeps: the trigger's cursor and last known health."""

    workflow_id: str
    trigger_id: str
    type: str
    cursor: Any = None
    health: Health = "healthy"
    last_error: str | None = None
    fence: int = 0


@dataclass(kw_only=True, slots=True)
class NewEvent:
    """A fire about to be recorded; ``dedupe_key`` is unique per workflow."""

    execution_id: str
    workflow_id: str
    trigger_id: str
    trigger_type: str
    dedupe_key: str
    payload: Mapping[str, Any]
    fired_at: datetime
    scheduled_at: datetime | None = None


@dataclass(slots=True)
class Claim:
    """Record events already leased to dispatcher ``owner`` until ``until``: the first
    ``limit`` events of the batch (a recorded event then skips the claim round trip)."""

    owner: str
    until: datetime
    limit: int


@dataclass(kw_only=True, slots=True)
class TriggerEvent:
    """A recorded trigger event: the row every fire makes, as history and the API show it."""

    execution_id: str
    workflow_id: str
    trigger_id: str
    trigger_type: str
    dedupe_key: str
    scheduled_at: datetime | None
    fired_at: datetime
    payload: Mapping[str, Any]
    status: EventStatus
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    dispatched_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Render the event with its public field names (history, the API, dispatch)."""
        return {
            "execution_id": self.execution_id,
            "workflow_id": self.workflow_id,
            "trigger_id": self.trigger_id,
            "trigger_type": self.trigger_type,
            "scheduled_at": iso(self.scheduled_at),
            "fired_at": iso(self.fired_at),
            "payload": dict(self.payload),
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": iso(self.next_attempt_at),
            "dispatched_at": iso(self.dispatched_at),
        }


@dataclass(kw_only=True, slots=True)
class DispatchOutcome:
    """The result of one dispatch attempt, written back to the event."""

    execution_id: str
    status: EventStatus
    error: str | None = None
    next_attempt_at: datetime | None = None
    dispatched_at: datetime | None = None
    """When the sender returned (dispatched only); unset: when the outcome is written."""
    fired_at: datetime | None = None
    """The event's ``fired_at``: lets a store partitioned by time find the row in one
    partition; unset: the store looks it up by execution id alone."""


Outcome = Literal[
    "fired", "deduplicated", "skipped", "missed", "paused", "pending", "refused", "filtered"
]
"""The fate of one occurrence (a due instant, a delivery): see ``wfsched.explain``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Occurrence:
    """One entry of the occurrence ledger: what happened to a delivery or a due instant."""

    workflow_id: str
    trigger_id: str
    trigger_type: str
    at: datetime
    outcome: Outcome
    reason: str = ""
    execution_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trigger_id": self.trigger_id,
            "trigger_type": self.trigger_type,
            "at": iso(self.at),
            "outcome": self.outcome,
            "reason": self.reason,
        }
        if self.execution_id is not None:
            out["execution_id"] = self.execution_id
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class DaemonRun:
    """One run of one daemon (replica), from its heartbeats: it ran from ``started_at`` and
    was last seen alive at ``last_seen``; ``live`` while its heartbeat row still exists."""

    replica_id: str
    started_at: datetime
    last_seen: datetime
    listen: str = ""
    live: bool = False


def utcnow() -> datetime:
    """Return the current instant as an aware UTC datetime."""
    return datetime.now(UTC)


def parse_instant(text: str, name: str) -> datetime:
    """An ISO 8601 instant from a user (``2026-11-28T10:00:00+01:00``, ``…Z``, a date); one
    without an offset is UTC, whichever host reads it. InvalidInput names ``name``."""
    from wfsched.errors import InvalidInput

    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{name} {text!r} is not an ISO 8601 instant") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """Render an instant as ISO 8601 in UTC with a ``Z`` suffix (microseconds unless zero)."""
    if value is None:
        return None
    text = utc_text(value)
    return text[:-8] + "Z" if text.endswith(".000000Z") else text


def utc_text(value: datetime) -> str:
    """``value`` in UTC as fixed-width ISO 8601 with microseconds and ``Z``
    (``2026-12-06T23:10:05.123456Z``; a naive value is local time, as for ``astimezone``).

    Every fire and dispatch renders a few instants, nearly all in the current second: the
    whole seconds are rendered once per second (``isoformat`` costs four times the rest)."""
    global _SECOND
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # The second as a tuple of its fields: ``replace(microsecond=0)`` costs four times more.
    second = (value.second, value.minute, value.hour, value.day, value.month, value.year)
    cached = _SECOND
    if cached[0] != second:
        whole = value.replace(microsecond=0, tzinfo=None).isoformat()
        cached = _SECOND = (second, whole)
    return f"{cached[1]}.{value.microsecond:06d}Z"


_SECOND: tuple[tuple[int, ...], str] = ((), "")
"""The whole second :func:`utc_text` rendered last, and its text."""


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
"""Two Crockford characters per 10 bits: a 26-character ULID in 13 look-ups."""
_SHIFTS = range(120, -1, -10)
_last_ms = 0
_last_rand = 0
_time_part = ""


_POOL_BYTES = 4000
_pool = b""
_pool_at = 0


def _random_bits() -> int:
    """79 random bits from a pool of ``os.urandom`` bytes: one system call per 400 ids. A call
    each would also let go of the GIL every time (CPython does around ``getrandom``): on a
    busy daemon that handed the event loop's thread to the store's worker thread and back."""
    global _pool, _pool_at
    at = _pool_at
    if at + 10 > len(_pool):
        _pool, at = os.urandom(_POOL_BYTES), 0
    _pool_at = at + 10
    return int.from_bytes(_pool[at : at + 10], "big") >> 1


def _forget_pool() -> None:
    global _pool, _pool_at, _last_ms
    _pool, _pool_at, _last_ms = b"", 0, 0


# A forked child must not hand out its parent's bytes again, nor count up from its parent's
# last id within the same millisecond.
os.register_at_fork(after_in_child=_forget_pool)


def new_execution_id() -> str:
    """Return a ULID: 48-bit milliseconds then 80 bits, monotonic within this process."""
    global _last_ms, _last_rand, _time_part
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        # Same millisecond (or a clock step back): keep the order by counting up.
        rand = _last_rand + 1
    else:
        rand = _random_bits()
        _last_ms = ms
        # The first 10 characters are the milliseconds alone (48 bits in 50): once per ms.
        value = ms << 80
        _time_part = "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS[:5]])
    _last_rand = rand
    # The last 16 are the 80 random bits, eight pairs of characters.
    pairs = _PAIRS
    return "".join(
        (
            _time_part,
            pairs[(rand >> 70) & 1023],
            pairs[(rand >> 60) & 1023],
            pairs[(rand >> 50) & 1023],
            pairs[(rand >> 40) & 1023],
            pairs[(rand >> 30) & 1023],
            pairs[(rand >> 20) & 1023],
            pairs[(rand >> 10) & 1023],
            pairs[rand & 1023],
        )
    )


def execution_id_floor(t: datetime) -> str:
    """The smallest execution id (ULID) this process could give an event created at ``t``:
    execution ids sort by creation time, so ``execution_id >= floor`` bounds an index scan."""
    ms = max(0, int(t.timestamp() * 1000))
    value = ms << 80
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])
