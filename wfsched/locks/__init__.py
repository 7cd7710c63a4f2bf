"""LockManager: named leases with a TTL, renewal while held and fencing tokens.

Two backends: ``LocalLocks`` (embedded mode, one daemon per store) and
``wfsched.locks.redis.RedisLocks`` (replicas). Locks save work and elect single holders
(one watcher per mailbox); they are never the only guard. The store's unique dedupe key
stops duplicate events, and a write that a lease guards (a trigger cursor) carries the
lease's ``fence``, which the store refuses when a newer fence has already written.

Contract of ``hold(name, ttl=…)``, shared by every backend:

- it waits until the lock is free (cancellable), then yields a :class:`Lease`;
- the lease is renewed in the background while the body runs;
- when the lease is lost (renewal refused because the key expired or was taken, or no
  renewal succeeded within the TTL), ``lease.lost`` turns true and the body is cancelled
  like ``anyio.move_on_after``: the ``async with`` block ends early *without* an exception,
  and the code after it should check ``lease.lost`` (typically: loop and acquire again);
- an exception raised by the body propagates unchanged; on every exit the lock is released,
  and only by its owner (compare-and-delete).

``lease.lost`` also turns true by itself once the lease's local validity has passed, so a
holder that was paused (GC, SIGSTOP, swap) sees it before its renewer has even run again.
Checking it narrows the window but cannot close it (the pause may fall between the check
and the write): that is what the fence is for.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio

from wfsched.errors import WfschedError
from wfsched.metrics import LOCK_ACQUIRE


class LockError(WfschedError):
    """The lock backend is unreachable or misconfigured (the message names it)."""


class Lease:
    """A held lock. ``fence`` is larger than the fence of every earlier grant of the lock.

    ``lost`` is true once the holder must stop: marked by the renewer, or implied by
    ``valid_until`` (a ``time.monotonic()`` instant) having passed.
    """

    def __init__(self, name: str, fence: int, *, valid_until: float = float("inf")) -> None:
        self.name = name
        self.fence = fence
        self.valid_until = valid_until
        self._lost = False

    @property
    def lost(self) -> bool:
        return self._lost or time.monotonic() >= self.valid_until

    @lost.setter
    def lost(self, value: bool) -> None:
        self._lost = value

    def __repr__(self) -> str:
        return f"Lease({self.name!r}, fence={self.fence}, lost={self.lost})"


class LockManager(Protocol):
    """Hands out named leases; see the module docstring for the contract of ``hold``."""

    backend: str

    @property
    def reachable(self) -> bool:
        """False while the backend is known to be unreachable."""
        ...

    def hold(self, name: str, *, ttl: float = 15.0) -> AbstractAsyncContextManager[Lease]: ...

    async def replicas(self) -> list[dict[str, Any]]:
        """The live replicas' heartbeats (``heartbeat``), sorted by id."""
        ...

    async def heartbeat(self, replica: Mapping[str, Any], *, ttl: float = 15.0) -> None:
        """Announce this replica to the others until cancelled."""
        ...

    async def describe(self) -> str:
        """One line for ``wfsched check``: backend, server and live replicas."""
        ...

    async def close(self) -> None: ...


class FenceClock:
    """Fencing tokens that keep growing across restarts: ``max(last + 1, now in µs)``.

    A plain counter would restart at 1 with the process while the store still holds the
    fences of the previous run, so every write of the new run would be refused.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last


class LocalLocks:
    """In-process locks for the embedded mode (one daemon per store): never lost."""

    backend = "in-process"
    reachable = True

    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}
        self._fences = FenceClock()

    async def replicas(self) -> list[dict[str, Any]]:
        return []

    @asynccontextmanager
    async def hold(self, name: str, *, ttl: float = 15.0) -> AsyncIterator[Lease]:
        if ttl <= 0:
            raise ValueError(f"lock {name!r}: ttl must be positive, got {ttl}")
        lock = self._locks.setdefault(name, anyio.Lock())
        if lock.locked():
            LOCK_ACQUIRE.labels("contended").inc()
        try:
            async with lock:
                LOCK_ACQUIRE.labels("acquired").inc()
                yield Lease(name, self._fences.next())
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(name, None)

    async def heartbeat(self, replica: Mapping[str, Any], *, ttl: float = 15.0) -> None:
        await anyio.sleep_forever()

    async def describe(self) -> str:
        return "in-process locks (embedded mode: one daemon per store, no replicas)"

    async def close(self) -> None:
        self._locks.clear()


def replica_info(host: str, port: int) -> dict[str, Any]:
    """What a daemon announces about itself to the other replicas (``wfsched check``)."""
    from wfsched import __version__

    hostname = socket.gethostname()
    return {
        "id": f"{hostname}:{port}",
        "hostname": hostname,
        "listen": f"{host}:{port}",
        "pid": os.getpid(),
        "version": __version__,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
