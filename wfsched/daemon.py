"""Composition root: the only module that knows concrete backends."""

from __future__ import annotations

from wfsched.errors import ConfigError
from wfsched.store import Store


def open_store(url: str) -> Store:
    """Return the store backend for ``store.url`` (not yet opened)."""
    if url.startswith("sqlite://"):
        from wfsched.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from wfsched.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ConfigError(f"store.url {url!r}: use sqlite:///PATH or postgresql://…")
