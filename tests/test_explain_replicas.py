"""A replica set (PostgreSQL + Redis) where one replica dies by SIGKILL: the instants of its
timer shards are fired by the survivor, and ``explain`` shows none of them missed."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, wait_for

pytestmark = pytest.mark.slow
WORKFLOWS = [f"r{i}" for i in range(12)]


def _fires_since(d: Daemon, t: float) -> Counter[str]:
    events = d.cli_json("history", "--limit", "1000")
    return Counter(
        e["workflow_id"]
        for e in events
        if datetime.fromisoformat(e["scheduled_at"]).timestamp() > t
    )


def test_a_killed_replicas_instants_are_fired_by_the_survivor(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    env = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "WFSCHED_LATE_AFTER": "3s"}
    a, b = Daemon(tmp_path / "a", env=env), Daemon(tmp_path / "b", env=env)
    specs = tmp_path / "specs"
    specs.mkdir()
    for w in WORKFLOWS:
        (specs / f"{w}.toml").write_text(f'id = "{w}"\n[[triggers]]\ntype = "cron"\nevery = "2s"\n')
    a.cli("deploy", str(specs))
    try:
        a.start()
        b.start()
        since = time.time()
        # Both replicas lease shards and fire; every workflow keeps firing.
        wait_for(lambda: len(_fires_since(a, since)) == len(WORKFLOWS), 30, interval=0.5,
                 message="every workflow firing")  # fmt: skip
        replicas = a.cli_json("status", WORKFLOWS[0])["daemon"]["replicas"]
        assert len(replicas) == 2
        b.kill()
        killed = time.time()
        # The survivor takes the dead replica's shards over and keeps every workflow firing.
        wait_for(
            lambda: len(_fires_since(a, killed + 10)) == len(WORKFLOWS),
            40,
            interval=0.5,
            message="the survivor firing every workflow",
        )
        end = time.time() - 4  # past late_after: nothing pending
        assert since < killed < end - 5
        until = datetime.fromtimestamp(end, UTC).isoformat()
        start = datetime.fromtimestamp(since, UTC).isoformat()
        outcomes: Counter[str] = Counter()
        for w in WORKFLOWS:
            answer = a.cli_json("explain", w, "--since", start, "--until", until)
            outcomes.update(o["outcome"] for o in answer["occurrences"])
            ats = [o["at"] for o in answer["occurrences"]]
            assert len(ats) == len(set(ats)), w
    finally:
        a.kill()
        b.kill()
    assert set(outcomes) == {"fired"}, outcomes
    # Every instant of the window, the dead replica's shards included, is there: fired.
    assert outcomes["fired"] >= len(WORKFLOWS) * (int((end - since) / 2) - 1)
