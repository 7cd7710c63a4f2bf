"""The one place that names concrete backends: stores, lock managers; dispatch senders come
from the registry of dispatch targets.

Everything else works against the protocols (``Store``, ``LockManager``, ``Sender``), so a
backend is chosen here, by URL or mode, and imported only when it is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from wfsched.config import Settings
from wfsched.dispatch import DispatchError, Sender
from wfsched.dispatch.router import Choice, TargetRouter
from wfsched.errors import ConfigError, NotFound, SpecError
from wfsched.locks import LocalLocks, LockManager
from wfsched.plugins import Registry
from wfsched.spec import parse_dispatch
from wfsched.store import Store, Sync
from wfsched.target import TargetContext


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


def make_sender(
    settings: Settings,
    registry: Registry,
    *,
    store: Store | None = None,
    revision: Callable[[], int] = lambda: 0,
) -> Sender:
    """The dispatcher's Sender: ``dispatch.mode``'s target, or a workflow's own ``[dispatch]``
    choice read from ``store`` (kept until ``revision``, the deployments', moves)."""
    timeout = min(settings.get("dispatch.timeout"), settings.get("dispatch.claim_ttl") * 0.8)
    ctx = TargetContext(
        settings.sections, timeout=timeout, max_connections=settings.get("scheduler.max_workers")
    )

    def open_target(mode: str, options: Mapping[str, Any]) -> Sender:
        target = registry.target(mode)
        target.check_settings(settings.sections, options)
        return target.open(ctx, options)

    async def lookup(workflow_id: str) -> Choice | None:
        if store is None:
            return None
        try:
            deployment = await store.get_deployment(workflow_id)
        except NotFound:
            return None  # undeployed since it fired: the default target
        try:
            choice = parse_dispatch(deployment.document.get("dispatch"), registry)
        except SpecError as exc:
            raise DispatchError(f"workflow {workflow_id}: {exc}", retry=True) from None
        if choice is None:
            return None
        return choice["mode"], {k: v for k, v in choice.items() if k != "mode"}

    return TargetRouter(
        (settings.get("dispatch.mode"), {}),
        open_target=open_target,
        lookup=lookup,
        revision=revision,
        timeout=timeout,
    )


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
