"""``wfsched prune`` and the daemon's pruning, end to end as subprocesses."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, wait_for
from wfsched.models import new_execution_id, utcnow
from wfsched.store.common import fmt_ts


def seed(path: Path, dispatched: int, pending: int, age: timedelta) -> list[str]:
    """Write old events straight into a migrated SQLite file; return the pending ids."""
    fired = fmt_ts(utcnow() - age)
    retry_later = fmt_ts(utcnow() + timedelta(days=1))  # pending, and not due while we look
    rows, keep = [], []
    for i in range(dispatched + pending):
        status = "dispatched" if i < dispatched else "pending"
        eid = new_execution_id()
        if status == "pending":
            keep.append(eid)
        rows.append(
            (
                eid,
                "wf",
                "t",
                "manual",
                eid,
                fired,
                '{"pad": "' + "x" * 200 + '"}',
                status,
                retry_later if status == "pending" else fired,
            )
        )
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO events (execution_id, workflow_id, trigger_id, trigger_type, dedupe_key,"
        " fired_at, payload, status, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.commit()
    conn.close()
    return keep


def count(path: Path, status: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(
            conn.execute("SELECT count(*) FROM events WHERE status=?", (status,)).fetchone()[0]
        )
    finally:
        conn.close()


def test_prune_cli_dry_run_json_and_bad_duration(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "w")
    d.cli("history")  # creates and migrates the store
    db = d.workdir / "wfsched.db"
    seed(db, 50, 5, timedelta(days=2))
    assert d.cli_json("prune", "--dry-run") == {"deleted": 0, "dry_run": True}  # 30d default
    assert d.cli_json("prune", "--older-than", "1d", "--dry-run") == {
        "deleted": 50,
        "dry_run": True,
    }
    assert count(db, "dispatched") == 50
    bad = d.cli("prune", "--older-than", "soon", check=False)
    assert bad.returncode == 2 and "--older-than" in bad.stderr
    assert d.cli_json("prune", "--older-than", "1d") == {"deleted": 50}
    assert (count(db, "dispatched"), count(db, "pending")) == (0, 5)
    assert "deleted 0 events" in d.cli("prune", "--older-than", "1d").stdout


@pytest.mark.slow
def test_a_daemon_killed_mid_prune_leaves_a_consistent_store(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "w", env={"WFSCHED_HISTORY_PRUNE_INTERVAL": "0.2s"})
    d.cli("history")
    db = d.workdir / "wfsched.db"
    total = 150_000
    pending = seed(db, total, 20, timedelta(days=60))
    d.start()
    wait_for(lambda: 0 < count(db, "dispatched") < total * 0.8, 60, message="pruning under way")
    d.kill()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    conn.close()
    assert count(db, "pending") == 20
    d.start()
    wait_for(lambda: count(db, "dispatched") == 0, 120, message="pruning finished after restart")
    history = d.cli_json("history", "--status", "pending", "--limit", "100")
    assert sorted(e["execution_id"] for e in history) == sorted(pending)
    assert d.stop() == 0
    assert any(line.get("status") == "pruned" for line in d.log_lines())
    json.dumps(history)
