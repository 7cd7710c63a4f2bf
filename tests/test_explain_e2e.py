"""``wfsched explain`` against real daemons: stop/start windows with each catch-up policy,
refused and deduplicated webhook deliveries, status with and without a daemon, on SQLite and
PostgreSQL, from the CLI and the HTTP route."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_proc import Daemon, wait_for

EVERY = 2.0

CATCHUP_SPEC = """
id = "ticks"
[[triggers]]
type = "cron"
id = "skip"
every = "2s"
[[triggers]]
type = "cron"
id = "latest"
every = "2s"
catchup = "latest"
[[triggers]]
type = "cron"
id = "all"
every = "2s"
catchup = "all"
"""


def _deploy(d: Daemon, text: str, name: str = "spec.toml") -> None:
    path = d.workdir / name
    path.write_text(text)
    d.cli("deploy", str(path))


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _fired(d: Daemon, workflow_id: str) -> Counter[str]:
    return Counter(e["trigger_id"] for e in d.cli_json("history", workflow_id, "--limit", "1000"))


def _wait_clock(until: float) -> None:
    """Let the wall clock pass ``until`` (instants must fall due while no daemon runs)."""
    wait_for(lambda: time.time() >= until, timeout=until - time.time() + 5, interval=0.1)


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"DATABASE_URL": str(request.getfixturevalue("pg_url"))}


@pytest.mark.slow
def test_a_stop_start_window_is_explained_exactly_for_each_catchup_policy(
    tmp_path: Path, env: dict[str, str]
) -> None:
    d = Daemon(tmp_path, env={**env, "WFSCHED_LATE_AFTER": "3s"})
    _deploy(d, CATCHUP_SPEC)
    with d:
        # From the first start on (an instant due between the deploy and the daemon's
        # start is rightly "skipped: no daemon ran before …").
        since = datetime.fromtimestamp(time.time(), UTC).isoformat()
        wait_for(lambda: min(_fired(d, "ticks").values(), default=0) >= 2 and len(
            _fired(d, "ticks")) == 3, timeout=20, message="two fires each")  # fmt: skip
        assert d.cli_json("status", "ticks")["daemon"]["running"] is True
        sigterm = time.time()
        assert d.stop() == 0
        stopped = time.time()
        # No daemon: health is unknown and status says what waits.
        status = d.cli_json("status", "ticks")
        assert status["daemon"]["running"] is False, (status["daemon"], d.logs())
        assert {t["health"] for t in status["triggers"]} == {"unknown"}
        assert "pending" in status
        _wait_clock(stopped + 3 * EVERY + 0.5)  # at least three instants fall due meanwhile
        restarting = time.time()
        d.start()
        started = time.time()
        wait_for(
            lambda: any(
                _instant(e["scheduled_at"]).timestamp() > started + 5
                for e in d.cli_json("history", "ticks", "--limit", "5")
            ),
            timeout=20,
            message="a fire after the restart",
        )
        until = datetime.fromtimestamp(time.time() - 4, UTC)  # past late_after: nothing pending
        answer = d.cli_json("explain", "ticks", "--since", since, "--until", until.isoformat())
        route = d.get(
            "/api/v1/deployment/workflows/ticks/explain",
            params={"since": since, "until": until.isoformat()},
        ).json()
        text = d.cli("explain", "ticks", "--since", since, "--until", until.isoformat()).stdout
    assert route["occurrences"] == answer["occurrences"]
    assert answer["daemon"]["running"] is True
    occ = answer["occurrences"]
    assert [o["at"] for o in occ] == sorted(o["at"] for o in occ)
    by_trigger: dict[str, list[dict[str, Any]]] = {}
    for o in occ:
        by_trigger.setdefault(o["trigger_id"], []).append(o)
    for trigger_id, items in by_trigger.items():
        ats = [_instant(o["at"]).timestamp() for o in items]
        # Every due instant exactly once, 2 s apart, from the first fire to the window's end.
        assert len(ats) == len(set(ats)), trigger_id
        assert all(abs(b - a - EVERY) < 1e-6 for a, b in itertools.pairwise(ats)), ats
        # The daemons' own gap lies within [sigterm, started] and holds [stopped, restarting].
        zone = [o for o in items if sigterm <= _instant(o["at"]).timestamp() <= started]
        down = [o for o in zone if stopped < _instant(o["at"]).timestamp() < restarting]
        outside = [o for o in items if o not in zone]
        assert len(down) >= 3, (trigger_id, items)
        assert {o["outcome"] for o in outside} == {"fired"}, (trigger_id, outside)
        pattern = "".join(o["outcome"][0] for o in zone)  # f(ired) / s(kipped)
        if trigger_id == "skip":
            assert {o["outcome"] for o in down} == {"skipped"}, down
            assert re.fullmatch(r"f*s+f*", pattern), zone
            assert "catch-up = skip" in down[0]["reason"]
            assert down[0]["reason"].startswith("no daemon ran from ")
        elif trigger_id == "latest":
            # Skipped up to the gap's latest instant, which catch-up fired.
            assert re.fullmatch(r"f*s+f+", pattern), zone
            assert "catch-up = latest" in down[0]["reason"]
        else:
            assert set(pattern) == {"f"}, zone
        for o in items:
            assert (o["outcome"] == "fired") == ("execution_id" in o)
    assert any(" skipped: no daemon ran from " in line for line in text.splitlines()), text


@pytest.mark.slow
def test_a_dead_daemon_leaves_instants_missed_and_a_recent_one_pending(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"WFSCHED_LATE_AFTER": "3s"})
    _deploy(d, CATCHUP_SPEC.replace('catchup = "all"', 'catchup = "skip"'))
    with d:
        wait_for(lambda: len(_fired(d, "ticks")) == 3, timeout=20, message="fires")
        d.kill()
    killed = time.time()
    # A killed daemon leaves its heartbeat: it counts as running for 15 s more.
    answer = wait_for(
        lambda: (
            (a := d.cli_json("explain", "ticks", "--trigger", "skip"))["daemon"]["running"] is False
            and a
        ),
        timeout=25,
        interval=0.5,
        message="the dead daemon's heartbeat to expire",
    )
    assert answer["daemon"]["last_seen"] is not None
    after = [o for o in answer["occurrences"] if _instant(o["at"]).timestamp() > killed]
    outcomes = [o["outcome"] for o in after]
    assert outcomes[-1] == "pending" and "missed" in outcomes, after
    missed = next(o for o in after if o["outcome"] == "missed")
    assert missed["reason"].startswith("no daemon has run since ")
    assert {o["trigger_id"] for o in answer["occurrences"]} == {"skip"}


def test_webhook_refusals_and_repeats_are_in_the_ledger(
    tmp_path: Path, env: dict[str, str]
) -> None:
    spec = """
id = "hook"
[[triggers]]
type = "webhook"
id = "in"
max_body_bytes = 100
rate_limit = 1
dedupe_header = "x-delivery"
auth = { type = "token", secret = "s3cret-token" }
"""
    d = Daemon(tmp_path, env=env)
    _deploy(d, spec)
    url = "/api/v1/public/webhook/workflow/hook"
    good = {"Authorization": "Bearer s3cret-token", "x-delivery": "d-1"}
    with d:
        assert d.request("POST", url, json={"a": 1}, headers={"Authorization": "Bearer no"}
                         ).status_code == 401  # fmt: skip
        assert d.request("POST", url, content=b"x" * 500, headers=good).status_code == 413
        first = d.request("POST", url, json={"a": 1}, headers=good)
        assert first.status_code == 202
        statuses = [d.request("POST", url, json={"a": 1}, headers=good).status_code
                    for _ in range(3)]  # fmt: skip
        assert 429 in statuses
        wait_for(lambda: {o["outcome"] for o in d.cli_json("explain", "hook")["occurrences"]}
                 >= {"refused", "fired"}, timeout=10, message="the ledger flush")  # fmt: skip
        metrics = d.get("/metrics").text
        answer = d.get("/api/v1/deployment/workflows/hook/explain").json()
    occ = answer["occurrences"]
    refused = [o["reason"] for o in occ if o["outcome"] == "refused"]
    assert any(r.startswith("401 unauthorized") for r in refused), refused
    assert any(r.startswith("413 payload_too_large") for r in refused), refused
    assert any(r.startswith("429 rate_limited") for r in refused), refused
    assert not any("s3cret" in r for r in refused)
    fired = [o for o in occ if o["outcome"] == "fired"]
    assert [o["execution_id"] for o in fired] == [first.json()["execution_id"]]
    if 202 in statuses:
        dedup = [o for o in occ if o["outcome"] == "deduplicated"]
        assert dedup and dedup[0]["execution_id"] == first.json()["execution_id"]
    assert 'wfsched_occurrences_total{outcome="refused",trigger_type="webhook"}' in metrics
    assert 'wfsched_occurrences_total{outcome="fired",trigger_type="webhook"} 1.0' in metrics
    assert 'wfsched_fire_lateness_seconds_count{trigger_type="webhook"} 1.0' in metrics


def test_explain_refuses_bad_windows_with_one_line(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    _deploy(d, CATCHUP_SPEC)
    bad = d.cli("explain", "ticks", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "--since" in bad.stderr and "ISO 8601" in bad.stderr
    both = d.cli("explain", "ticks", "--at", "2026-01-01T00:00:00Z", "--since",
                 "2026-01-01T00:00:00Z", check=False)  # fmt: skip
    assert both.returncode == 2
    assert d.cli("explain", "nope", check=False).returncode == 1
    assert d.cli("explain", "ticks", "--trigger", "nope", check=False).returncode == 1
    at = d.cli_json("explain", "ticks", "--at", "2026-01-01T10:05:00Z")
    assert (at["since"], at["until"]) == ("2026-01-01T10:04:00Z", "2026-01-01T10:06:00Z")
    with d:
        r = httpx.get(f"{d.url}/api/v1/deployment/workflows/ticks/explain?since=x", timeout=5)
        assert r.status_code == 400 and r.json()["error"] == "bad_request"
        assert "since" in r.json()["detail"]
        assert "/api/v1/deployment/workflows/{id}/explain" in d.get("/openapi.json").json()[
            "paths"]  # fmt: skip
