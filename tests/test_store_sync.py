"""Durable means on disk: ``store.sync = "full"`` (default) flushes every commit.

SQLite: the PRAGMA read back, and the fsync calls of a real ``wfsched serve`` counted with
strace while it acknowledges webhooks. PostgreSQL: a session started with
``synchronous_commit=off`` is raised to ``on``, and left alone under ``normal``.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import backend_missing
from tests.daemon_proc import Daemon, wait_for
from wfsched.backends import open_store
from wfsched.store.postgres import PostgresStore
from wfsched.store.sqlite import SqliteStore

HOOK = "/api/v1/public/webhook/workflow/"
ACKED = 20


@pytest.mark.anyio
@pytest.mark.parametrize(("sync", "pragma"), [("full", 2), ("normal", 1)])
async def test_sqlite_runs_the_configured_synchronous_mode(
    sqlite_url: str, sync: Any, pragma: int
) -> None:
    store = open_store(sqlite_url, sync=sync)
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        row = await store._run(lambda c: c.execute("PRAGMA synchronous").fetchone())
    finally:
        await store.close()
    assert row[0] == pragma


@pytest.mark.anyio
@pytest.mark.parametrize(("sync", "expected"), [("full", "on"), ("normal", "off")])
async def test_postgres_sessions_commit_durably_whatever_the_server_default(
    pg_url: str, sync: Any, expected: str
) -> None:
    # The URL stands in for a server, database or role configured with synchronous_commit=off.
    store = open_store(
        pg_url.replace("options=", "options=-csynchronous_commit%3Doff%20"), sync=sync
    )
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        for _ in range(2):  # the pool's connection, then one it opens on demand
            async with store._conn() as conn:
                cur = await conn.execute("SHOW synchronous_commit")
                row = await cur.fetchone()
                assert row is not None and row[0] == expected
    finally:
        await store.close()


@pytest.mark.anyio
async def test_postgres_keeps_a_stronger_synchronous_commit(pg_url: str) -> None:
    store = open_store(pg_url.replace("options=", "options=-csynchronous_commit%3Dremote_apply%20"))
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        async with store._conn() as conn:
            cur = await conn.execute("SHOW synchronous_commit")
            assert await cur.fetchone() == ("remote_apply",)
    finally:
        await store.close()


def _fsyncs_while_acknowledging(tmp_path: Path, sync: str) -> int:
    """fsync/fdatasync calls of a daemon (all threads) while it answers ACKED webhooks."""
    strace = shutil.which("strace")
    if strace is None:
        backend_missing("strace (apt-get install strace)")
        raise AssertionError("unreachable")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "hook.json").write_text(json.dumps({"id": "hook", "triggers": [{"type": "webhook"}]}))
    d = Daemon(tmp_path / sync, env={"WFSCHED_STORE_SYNC": sync})
    d.cli("deploy", str(specs))
    with d:
        assert d.proc is not None
        wait_for(lambda: d.request("POST", HOOK + "hook").status_code == 202, message="webhook up")
        out, err = tmp_path / f"strace-{sync}.txt", tmp_path / f"strace-{sync}.err"
        with err.open("w") as errors:
            tracer = subprocess.Popen(
                [strace, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(out)]
                + ["-p", str(d.proc.pid)],
                stderr=errors,
            )
        try:
            # strace writes nothing until a traced call; it is attached once the daemon's
            # threads show it as their tracer.
            wait_for(lambda: _traced(d.proc.pid if d.proc else 0), message="strace attached")
            with httpx.Client(base_url=d.url, timeout=10) as http:
                for i in range(ACKED):  # one after the other: one group commit each
                    r = http.post(HOOK + "hook", json={"n": i})
                    assert r.status_code == 202, r.text
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        # strace detaches on SIGINT and then dies of it, as it says it will.
        assert tracer.returncode in (0, -signal.SIGINT), (tracer.returncode, err.read_text())
    text = out.read_text() if out.exists() else ""
    return len(re.findall(r"\b(?:fsync|fdatasync)\(", text))


def _traced(pid: int) -> bool:
    """True once every thread of ``pid`` has a tracer."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        if re.search(r"^TracerPid:\s+0$", status, re.MULTILINE):
            return False
    return True


@pytest.mark.slow
def test_every_acknowledged_webhook_was_fsynced_under_full(tmp_path: Path) -> None:
    assert _fsyncs_while_acknowledging(tmp_path, "full") >= ACKED


@pytest.mark.slow
def test_normal_sync_does_not_fsync_per_commit(tmp_path: Path) -> None:
    assert _fsyncs_while_acknowledging(tmp_path, "normal") == 0
