"""Shared fixtures: real backends (SQLite in a temp dir, PostgreSQL, Redis).

A missing backend skips locally and fails under CI=true, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_DSN = os.environ.get("WFSCHED_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("WFSCHED_TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def backend_missing(what: str) -> None:
    """Skip on a laptop, fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    try:
        import psycopg

        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:
        backend_missing(f"PostgreSQL at {PG_DSN} ({exc})")
        raise
    schema = f"t_{secrets.token_hex(6)}"
    conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL on a dedicated database, flushed before and after."""
    try:
        import redis

        client = redis.Redis.from_url(f"{REDIS_URL}/9", socket_connect_timeout=3)
        client.ping()
    except Exception as exc:
        backend_missing(f"Redis at {REDIS_URL} ({exc})")
        raise
    client.flushdb()
    try:
        yield f"{REDIS_URL}/9"
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/wfsched.db"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/wfsched.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Any]:
    from wfsched.backends import open_store

    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
