"""LockManager: named leases with TTL, renewal and fencing tokens.

In-process locks serve the embedded mode; Redis locks (``SET NX PX`` + token, renewed while
held, compare-and-delete release, fencing token from ``INCR``) serve replicas. Locks save
work and elect single holders; the store's unique dedupe key stays the guard.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import anyio

from wfsched.metrics import LOCK_ACQUIRE


class Lease:
    """A held lock; ``lost`` turns true when renewal failed and the holder must stop."""

    def __init__(self, name: str, fence: int) -> None:
        self.name = name
        self.fence = fence
        self.lost = False


class LockManager(Protocol):
    """Hands out named leases; ``hold`` waits until the lock is free."""

    backend: str

    def hold(self, name: str, *, ttl: float = 15.0) -> AbstractAsyncContextManager[Lease]: ...

    async def close(self) -> None: ...


class LocalLocks:
    """In-process locks for the embedded mode (one daemon per store)."""

    backend = "in-process"

    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}
        self._fences = itertools.count(1)

    @asynccontextmanager
    async def hold(self, name: str, *, ttl: float = 15.0) -> AsyncIterator[Lease]:
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            LOCK_ACQUIRE.labels("acquired").inc()
            yield Lease(name, next(self._fences))

    async def close(self) -> None:
        self._locks.clear()
