"""One timer for every time-based trigger: a heap of groups, fires recorded in batches.

Triggers with the same schedule and spread share a group, so the next instant is computed
once per group. The dedupe key ``<trigger id>@<instant>`` makes every fire idempotent, which
is why cursors are checkpointed lazily: after a crash, re-firing from an older cursor is a
no-op in the store.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from wfsched.events import Recorder
from wfsched.metrics import FIRE_LATENESS
from wfsched.models import NewEvent, iso, new_execution_id, utcnow
from wfsched.trigger import TimerSpec

log = logging.getLogger("wfsched.timers")
BATCH = 2000
MAX_CATCHUP_FIRES = 1000


@dataclass(slots=True, eq=False)
class Member:
    """One trigger in a timer group."""

    workflow_id: str
    trigger_id: str
    trigger_type: str
    payload: dict[str, Any]
    spec: TimerSpec
    group: Group | None = None


@dataclass(slots=True, eq=False)
class Group:
    """Triggers sharing a schedule and spread; ``nominal`` is their next scheduled instant."""

    key: tuple[str, float]
    spec: TimerSpec
    members: dict[tuple[str, str], Member] = field(default_factory=dict)
    nominal: datetime | None = None
    version: int = 0


def catchup_instants(spec: TimerSpec, since: datetime, now: datetime) -> list[datetime]:
    """Return the instants in ``(since, now]`` that the catch-up policy fires."""
    if spec.catchup == "skip":
        return []
    start = since
    if spec.catchup == "all":
        start = max(since, now - timedelta(seconds=spec.catchup_window))
    found: list[datetime] = []
    t = spec.schedule.next_after(start)
    while t is not None and t <= now:
        if spec.start_at is None or t >= spec.start_at:
            if spec.end_at is None or t <= spec.end_at:
                found.append(t)
        if spec.catchup == "latest" and len(found) > 1:
            found.pop(0)
        if len(found) >= MAX_CATCHUP_FIRES and spec.catchup == "all":
            break
        t = spec.schedule.next_after(t)
    return found


def next_instant(spec: TimerSpec, after: datetime) -> datetime | None:
    """Return the next instant after ``after`` within ``start_at``/``end_at``."""
    if spec.start_at is not None and after < spec.start_at:
        after = spec.start_at - timedelta(microseconds=1)
    t = spec.schedule.next_after(after)
    if t is None or (spec.end_at is not None and t > spec.end_at):
        return None
    return t


class Timer:
    """The shared timer. ``add``/``remove`` may be called at any time; ``run`` fires."""

    def __init__(self, recorder: Recorder, *, on_cursors: Callable[
            [Sequence[tuple[str, str, Any]]], Awaitable[None]] | None = None) -> None:
        self._recorder = recorder
        self._on_cursors = on_cursors
        self._groups: dict[tuple[str, float], Group] = {}
        self._members: dict[tuple[str, str], Member] = {}
        self._heap: list[tuple[float, int, int, Group]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._dirty: dict[tuple[str, str], Any] = {}

    def __len__(self) -> int:
        return len(self._members)

    def next_fire(self, workflow_id: str, trigger_id: str) -> datetime | None:
        """Return when a trigger fires next (spread included), or None."""
        member = self._members.get((workflow_id, trigger_id))
        if member is None or member.group is None or member.group.nominal is None:
            return None
        return member.group.nominal + timedelta(seconds=member.spec.spread)

    def add(self, workflow_id: str, trigger_id: str, trigger_type: str, spec: TimerSpec,
            payload: dict[str, Any], now: datetime | None = None) -> None:
        """Schedule a trigger from ``now`` on (catch-up is the caller's, see ``catch_up``)."""
        self.remove(workflow_id, trigger_id)
        key = (spec.schedule.key + _window(spec), spec.spread)
        group = self._groups.get(key)
        if group is None:
            group = Group(key=key, spec=spec)
            self._groups[key] = group
            self._push(group, next_instant(spec, now or utcnow()))
        member = Member(workflow_id, trigger_id, trigger_type, payload, spec, group)
        group.members[(workflow_id, trigger_id)] = member
        self._members[(workflow_id, trigger_id)] = member

    def remove(self, workflow_id: str, trigger_id: str) -> None:
        """Stop firing a trigger."""
        member = self._members.pop((workflow_id, trigger_id), None)
        if member is None or member.group is None:
            return
        group = member.group
        group.members.pop((workflow_id, trigger_id), None)
        member.group = None
        if not group.members:
            # The heap entry goes stale (version check) instead of an O(n) heap removal.
            group.version += 1
            self._groups.pop(group.key, None)

    def _push(self, group: Group, nominal: datetime | None) -> None:
        group.nominal = nominal
        group.version += 1
        if nominal is None:
            return
        due = nominal.timestamp() + group.key[1]
        heapq.heappush(self._heap, (due, next(self._seq), group.version, group))
        if self._heap[0][3] is group:
            self._wake.set()

    def events_for(self, member: Member, instants: Sequence[datetime]) -> list[NewEvent]:
        """Build the events of one member for the given scheduled instants."""
        fired = utcnow()
        return [NewEvent(
            execution_id=new_execution_id(), workflow_id=member.workflow_id,
            trigger_id=member.trigger_id, trigger_type=member.trigger_type,
            dedupe_key=f"{member.trigger_id}@{iso(t)}", payload=member.payload,
            fired_at=fired, scheduled_at=t) for t in instants]

    async def catch_up(self, member_key: tuple[str, str], since: datetime, now: datetime) -> int:
        """Fire what the member's catch-up policy owes for ``(since, now]``; return the count."""
        member = self._members.get(member_key)
        if member is None:
            return 0
        instants = catchup_instants(member.spec, since, now)
        if not instants:
            return 0
        events = self.events_for(member, instants)
        for start in range(0, len(events), BATCH):
            await self._recorder.record(events[start:start + BATCH])
        self._dirty[member_key] = {"key": member.spec.schedule.key, "last": iso(instants[-1])}
        return len(events)

    def cursor_for(self, member_key: tuple[str, str], t: datetime) -> dict[str, Any]:
        member = self._members[member_key]
        return {"key": member.spec.schedule.key, "last": iso(t)}

    async def run(self, *, checkpoint_every: float = 10.0) -> None:
        """Fire due groups until cancelled; checkpoint cursors every ``checkpoint_every``."""
        last_checkpoint = time.monotonic()
        try:
            while True:
                self._drop_stale()
                delay = math.inf
                if self._heap:
                    delay = max(0.0, self._heap[0][0] - time.time())
                if time.monotonic() - last_checkpoint >= checkpoint_every:
                    await self.checkpoint()
                    last_checkpoint = time.monotonic()
                if delay > 0:
                    with anyio.move_on_after(min(delay, checkpoint_every)):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                await self._fire_due()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self.checkpoint()

    def _drop_stale(self) -> None:
        while self._heap and self._heap[0][2] != self._heap[0][3].version:
            heapq.heappop(self._heap)

    async def _fire_due(self) -> None:
        now = time.time()
        due: list[tuple[float, Group, datetime]] = []
        while self._heap and self._heap[0][0] <= now:
            at, _, version, group = heapq.heappop(self._heap)
            if version != group.version or group.nominal is None:
                continue
            due.append((at, group, group.nominal))
            self._push(group, next_instant(group.spec, group.nominal))
        events: list[NewEvent] = []
        fired_groups: list[tuple[float, list[Member], datetime]] = []
        for at, group, nominal in due:
            members = list(group.members.values())
            for member in members:
                events.extend(self.events_for(member, (nominal,)))
            fired_groups.append((at, members, nominal))
        for start in range(0, len(events), BATCH):
            await self._record_until_stored(events[start:start + BATCH])
        done = time.time()
        for at, members, nominal in fired_groups:
            FIRE_LATENESS.observe(max(0.0, done - at))
            cursor = {"key": members[0].spec.schedule.key if members else "", "last": iso(nominal)}
            for member in members:
                self._dirty[(member.workflow_id, member.trigger_id)] = cursor

    async def _record_until_stored(self, events: list[NewEvent]) -> None:
        # A store outage delays fires instead of dropping them; the dedupe key makes the
        # retry of a batch that did commit harmless.
        delay = 0.5
        while True:
            try:
                await self._recorder.record(events)
                return
            except Exception as exc:  # noqa: BLE001
                log.error("recording timer fires failed; retrying",
                          extra={"error": str(exc), "duration_ms": int(delay * 1000)})
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def checkpoint(self) -> None:
        """Persist the cursors that moved since the last checkpoint."""
        if not self._dirty or self._on_cursors is None:
            return
        dirty, self._dirty = self._dirty, {}
        try:
            await self._on_cursors([(w, t, c) for (w, t), c in dirty.items()])
        except Exception as exc:  # noqa: BLE001 - retried at the next checkpoint
            log.warning("cursor checkpoint failed", extra={"error": str(exc)})
            for k, v in dirty.items():
                self._dirty.setdefault(k, v)


def _window(spec: TimerSpec) -> str:
    return f"|{iso(spec.start_at) or ''}|{iso(spec.end_at) or ''}"


def parse_cursor(value: Any) -> tuple[str | None, datetime | None]:
    """Return ``(schedule key, last instant)`` of a stored timer cursor."""
    if not isinstance(value, dict):
        return None, None
    last = value.get("last")
    try:
        when = datetime.fromisoformat(last).astimezone(UTC) if isinstance(last, str) else None
    except ValueError:
        when = None
    key = value.get("key")
    return (key if isinstance(key, str) else None), when
