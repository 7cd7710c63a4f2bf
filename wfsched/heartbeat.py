"""Daemon heartbeats in the store: who runs now, and when no daemon ran.

Every daemon (replica) writes a heartbeat every ``BEAT_EVERY`` seconds once its triggers are
armed, and removes it when it stops cleanly. Each write also moves the ``last_seen`` of the
daemon's *run* row (one per start), so the store keeps a compact history of when daemons ran:
the gaps between runs are the downtime ``explain`` names ("no daemon ran from 10:02:07 to
10:09:41"). A daemon killed with SIGKILL leaves its last heartbeat behind; it stops counting
as running ``LIVE_WITHIN`` seconds later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio

from wfsched.errors import StoreError
from wfsched.models import DaemonRun, iso, utcnow

log = logging.getLogger("wfsched.daemon")
BEAT_EVERY = 5.0
"""Seconds between two heartbeats of a daemon."""
LIVE_WITHIN = 15.0
"""A daemon whose last heartbeat is younger than this counts as running."""
LOOK_BACK = timedelta(days=7)
"""How far back ``daemon_status`` looks for the last daemon seen."""


class HeartbeatStore(Protocol):
    async def beat(self, run: DaemonRun) -> None: ...

    async def end_beat(self, run: DaemonRun) -> None: ...

    async def daemon_runs(self, since: datetime) -> list[DaemonRun]: ...


def is_running(run: DaemonRun, now: datetime) -> bool:
    """True when ``run`` still has a heartbeat row younger than ``LIVE_WITHIN``."""
    return run.live and (now - run.last_seen).total_seconds() <= LIVE_WITHIN


def summarize(runs: Sequence[DaemonRun], now: datetime) -> dict[str, Any]:
    """``{"running", "last_seen", "replicas"}`` from the daemon runs of the store."""
    running = [r for r in runs if is_running(r, now)]
    last = max((r.last_seen for r in runs), default=None)
    return {
        "running": bool(running),
        "last_seen": iso(last),
        "replicas": [
            {
                "id": r.replica_id,
                "listen": r.listen,
                "started_at": iso(r.started_at),
                "last_seen": iso(r.last_seen),
            }
            for r in running
        ],
    }


async def daemon_status(store: HeartbeatStore, now: datetime | None = None) -> dict[str, Any]:
    """What the store's heartbeats say about the daemons (see ``summarize``)."""
    now = now or utcnow()
    return summarize(await store.daemon_runs(now - LOOK_BACK), now)


class Heartbeat:
    """One daemon's heartbeat: ``start`` once its triggers are armed, ``run`` in its task
    group, ``end`` when it stops cleanly."""

    def __init__(
        self,
        store: HeartbeatStore,
        replica_id: str,
        listen: str,
        *,
        every: float = BEAT_EVERY,
        before_beat: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._every = every
        self._before = before_beat
        # ``end`` and a beat under way exclude each other, and no beat follows ``end``: a
        # beat landing after the clean stop would bring the live row back for LIVE_WITHIN.
        self._writing = anyio.Lock()
        self._ended = False
        self.run_row = DaemonRun(
            replica_id=replica_id, started_at=utcnow(), last_seen=utcnow(), listen=listen
        )

    async def start(self) -> None:
        """The first heartbeat: this run starts now (instants due before it were not the
        business of this daemon's timer but of its catch-up policy)."""
        now = utcnow()
        self.run_row = DaemonRun(
            replica_id=self.run_row.replica_id,
            started_at=now,
            last_seen=now,
            listen=self.run_row.listen,
        )
        await self._beat()

    async def run(self) -> None:
        """Beat every ``every`` seconds until cancelled or ended."""
        while not self._ended:
            await anyio.sleep(self._every)
            if self._before is not None:
                try:
                    await self._before()
                except StoreError as exc:
                    log.warning("persisting trigger health failed", extra={"error": str(exc)})
            await self._beat()

    async def _beat(self) -> None:
        async with self._writing:
            if self._ended:
                return
            self.run_row = replace(self.run_row, last_seen=utcnow())
            try:
                await self._store.beat(self.run_row)
            except StoreError as exc:
                log.warning("writing the heartbeat failed", extra={"error": str(exc)})

    async def end(self) -> None:
        """A clean stop: the heartbeat goes, the run ends now (after a beat under way)."""
        self._ended = True
        async with self._writing:
            self.run_row = replace(self.run_row, last_seen=utcnow())
            try:
                await self._store.end_beat(self.run_row)
            except StoreError as exc:
                log.warning("removing the heartbeat failed", extra={"error": str(exc)})
