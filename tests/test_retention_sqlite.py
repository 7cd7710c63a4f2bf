"""SQLite retention on real files: an older file is migrated to incremental auto-vacuum with
every row kept, pruning gives the space back, and under constant load the file stops growing."""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from tests.test_prune_e2e import seed
from tests.test_retention import DAY, event, remaining, settle
from wfsched.models import utcnow
from wfsched.store import Pruned, Retention
from wfsched.store.common import migrations
from wfsched.store.retention import prune_all
from wfsched.store.sqlite import SqliteStore
from wfsched.store.sqlite.retention import VACUUM_PAGES

pytestmark = pytest.mark.anyio


def pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


def old_format_file(path: Path) -> None:
    """A file as wfsched wrote it before retention: WAL, no auto-vacuum, migration 1 only."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    version, sql = migrations("sqlite")[0]
    conn.executescript(sql)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
    conn.close()


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    return store


async def test_an_old_file_is_vacuumed_once_into_incremental_mode_keeping_every_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "wfsched.db"
    old_format_file(db)
    pending = set(seed(db, 3000, 25, timedelta(days=60)))
    assert pragma(db, "auto_vacuum") == 0
    caplog.set_level(logging.WARNING, logger="wfsched.store")

    store = await opened(db)
    try:
        kept = await remaining(store)
        assert len(kept) == 3025 and pending <= kept
    finally:
        await store.close()
    assert pragma(db, "auto_vacuum") == 2  # INCREMENTAL
    assert "one-time VACUUM" in caplog.text
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    assert applied == {version for version, _ in migrations("sqlite")}
    conn.close()

    caplog.clear()
    store = await opened(db)  # once: a second open does not rebuild the file again
    try:
        assert len(await remaining(store)) == 3025
    finally:
        await store.close()
    assert "one-time VACUUM" not in caplog.text


async def test_pruning_gives_the_space_back_to_the_file_system(tmp_path: Path) -> None:
    db = tmp_path / "wfsched.db"
    store = await opened(db)
    old = utcnow() - timedelta(days=60)
    try:
        for _ in range(4):
            batch = [event(old) for _ in range(5000)]
            await store.record(batch)
            await settle(store, {e.execution_id: "dispatched" for e in batch})
    finally:
        await store.close()  # the last connection checkpoints the WAL into the file
    full = db.stat().st_size
    assert full > 5_000_000

    store = await opened(db)
    try:
        assert await prune_all(store, Retention(utcnow() - DAY, None), rest=False) == 20_000
    finally:
        await store.close()
    # Empty but for the schema: everything past a quarter of free pages went back.
    assert db.stat().st_size < full / 10
    assert pragma(db, "freelist_count") * 4 <= pragma(db, "page_count")


async def test_under_constant_load_with_retention_the_file_reaches_a_plateau(
    tmp_path: Path,
) -> None:
    """A simulated minute per round: 500 events fired and dispatched, then a prune with a
    five-minute retention. After the first turnovers the file's size stays flat."""
    db = tmp_path / "wfsched.db"
    store = await opened(db)
    clock = utcnow() - timedelta(days=1)
    retention = timedelta(minutes=5)
    sizes = []
    try:
        for _ in range(40):
            batch = [event(clock) for _ in range(500)]
            await store.record(batch)
            await settle(store, {e.execution_id: "dispatched" for e in batch})
            await prune_all(store, Retention(clock - retention, clock - retention), rest=False)
            sizes.append(pragma(db, "page_count") * pragma(db, "page_size"))
            clock += timedelta(minutes=1)
        assert len(await remaining(store)) == 6 * 500  # this minute and the five before
    finally:
        await store.close()
    plateau = sizes[9]  # after turnover 2
    assert max(sizes[10:]) <= plateau * 1.1, sizes
    # Without pruning 40 rounds would have needed about 40/6 of it.
    assert sizes[-1] < sizes[5] * 2, sizes


async def test_one_give_back_step_frees_its_whole_allowance_of_pages(tmp_path: Path) -> None:
    """Python's sqlite3 runs ``PRAGMA incremental_vacuum(N)`` for one page only; a step must
    give back VACUUM_PAGES, or emptying a large file takes thousands of steps."""
    db = tmp_path / "wfsched.db"
    store = await opened(db)
    retention = Retention(utcnow() - DAY, None)
    try:
        batch = [event(utcnow() - 60 * DAY) for _ in range(5000)]
        await store.record(batch)
        await settle(store, {e.execution_id: "dispatched" for e in batch})
        step = await store.prune(retention, limit=10_000)
        assert (step.deleted, step.more) == (5000, True)  # more: the file is mostly free
        free = pragma(db, "freelist_count")
        assert free > VACUUM_PAGES
        assert await store.prune(retention, limit=10_000) == Pruned(0, True)
        assert pragma(db, "freelist_count") == free - VACUUM_PAGES
    finally:
        await store.close()
