"""One timer for every time-based trigger: a heap of groups, fires recorded in batches.

Triggers with the same schedule, window and spread share a group, so the next instant is
computed once per group and a group is one heap entry however many triggers it holds. Each fire
is recorded under the dedupe key ``<trigger id>@<instant>``, so a restart or a second replica
can never record it twice; that is also why cursors (the last instant handled) are
checkpointed lazily: re-firing from an older cursor is a no-op in the store.

A trigger's scheduled instant ``N`` is due at ``N + spread``. When a trigger is armed at
``now``, instants due by ``now`` belong to catch-up (its policy, from its cursor) and later ones
to the timer, so nothing is fired twice or lost between the two.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from wfsched.metrics import lateness
from wfsched.models import NewEvent, iso
from wfsched.recorder import Recorder, new_event
from wfsched.timer.cursors import EMPTY, arm_record, parse_cursor
from wfsched.timer.instants import (
    catchup_instants,
    instants_between,
    next_instant,
    quantize,
    timestamp,
)
from wfsched.timer.members import SHARDS, Group, Member, shard_of
from wfsched.trigger import TimerSpec

log = logging.getLogger("wfsched.timers")
BATCH = 2000
CHECKPOINT_EVERY = 10.0
"""Seconds between cursor writes of triggers whose catch-up policy needs them."""
FULL_CHECKPOINT_EVERY = 600.0
"""Seconds between cursor writes of ``skip`` triggers (their cursor only matters after edits)."""
MAX_SLEEP = 30.0
STALLED = 120.0
"""A group overdue by more than this many seconds missed its instants (see ``tick``)."""

Cursors = Callable[[Sequence[tuple[str, str, Any]]], Awaitable[None]]


class Timer:
    """The shared timer. ``add``/``remove`` may be called at any time; ``run`` fires."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        on_cursors: Cursors | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._recorder = recorder
        self._on_cursors = on_cursors
        self._clock = clock
        self.arm_env: Callable[[str], str | None] = lambda kind: None
        """Environment digest per trigger type for arm records (set by the TriggerManager)."""
        self._groups: dict[tuple[Any, ...], Group] = {}
        self._members: dict[tuple[str, str], Member] = {}
        self._shards: list[dict[tuple[str, str], Member]] | None = None
        """Members by shard, kept once ``own`` shards the timer."""
        self._heap: list[tuple[float, int, int, Group]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        self._backlog: list[tuple[Member, datetime]] = []
        # Cursors to write soon (a policy needs them, or a new arm record) and eventually.
        self._dirty: dict[tuple[str, str], Member] = {}
        self._lazy: dict[tuple[str, str], Member] = {}
        self._retired: dict[tuple[str, str], tuple[str, datetime | None]] = {}
        self._owned: set[int] | None = None
        """Shards whose due fires this timer records (None: all, the embedded mode)."""
        self._through = 0.0
        """Every fire due by this instant (``clock``) of an owned shard has been recorded."""

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def get(self, workflow_id: str, trigger_id: str) -> Member | None:
        """Return the armed member of a trigger, or None."""
        return self._members.get((workflow_id, trigger_id))

    def groups(self) -> list[Group]:
        """The groups armed now (members sharing schedule, window and spread); kept in step
        by ``add`` and ``remove``, so reading them costs per group, not per trigger."""
        return list(self._groups.values())

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def next_fire(self, workflow_id: str, trigger_id: str) -> datetime | None:
        """Return when a trigger fires next (spread included), or None."""
        member = self._members.get((workflow_id, trigger_id))
        if member is None or member.group is None or member.group.nominal is None:
            return None
        group = member.group
        nominal: datetime | None = group.nominal
        if nominal is not None and timestamp(nominal) <= member.floor:
            nominal = next_instant(group.spec, nominal)
        return None if nominal is None else nominal + timedelta(seconds=group.spread)

    # arming --------------------------------------------------------------------------------
    def add(
        self,
        workflow_id: str,
        trigger_id: str,
        trigger_type: str,
        spec: TimerSpec,
        payload: Mapping[str, Any],
        *,
        since: datetime | None = None,
        cursor: Any = None,
        stamp: str | None = None,
        fresh_arm: bool = False,
        now: datetime | None = None,
    ) -> int:
        """Arm a trigger and queue what its catch-up policy owes; return that count.

        :param since: the earliest instant catch-up may consider (the deployment's
            ``active_since``: nothing before a deploy or resume is caught up).
        :param cursor: the stored cursor; its last instant moves ``since`` forward when it
            belongs to the same schedule, and a different schedule means no catch-up at all.
        :param stamp: identity of the definition, stored with the cursor for fast re-arming.
        :param fresh_arm: write the arm record at the next checkpoint.
        """
        key = (workflow_id, trigger_id)
        if key in self._members:
            self.remove(workflow_id, trigger_id)
        spread = quantize(spec.spread)
        floor = (self._clock() if now is None else timestamp(now)) - spread
        horizon = floor  # instants due by now belong to catch-up, later ones to the timer
        known, last = parse_cursor(cursor) if cursor is not None else (None, None)
        retired = self._retired.pop(key, None) if self._retired else None
        if retired is not None:
            # What this process knew in memory is at least as fresh as what it stored.
            if known == retired[0] and last is not None and retired[1] is not None:
                last = max(last, retired[1])
            else:
                known, last = retired
        start = since
        if known is not None and known != spec.schedule.key:
            start, last = None, None  # a changed schedule never produces a burst of fires
        elif last is not None:
            floor = max(floor, timestamp(last))
            if start is None or last > start:
                start = last
        member = Member(
            workflow_id, trigger_id, trigger_type, payload or EMPTY, spec, floor, last, stamp
        )
        owed: list[datetime] = []
        if start is not None and spec.catchup != "skip":
            owed = catchup_instants(spec, start, datetime.fromtimestamp(horizon, UTC))
            self._backlog.extend((member, t) for t in owed)
        group_key = (spec.schedule.key, spec.start_at, spec.end_at, spread)
        group = self._groups.get(group_key)
        if group is None:
            group = Group(group_key, spec, spread)
            self._groups[group_key] = group
            self._push(group, self._advance(spec, datetime.fromtimestamp(horizon, UTC)))
        member.group = group
        group.members[key] = member
        group.edits += 1
        self._members[key] = member
        if self._shards is not None:
            member.shard = shard_of(workflow_id, trigger_id)
            self._shards[member.shard][key] = member
        if fresh_arm and stamp is not None:
            self._dirty[key] = member
        if owed:
            self._wake.set()
        return len(owed)

    def restamp(self, workflow_id: str, trigger_id: str, stamp: str) -> None:
        """Record that an unchanged trigger now belongs to another definition stamp."""
        member = self._members.get((workflow_id, trigger_id))
        if member is not None and member.stamp != stamp:
            member.stamp = stamp
            self._dirty[member.key] = member

    def remove(self, workflow_id: str, trigger_id: str) -> None:
        """Stop firing a trigger (its cursor progress is kept for a re-arm)."""
        member = self._members.pop((workflow_id, trigger_id), None)
        if member is None or member.group is None:
            return
        if self._shards is not None:
            self._shards[member.shard].pop(member.key, None)
        self._retired[member.key] = (member.spec.schedule.key, member.last)
        group = member.group
        group.members.pop(member.key, None)
        group.edits += 1
        member.group = None
        if not group.members:
            # The heap entry goes stale (version check) instead of an O(n) heap removal.
            group.version += 1
            self._groups.pop(group.key, None)

    def _advance(self, spec: TimerSpec, after: datetime) -> datetime | None:
        try:
            return next_instant(spec, after)
        except Exception:  # one broken schedule must not stop the timer
            log.exception(
                "schedule failed to compute its next instant", extra={"status": spec.schedule.key}
            )
            return None

    def _push(self, group: Group, nominal: datetime | None) -> None:
        group.nominal = nominal
        group.version += 1
        if nominal is None:
            return
        due = timestamp(nominal) + group.spread
        heapq.heappush(self._heap, (due, next(self._seq), group.version, group))
        if self._heap[0][3] is group:
            self._wake.set()

    # shards --------------------------------------------------------------------------------
    def own(self, shards: set[int] | None) -> None:
        """Record due fires of these shards only (None: of every trigger)."""
        self._owned = None if shards is None else set(shards)
        if shards is not None and self._shards is None:
            self._shards = [{} for _ in range(SHARDS)]
            for key, member in self._members.items():
                member.shard = shard_of(*key)
                self._shards[member.shard][key] = member

    def gain(self, shard: int, since: float) -> int:
        """Start recording ``shard``; queue every instant of its triggers due after ``since``
        (a clock timestamp) and by now, whatever their catch-up policy: a takeover must not
        lose what the previous holder had not recorded yet. Returns the fires queued."""
        if self._owned is None or self._shards is None or shard in self._owned:
            return 0
        self._owned.add(shard)
        now = self._clock()
        owed: dict[tuple[Any, ...], list[datetime]] = {}
        queued = 0
        for member in self._shards[shard].values():
            group = member.group
            if group is None:
                continue
            instants = owed.get(group.key)
            if instants is None:
                lower = datetime.fromtimestamp(since - group.spread, UTC)
                upper = datetime.fromtimestamp(now - group.spread, UTC)
                instants = owed[group.key] = instants_between(group.spec, lower, upper)
            mine = [t for t in instants if timestamp(t) > member.floor]
            self._backlog.extend((member, t) for t in mine)
            queued += len(mine)
        if queued:
            self._wake.set()
        return queued

    def drop(self, shard: int) -> None:
        """Stop recording ``shard`` (another replica holds it now)."""
        if self._owned is not None:
            self._owned.discard(shard)

    def recorded_through(self) -> float:
        """A clock timestamp by which every due fire of an owned shard has been recorded."""
        if self._backlog:
            return self._through
        self._drop_stale()
        due = self._heap[0][0] if self._heap else math.inf
        return max(self._through, min(due, self._clock()))

    # firing --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Fire due groups and catch-up until cancelled; checkpoint cursors along the way."""
        clock = time.monotonic
        next_checkpoint = clock() + CHECKPOINT_EVERY
        next_full = clock() + FULL_CHECKPOINT_EVERY
        try:
            while True:
                await self.tick()
                if clock() >= next_full:
                    await self.checkpoint(everything=True)
                    next_full = clock() + FULL_CHECKPOINT_EVERY
                    next_checkpoint = clock() + CHECKPOINT_EVERY
                elif clock() >= next_checkpoint:
                    await self.checkpoint()
                    next_checkpoint = clock() + CHECKPOINT_EVERY
                if self._backlog:
                    continue
                self._drop_stale()
                delay = MAX_SLEEP
                if self._heap:
                    delay = min(delay, self._heap[0][0] - self._clock())
                if self._dirty:
                    delay = min(delay, next_checkpoint - clock())
                if delay > 0:
                    with anyio.move_on_after(delay):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    if self._backlog:
                        await self._record_backlog(retry=False)
                except Exception as exc:  # noqa: BLE001 - re-owed from the cursor at start
                    log.warning("catch-up not recorded at shutdown", extra={"error": str(exc)})
                await self.checkpoint(everything=True)

    async def tick(self) -> int:
        """Record queued catch-up and every fire due by the clock; return the fires recorded."""
        done = 0
        if self._backlog:
            done += await self._record_backlog()
        done += await self._fire_due()
        return done

    def _drop_stale(self) -> None:
        while self._heap and self._heap[0][2] != self._heap[0][3].version:
            heapq.heappop(self._heap)

    async def _fire_due(self) -> int:
        now = self._clock()
        due: list[tuple[Group, datetime]] = []
        while self._heap and self._heap[0][0] <= now:
            at, _, version, group = heapq.heappop(self._heap)
            if version != group.version or group.nominal is None:
                continue
            if at < now - STALLED:
                self._resume_stalled(group, now)
                continue
            due.append((group, group.nominal))
            self._push(group, self._advance(group.spec, group.nominal))
        done = 0
        owned = self._owned
        pending: list[tuple[Member, datetime]] = []
        for group, nominal in due:
            at = timestamp(nominal)
            for member in list(group.members.values()):
                if at > member.floor and (owned is None or member.shard in owned):
                    pending.append((member, nominal))
                    if len(pending) >= BATCH:
                        done += await self._record(pending)
                        pending = []
        if pending:
            done += await self._record(pending)
        if self._backlog:
            done += await self._record_backlog()
        self._through = max(self._through, now)
        return done

    def _resume_stalled(self, group: Group, now: float) -> None:
        # Overdue this long, the timer was not late but stopped (suspended, clock jumped): the
        # missed instants follow each member's catch-up policy, as after a restart.
        log.warning("timer stalled; applying catch-up policies", extra={"status": group.key[0]})
        floor = now - group.spread
        horizon = datetime.fromtimestamp(floor, UTC)
        for member in group.members.values():
            since = datetime.fromtimestamp(member.floor, UTC)
            if member.last is not None and member.last > since:
                since = member.last
            self._backlog.extend((member, t) for t in catchup_instants(member.spec, since, horizon))
            member.floor = max(member.floor, floor)
        self._push(group, self._advance(group.spec, horizon))

    async def _record_backlog(self, *, retry: bool = True) -> int:
        backlog, self._backlog = self._backlog, []
        done = 0
        for start in range(0, len(backlog), BATCH):
            done += await self._record(backlog[start : start + BATCH], retry=retry)
        return done

    def _events(self, fires: Sequence[tuple[Member, datetime]]) -> list[NewEvent]:
        fired = self.now()
        names: dict[datetime, str] = {}
        events = []
        for member, nominal in fires:
            name = names.get(nominal)
            if name is None:
                name = names[nominal] = f"@{iso(nominal)}"
            events.append(
                new_event(
                    workflow_id=member.workflow_id,
                    trigger_id=member.trigger_id,
                    trigger_type=member.trigger_type,
                    static_payload=member.payload,
                    payload=EMPTY,  # a time fire adds nothing to the static payload
                    dedupe_key=member.trigger_id + name,
                    fired_at=fired,
                    scheduled_at=nominal,
                )
            )
        return events

    async def _record(self, fires: Sequence[tuple[Member, datetime]], *, retry: bool = True) -> int:
        # A trigger removed since its fire was queued (undeployed, paused) fires no more; one
        # re-armed meanwhile (edited) still records what was due before the edit.
        fires = [f for f in fires if f[0].key in self._members]
        if not fires:
            return 0
        events = self._events(fires)
        # A store outage delays fires instead of dropping them; the dedupe key makes the
        # retry of a batch that did commit harmless.
        delay = 0.5
        while True:
            try:
                result = await self._recorder.record(events)
                break
            except Exception as exc:
                if not retry:
                    raise
                log.error(
                    "recording timer fires failed; retrying",
                    extra={"error": str(exc), "duration_ms": int(delay * 1000)},
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
        stored = self._clock()
        for (member, nominal), (_, created) in zip(fires, result, strict=True):
            if created:
                late = stored - timestamp(nominal) - quantize(member.spec.spread)
                lateness(member.trigger_type).observe(max(0.0, late))
            if member.last is None or nominal > member.last:
                member.last = nominal
            if self._members.get(member.key) is not member:
                retired = self._retired.get(member.key)
                if retired is not None and retired[0] == member.spec.schedule.key:
                    self._retired[member.key] = (retired[0], member.last)
            elif member.spec.catchup == "skip":
                self._lazy[member.key] = member
            else:
                self._dirty[member.key] = member
        return len(fires)

    # cursors -------------------------------------------------------------------------------
    def cursor(self, member: Member) -> dict[str, Any]:
        """The JSON a member's cursor is stored as."""
        value: dict[str, Any] = {"key": member.spec.schedule.key, "last": iso(member.last)}
        env = self.arm_env(member.trigger_type) if member.stamp is not None else None
        if env is not None:
            value["arm"] = arm_record(
                member.stamp or "", env, member.trigger_type, member.payload, member.spec
            )
        return value

    async def checkpoint(self, *, everything: bool = False) -> None:
        """Persist moved cursors: those catch-up needs, or (``everything``) all of them."""
        if everything:
            self._dirty.update(self._lazy)
            self._lazy = {}
            self._retired = {}
        if not self._dirty or self._on_cursors is None:
            return
        dirty, self._dirty = self._dirty, {}
        try:
            rows = [(m.workflow_id, m.trigger_id, self.cursor(m)) for m in dirty.values()]
            for start in range(0, len(rows), 5 * BATCH):
                await self._on_cursors(rows[start : start + 5 * BATCH])
        except Exception as exc:  # noqa: BLE001 - retried at the next checkpoint
            log.warning("cursor checkpoint failed", extra={"error": str(exc)})
            for k, v in dirty.items():
                self._dirty.setdefault(k, v)
