"""The mailbox hub: one IMAP connection per mailbox folder, shared by every trigger watching it.

Triggers *subscribe* to a :class:`Watcher` and then *participate*: one of them at a time
(the driver) runs the watch loop in its own task, for all subscribers; when the driver's
trigger stops, another participant takes over. The last one leaving ends the watcher.

The driver holds a cluster-wide lock per mailbox, so across replicas one connection watches
a folder. It connects, lets each subscriber sync, then waits with IDLE (re-issued every
``idle_refresh``, NOOP heartbeat) or polls every ``check_interval``. Any failure or silence
(the watchdog) closes the connection and reconnects with capped, jittered backoff, and every
subscriber hears how the connection is doing.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import anyio

from wfsched import Health, Lease
from wfsched.triggers.email.connection import ConfigProblem, Connection, ImapError
from wfsched.triggers.email.options import Endpoint, Tuning
from wfsched.triggers.email.session import Session

log = logging.getLogger("wfsched.email")
LOCK_TTL = 30.0
IDLE_SLICE = 15.0
MIN_CYCLE = 0.25
"""Shortest time between two syncs of a connection."""
"""Longest single wait inside IDLE, so a lost lease is noticed promptly."""
RECONNECT_EVERY = 25 * 60.0
"""A fresh session now and then: some servers silently stop notifying old ones."""
FAILING_AFTER = 3
BACKOFF_MAX = 60.0
BACKOFF_MAX_CONFIG = 300.0
"""Refused logins retry slowly: hosted servers lock accounts that keep failing."""


class Subscriber(Protocol):
    """A trigger watching a mailbox: it owns its cursor, filters and health."""

    @property
    def tuning(self) -> Tuning: ...

    def lock(self, name: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]: ...

    async def sync(self, session: Session, uidvalidity: int, fence: int) -> None:
        """Fire what is new for this subscriber; ImapError means the connection failed."""
        ...

    def sync_failed(self, exc: Exception) -> None:
        """This subscriber's sync failed for another reason (store, bug)."""
        ...

    def connection(self, health: Health, error: str | None) -> None:
        """How the shared connection is doing."""
        ...


class Watcher:
    """One mailbox folder watched over one connection on behalf of its subscribers."""

    def __init__(self, endpoint: Endpoint, password: str) -> None:
        self.endpoint = endpoint
        self._password = password
        self.subscribers: list[Subscriber] = []
        self.state = "starting"
        self.connects = 0
        self.last_ok = time.monotonic()
        self.failures = 0
        self._driver: Subscriber | None = None
        self._driver_gone = anyio.Event()
        self._wake = anyio.Event()
        self._woken = False
        self._session: Session | None = None

    # subscribers --------------------------------------------------------------------------
    def add(self, sub: Subscriber) -> None:
        self.subscribers.append(sub)
        self.wake()  # a new subscriber syncs now, not at the next IDLE refresh

    def remove(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def wake(self) -> None:
        """Interrupt the wait (IDLE or poll) so every subscriber syncs soon."""
        self._woken = True
        self._wake.set()
        if self._session is not None:
            self._session.conn.wake()

    def tuning(self) -> Tuning:
        return Tuning.merge([s.tuning for s in self.subscribers])

    def _tell(self, health: Health, error: str | None) -> None:
        for sub in list(self.subscribers):
            sub.connection(health, error)

    # the driver ---------------------------------------------------------------------------
    async def participate(self, sub: Subscriber) -> None:
        """Run the watch loop when nobody else does; otherwise stand by. Never returns."""
        while True:
            if self._driver is None:
                self._driver = sub
                try:
                    await self._drive(sub)
                finally:
                    self._driver = None
                    self._driver_gone.set()
                    self._driver_gone = anyio.Event()
            else:
                await self._driver_gone.wait()

    async def _drive(self, sub: Subscriber) -> None:
        name = f"email:{self.endpoint.label}"
        while True:
            self.state = "standby"
            try:
                async with sub.lock(name, ttl=LOCK_TTL) as lease:
                    while not lease.lost:
                        try:
                            await self._connected(lease)
                        except ImapError as exc:
                            await self._failed(exc)
            except Exception as exc:
                log.exception("email watcher failed", extra={"error": str(exc)})
                await self._failed(exc)

    async def _failed(self, exc: Exception) -> None:
        self.failures += 1
        config = isinstance(exc, ConfigProblem)
        cap = BACKOFF_MAX_CONFIG if config else BACKOFF_MAX
        delay = min(cap, 2.0 ** (self.failures - 1)) * random.uniform(0.5, 1.0)
        health: Health = "failing" if config or self.failures >= FAILING_AFTER else "degraded"
        error = f"IMAP {self.endpoint.label}: {exc}"
        self.state = "reconnecting"
        log.warning(
            f"email watcher: {error}; retrying in {delay:.1f} s",
            extra={"error": str(exc), "status": health},
        )
        self._tell(health, f"{error} (retrying in {delay:.0f} s)")
        await anyio.sleep(delay)

    async def _connected(self, lease: Lease) -> None:
        """One session: connect, then sync and wait until something fails or it is renewed."""
        tuning = self.tuning()
        session = Session(
            Connection(self.endpoint, self._password, tuning.timeout), on_ok=self._alive
        )
        self._session = session
        self.state = "connecting"
        self.last_ok = time.monotonic()
        error: Exception | None = None
        try:
            with anyio.CancelScope() as watchdog_scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watchdog, watchdog_scope)
                    try:
                        await self._serve(session, lease)
                    except Exception as exc:  # noqa: BLE001 - re-raised below, outside the group
                        error = exc
                    tg.cancel_scope.cancel()
            if watchdog_scope.cancelled_caught:
                raise ImapError(
                    f"no answer from the server for "
                    f"{time.monotonic() - self.last_ok:.0f} s (watchdog)"
                )
            if error is not None:
                raise error
        finally:
            self._session = None
            await session.close()

    def _alive(self) -> None:
        self.last_ok = time.monotonic()

    async def _watchdog(self, scope: anyio.CancelScope) -> None:
        while True:
            tuning = self.tuning() if self.subscribers else Tuning(True, 300.0, 60.0, 30.0)
            wait = tuning.idle_refresh if tuning.idle else tuning.check_interval
            # The longest legitimate silence: a full wait, then DONE and NOOP answered late.
            limit = wait + 2 * tuning.timeout + 3
            silent = time.monotonic() - self.last_ok
            if silent > limit:
                scope.cancel()
                return
            await anyio.sleep(min(limit - silent + 0.1, 5.0))

    async def _serve(self, session: Session, lease: Lease) -> None:
        uidvalidity = await session.open()
        self.connects += 1
        started = time.monotonic()
        log.info(f"email watcher connected to {self.endpoint.label}", extra={"status": "connected"})
        first = True
        cycle_start = 0.0
        while not lease.lost:
            # A server that answers every IDLE at once must not make this a busy loop.
            await anyio.sleep(max(0.0, cycle_start + MIN_CYCLE - time.monotonic()))
            cycle_start = time.monotonic()
            self._woken = False
            self._wake = anyio.Event()
            if not first:
                await session.check_uidvalidity()
            first = False
            for sub in list(self.subscribers):
                try:
                    await sub.sync(session, uidvalidity, lease.fence)
                except ImapError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one trigger's trouble stays its own
                    sub.sync_failed(exc)
            self.failures = 0
            tuning = self.tuning()
            use_idle = tuning.idle and session.conn.idle_supported
            self.state = "idle" if use_idle else "polling"
            self._tell("healthy", None)
            if time.monotonic() - started > RECONNECT_EVERY:
                return
            if self._woken:
                continue
            if use_idle:
                await self._idle(session, tuning, lease)
            else:
                with anyio.move_on_after(tuning.check_interval):
                    await self._wake.wait()
                await session.noop()

    async def _idle(self, session: Session, tuning: Tuning, lease: Lease) -> None:
        await session.idle_start()
        deadline = time.monotonic() + tuning.idle_refresh
        spoke = False
        while not (spoke or self._woken or lease.lost):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            spoke = await session.idle_wait(min(remaining, IDLE_SLICE))
        await session.idle_done()
        if not spoke:
            await session.noop()  # heartbeat: the server still answers commands


class Hub:
    """Watchers by mailbox folder and credentials; triggers subscribe here."""

    def __init__(self) -> None:
        self._watchers: dict[tuple[Endpoint, str], Watcher] = {}

    @asynccontextmanager
    async def subscribe(
        self, endpoint: Endpoint, password: str, sub: Subscriber
    ) -> AsyncIterator[Watcher]:
        """Join the watcher of ``endpoint`` (created on first use, dropped after the last)."""
        # Different credentials for the same folder never share a session.
        key = (endpoint, hashlib.sha256(password.encode()).hexdigest())
        watcher = self._watchers.get(key)
        if watcher is None:
            watcher = self._watchers[key] = Watcher(endpoint, password)
        watcher.add(sub)
        try:
            yield watcher
        finally:
            watcher.remove(sub)
            if not watcher.subscribers and self._watchers.get(key) is watcher:
                del self._watchers[key]

    def watchers(self) -> list[Watcher]:
        return list(self._watchers.values())


HUB = Hub()
