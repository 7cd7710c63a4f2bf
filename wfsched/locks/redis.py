"""Redis locks for replicas: ``SET NX PX`` with a random token, renewed while held,
released by compare-and-delete, each grant carrying a fencing token.

Keys (the ``{name}`` hash tag keeps a lock's two keys in one Redis Cluster slot):

- ``wfsched:lock:{NAME}`` holds the holder's random token, with the TTL in ms;
- ``wfsched:fence:{NAME}`` holds the last fence granted for NAME (no TTL);
- ``wfsched:replica:ID`` is a replica's heartbeat (JSON, with a TTL).

**Fences survive a Redis restart.** A fence must exceed every fence granted before it, or
the store refuses the new holder's writes (``set_cursor(fence=…)`` keeps the highest fence
that wrote). A plain ``INCR`` breaks that: Redis run without persistence (the usual setup
for a lock server, and what ``SHUTDOWN NOSAVE`` does) restarts the counter at 1 while the
store still holds fences from before, so every later holder would be refused for good.
Here the grant script takes ``max(last + 1, Redis TIME in µs)``, atomically with the
``SET NX``. While the fence key exists that is a counter (strictly increasing: Redis runs
scripts one at a time); once it is gone (restart, FLUSHALL, another Redis) the server
clock restarts the series above every fence issued before, since a grant costs far more
than a microsecond so fences never run ahead of the clock. The residual assumption is
Redis's own: its clock must not step back (Redis already uses wall-clock time for key
expiry). If it did step back by D and Redis lost the key within D, new fences would be
*lower* and their writes refused (safe, not unsafe) until the clock caught up. We chose this
over a PostgreSQL sequence so that the lock manager needs no store and a grant stays one
round trip.

**A double grant is possible** (Redis restarted without persistence forgets a held lock;
its clock may jump), which is why locks only save work: the store's dedupe key and fence
checks stay the guards. The holder of the older grant learns at its next renewal (at most
TTL/3 later) that the key is gone or someone else's, and its body is cancelled.

Redis being unreachable is not fatal: waiting to acquire retries with backoff (and logs
once per outage); a holder that cannot renew keeps trying until its lease's local validity
(TTL from the last successful grant or renewal) runs out, then loses it.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from wfsched.locks import Lease, LockError
from wfsched.logs import register_secret
from wfsched.metrics import LOCK_ACQUIRE

log = logging.getLogger("wfsched.locks")
T = TypeVar("T")

PREFIX = "wfsched:"
DRIFT = 0.01
"""Fraction of the TTL a lease gives up locally for clock drift between us and Redis."""

# Returns {1, fence} when granted (or already ours: a retried call after a lost reply),
# {0, pttl_ms} when someone else holds it.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if cur then return {0, redis.call('PTTL', KEYS[1])} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
if now > fence then fence = now end
redis.call('SET', KEYS[2], string.format('%d', fence))
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, fence}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease(Lease):
    """A lease granted by Redis; ``token`` identifies this grant in the lock key."""

    def __init__(self, name: str, fence: int, *, token: str, valid_until: float) -> None:
        super().__init__(name, fence, valid_until=valid_until)
        self.token = token


def safe_url(url: str) -> str:
    """``redis://host:port/db`` of a URL, without credentials (for messages)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or '/0'}"


class RedisLocks:
    """LockManager on one Redis server (see the module docstring for the design)."""

    backend = "redis"

    def __init__(self, url: str, *, poll_max: float = 1.0, op_timeout: float = 5.0) -> None:
        """:param poll_max: longest wait between two attempts to take a held lock.
        :param op_timeout: deadline of one Redis call (renewals use at most TTL/3)."""
        self.where = safe_url(url)
        password = urlsplit(url).password
        if password:
            register_secret(password)
        self.poll_max = poll_max
        self.op_timeout = op_timeout
        try:
            self._client: aioredis.Redis = aioredis.Redis.from_url(
                url,
                socket_connect_timeout=op_timeout,
                socket_timeout=op_timeout,
                # One immediate retry replaces a pooled connection that Redis closed; the
                # scripts are idempotent, so a retried call never grants twice.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise LockError(f"locks.url {self.where}: {exc}") from None
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._released: dict[str, anyio.Event] = {}
        self._down_since: float | None = None

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    # plumbing ----------------------------------------------------------------------------
    async def _call(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run one Redis call under a deadline; failures become LockError naming the server."""
        try:
            with anyio.fail_after(timeout or self.op_timeout):
                result = await fn()
        except TimeoutError:
            raise LockError(
                f"Redis {self.where} did not answer within {timeout or self.op_timeout:g} s"
            ) from None
        except (RedisError, OSError) as exc:
            raise LockError(f"Redis {self.where}: {exc}") from None
        if self._down_since is not None:
            log.info(
                "Redis reachable again",
                extra={"duration_ms": round((time.monotonic() - self._down_since) * 1000)},
            )
            self._down_since = None
        return result

    def _unreachable(self, exc: LockError) -> None:
        """Log the first failure of an outage, not one line per retry."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("Redis unreachable; retrying", extra={"error": str(exc)})

    @staticmethod
    def _keys(name: str) -> list[str]:
        return [f"{PREFIX}lock:{{{name}}}", f"{PREFIX}fence:{{{name}}}"]

    # the lock ----------------------------------------------------------------------------
    @asynccontextmanager
    async def hold(self, name: str, *, ttl: float = 15.0) -> AsyncIterator[RedisLease]:
        if ttl <= 0:
            raise ValueError(f"lock {name!r}: ttl must be positive, got {ttl}")
        lease = await self._take(name, ttl)
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                body = anyio.CancelScope()
                tg.start_soon(self._keep, lease, ttl, body, name=f"lock-renew:{name}")
                try:
                    with body:
                        yield lease
                except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped
                    # Raised inside the task group it would come out as an ExceptionGroup.
                    error = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._give_back(lease)
        if error is not None:
            raise error

    async def _take(self, name: str, ttl: float) -> RedisLease:
        keys, ttl_ms = self._keys(name), max(1, round(ttl * 1000))
        token = secrets.token_hex(16)
        contended = False
        backoff = 0.1
        while True:
            sent = time.monotonic()
            try:
                granted, value = await self._call(
                    lambda: self._acquire(keys=keys, args=[token, ttl_ms])
                )
            except LockError as exc:
                self._unreachable(exc)
                await anyio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if granted:
                LOCK_ACQUIRE.labels("acquired").inc()
                return RedisLease(
                    name, int(value), token=token, valid_until=sent + ttl * (1 - DRIFT)
                )
            if not contended:
                contended = True
                LOCK_ACQUIRE.labels("contended").inc()
            # Sleep about until the holder's key would expire, bounded by poll_max so a
            # released lock is noticed soon; a release in this process wakes us at once.
            # PTTL -1 (a key without expiry, set by hand) must not turn into a busy loop.
            remaining = int(value) / 1000 if int(value) >= 0 else self.poll_max
            delay = min(max(remaining, 0.005), self.poll_max) * random.uniform(0.8, 1.0)
            released = self._released.setdefault(name, anyio.Event())
            with anyio.move_on_after(delay):
                await released.wait()

    async def _keep(self, lease: RedisLease, ttl: float, body: anyio.CancelScope) -> None:
        """Renew every TTL/3 until cancelled; on loss, mark the lease and cancel the body."""
        keys, ttl_ms = self._keys(lease.name), max(1, round(ttl * 1000))
        interval = ttl / 3
        while True:
            await anyio.sleep(max(0.0, min(interval, lease.valid_until - time.monotonic())))
            if time.monotonic() >= lease.valid_until:
                # Paused (or unable to renew) past the lease: someone may hold it now.
                return self._lose(lease, body, "renew_failed", "lease expired before renewal")
            sent = time.monotonic()
            try:
                renewed = await self._call(
                    lambda: self._renew(keys=keys, args=[lease.token, ttl_ms]),
                    timeout=min(self.op_timeout, max(interval, 0.05)),
                )
            except LockError as exc:
                LOCK_ACQUIRE.labels("renew_failed").inc()
                self._unreachable(exc)
                interval = max(ttl / 10, 0.02)  # retry sooner while the lease lasts
                continue
            if not renewed:
                return self._lose(lease, body, "lost", "lock key expired or taken over")
            lease.valid_until = sent + ttl * (1 - DRIFT)
            interval = ttl / 3

    def _lose(self, lease: RedisLease, body: anyio.CancelScope, result: str, why: str) -> None:
        lease.lost = True
        LOCK_ACQUIRE.labels(result).inc()
        log.warning(
            f"lost lock {lease.name}; stopping its holder", extra={"status": "lost", "error": why}
        )
        body.cancel()

    async def _give_back(self, lease: RedisLease) -> None:
        keys = self._keys(lease.name)
        try:
            await self._call(
                lambda: self._release(keys=keys[:1], args=[lease.token]),
                timeout=min(self.op_timeout, 2.0),
            )
        except LockError as exc:
            log.warning(
                f"releasing lock {lease.name} failed; it expires after its TTL",
                extra={"error": str(exc)},
            )
        event = self._released.pop(lease.name, None)
        if event is not None:
            event.set()

    # replicas and check ------------------------------------------------------------------
    async def heartbeat(self, replica: Mapping[str, Any], *, ttl: float = 15.0) -> None:
        """Keep ``wfsched:replica:<id>`` alive (TTL ``ttl``) until cancelled, then delete it."""
        key = f"{PREFIX}replica:{replica['id']}"
        value = json.dumps(dict(replica), default=str)
        ttl_ms = max(1, round(ttl * 1000))
        try:
            while True:
                try:
                    await self._call(lambda: self._client.set(key, value, px=ttl_ms))
                except LockError as exc:
                    self._unreachable(exc)
                await anyio.sleep(ttl / 3)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await self._call(lambda: self._client.delete(key), timeout=2.0)
                except LockError:
                    pass  # the key expires by itself

    async def replicas(self) -> list[dict[str, Any]]:
        """Return the live replicas' heartbeats, sorted by id."""

        async def scan() -> list[Any]:
            keys = [k async for k in self._client.scan_iter(match=f"{PREFIX}replica:*", count=500)]
            return list(await self._client.mget(keys)) if keys else []

        found = []
        for raw in await self._call(scan):
            if raw is None:
                continue  # expired between SCAN and MGET
            try:
                found.append(dict(json.loads(raw)))
            except (ValueError, TypeError):
                continue
        return sorted(found, key=lambda r: str(r.get("id", "")))

    async def describe(self) -> str:
        info = await self._call(lambda: self._client.info("server"))
        replicas = await self.replicas()
        members = (
            ", ".join(
                f"{r.get('id')} (pid {r.get('pid', '?')}, since {r.get('started_at', '?')})"
                for r in replicas
            )
            or "none running"
        )
        return (
            f"redis {info.get('redis_version', '?')} at {self.where};"
            f" {len(replicas)} live replica(s): {members}"
        )

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass
