"""The one place that names concrete backends: stores, lock managers and dispatch senders.

Everything else works against the protocols (``Store``, ``LockManager``, ``Sender``), so a
backend is chosen here, by URL or mode, and imported only when it is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from wfsched.config import Settings
from wfsched.dispatch import LogSender, Sender
from wfsched.errors import ConfigError
from wfsched.locks import LocalLocks, LockManager
from wfsched.store import Store, Sync


def open_store(url: str, *, sync: Sync = "full", partition_seconds: float = 86400.0) -> Store:
    """Return the store backend for ``store.url`` (not yet opened) with ``store.sync``;
    ``partition_seconds`` (``history.partition_interval``) sizes PostgreSQL's time partitions."""
    if url.startswith("sqlite://"):
        from wfsched.store.sqlite import SqliteStore

        return SqliteStore(url, sync=sync)
    if url.startswith(("postgresql://", "postgres://")):
        from wfsched.store.postgres import PostgresStore

        return PostgresStore(url, sync=sync, partition_seconds=partition_seconds)
    raise ConfigError(f"store.url {url!r}: use sqlite:///PATH or postgresql://…")


def open_locks(url: str) -> LockManager:
    """Return the lock backend for ``locks.url`` (empty: in-process)."""
    if not url:
        return LocalLocks()
    from wfsched.locks.redis import RedisLocks

    return RedisLocks(url)


def make_sender(settings: Settings) -> Sender:
    """Return the Sender for ``dispatch.mode``."""
    mode = settings.get("dispatch.mode")
    timeout = min(settings.get("dispatch.timeout"), settings.get("dispatch.claim_ttl") * 0.8)
    if mode == "engine":
        from wfsched.dispatch.engine import EngineSender

        return EngineSender(
            settings.get("dispatch.engine_url"),
            timeout=timeout,
            max_connections=settings.get("scheduler.max_workers"),
        )
    if mode == "notify":
        from wfsched.dispatch.notify import NotifySender

        return NotifySender(
            settings.secret("notify.smtp_url"),
            sender=settings.get("notify.from"),
            recipients=settings.get("notify.to"),
            timeout=timeout,
        )
    return LogSender()


@contextlib.asynccontextmanager
async def connected(settings: Settings, *, exclusive: bool = False) -> AsyncIterator[Store]:
    """Open the configured store (for the CLI and the daemon); ``exclusive`` (the daemon)
    claims it first, which fails while another daemon serves a SQLite file."""
    store = open_store(
        settings.store_url,
        sync=settings.get("store.sync"),
        partition_seconds=settings.get("history.partition_interval"),
    )
    if exclusive:
        store.lock_exclusive()
    try:
        await store.open()
        yield store
    finally:
        await store.close()
