"""Replicas share the timer's work: each fires the shards of time-based triggers it leases.

Every replica arms every time-based trigger, but records the due fires of a shard only while
it holds the shard's lease (``timer-shard-<n>``), so N replicas do the timer's work once
instead of N times. Leases only save work: the store's dedupe key stays the guard, so two
replicas both firing a shard for a moment (a double grant, a takeover) costs no-op inserts,
never a duplicate event.

No fire may be lost to a handover:

* a replica that takes a shard first records every instant of its triggers due in the last
  ``TAKEOVER_HORIZON`` seconds (whatever their catch-up policy; never before it armed them,
  which is the catch-up policy's business): the previous holder may have died, been frozen
  or lost its lease while behind; what it did record is a no-op;
* a replica gives a shard away (to balance) only once its timer has recorded everything due
  so far, and then does not compete for it for a while;
* while the lock backend is unreachable, a replica fires every shard it cannot lease (every
  replica then records everything, and the dedupe key keeps one of each).

Balance: a replica leases free shards at once while it holds fewer than its fair share
(shards / live replicas, rounded up), otherwise only every ``ttl`` seconds, so shards whose
holder died are always taken over even before that replica leaves the membership; a replica
holding more than its fair share hands its highest-numbered shards away one at a time. When
nobody takes a shard handed away (the membership still counts a replica that died) and it
comes back, handing over pauses for ``HANDOVER_BACKOFF``, until the membership is right.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio

from wfsched.locks import LockError, LockManager
from wfsched.timer import Timer
from wfsched.timer.members import SHARDS

log = logging.getLogger("wfsched.shards")
TAKEOVER_HORIZON = 60.0
"""Seconds of instants a new holder records again when it takes a shard over."""
HANDOVER_WAIT = 10.0
"""Longest wait for the timer to catch up before a shard is handed over anyway."""
HANDOVER_BACKOFF = 30.0
"""Seconds without handing shards over after one came back unwanted (twice a heartbeat TTL)."""


class ShardKeeper:
    """Leases a fair share of the timer shards for this replica and tells the timer."""

    def __init__(
        self,
        locks: LockManager,
        timer: Timer,
        replicas: Callable[[], Awaitable[int]],
        *,
        ttl: float = 5.0,
        poll: float = 0.5,
        horizon: float = TAKEOVER_HORIZON,
    ) -> None:
        self._locks = locks
        self._timer = timer
        self._count = replicas
        self._ttl = ttl
        self._poll = poll
        self._horizon = horizon
        self._replicas = 1
        self.held: set[int] = set()
        """Shards leased by this replica."""
        self.unsure: set[int] = set()
        """Shards fired without a lease while the lock backend is unreachable."""
        self._given: dict[int, float] = {}
        """Shards handed over, with when (monotonic)."""
        self._calm_until = 0.0

    def fair_share(self) -> int:
        return math.ceil(SHARDS / max(1, self._replicas))

    async def run(self) -> None:
        """Keep shards until cancelled (the timer fires none before they are leased)."""
        self._timer.own(set())
        try:
            # Replicas started together see each other before leasing, instead of one taking
            # every shard and handing most of them over again.
            await anyio.sleep(2 * self._poll)
            await self._recount()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._count_replicas, name="shard-membership")
                for shard in range(SHARDS):
                    tg.start_soon(self._keep, shard, name=f"shard-{shard}")
        finally:
            self._timer.own(None)

    async def _count_replicas(self) -> None:
        while True:
            await anyio.sleep(self._poll * 2)
            await self._recount()

    async def _recount(self) -> None:
        try:
            self._replicas = max(1, await self._count())
        except LockError:
            pass  # keep the last count; leases tell the truth meanwhile

    async def _keep(self, shard: int) -> None:
        next_try = 0.0
        while True:
            now = time.monotonic()
            if now < next_try:
                await anyio.sleep(min(self._poll, next_try - now))
                continue
            below = len(self.held) < self.fair_share()
            next_try = now + (self._poll if below or shard in self.unsure else self._ttl)
            gave_away = False
            with anyio.move_on_after(self._poll) as attempt:
                async with self._locks.hold(f"timer-shard-{shard}", ttl=self._ttl):
                    attempt.deadline = math.inf  # leased: hold it as long as it lasts
                    self._own(shard)
                    try:
                        gave_away = await self._hold(shard)
                    finally:
                        self._timer.drop(shard)
                        self.held.discard(shard)
            if gave_away:
                self._given[shard] = time.monotonic()
                next_try = time.monotonic() + 2 * self._ttl
            elif attempt.cancelled_caught and not self._locks.reachable:
                self._fire_unleased(shard)
            elif shard in self.unsure:
                # The backend answers again and someone else holds the shard.
                self.unsure.discard(shard)
                self._timer.drop(shard)

    def _own(self, shard: int) -> None:
        given = self._given.pop(shard, None)
        if given is not None and time.monotonic() - given < 4 * self._ttl:
            self._calm_until = time.monotonic() + HANDOVER_BACKOFF  # nobody wanted it
        if shard in self.unsure:
            self.unsure.discard(shard)  # fired all along: nothing was left behind
        else:
            queued = self._timer.gain(shard, time.time() - self._horizon)
            log.info(
                f"timer shard taken; {queued} recent fires recorded again",
                extra={"status": f"shard {shard}"},
            )
        self.held.add(shard)

    def _fire_unleased(self, shard: int) -> None:
        if shard not in self.unsure:
            self.unsure.add(shard)
            self._timer.gain(shard, time.time() - self._horizon)
            log.warning(
                "lock backend unreachable: firing the timer shard without a lease",
                extra={"status": f"shard {shard}"},
            )

    async def _hold(self, shard: int) -> bool:
        """Hold until the lease is lost (the lock cancels us) or the shard is handed over
        to balance the replicas (returns True)."""
        while True:
            await anyio.sleep(self._poll)
            if (
                len(self.held) > self.fair_share()
                and shard == max(self.held)
                and time.monotonic() >= self._calm_until
            ):
                started = time.time()
                with anyio.move_on_after(HANDOVER_WAIT):
                    while self._timer.recorded_through() < started:
                        await anyio.sleep(0.05)
                log.info("timer shard handed over", extra={"status": f"shard {shard}"})
                return True
