"""The daemon as a subprocess in engine mode: engine down, SIGKILL, restart, redeliver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, free_port, wait_for
from tests.engine_app import EngineThread, Received, Reply

pytestmark = pytest.mark.slow

SPEC = """\
id = "e2e"
[[triggers]]
type = "manual"
require_confirmation = false
"""
PASSWORD = "engine-s3cret-pw"


@pytest.fixture
def engine() -> Iterator[EngineThread]:
    thread = EngineThread(free_port())
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture
def daemon(tmp_path: Path, engine: EngineThread) -> Iterator[Daemon]:
    env = {
        "WFSCHED_DISPATCH_MODE": "engine",
        "WORKFLOW_ENGINE_URL": f"http://wfsched:{PASSWORD}@127.0.0.1:{engine.port}/",
        "WFSCHED_DISPATCH_RETRY_BASE": "50ms",
        "WFSCHED_DISPATCH_RETRY_MAX": "200ms",
        "WFSCHED_DISPATCH_CLAIM_TTL": "2s",
        "WFSCHED_DISPATCH_MAX_ATTEMPTS": "1000",
    }
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "e2e.toml").write_text(SPEC)
    with Daemon(tmp_path / "run", env=env) as d:
        d.cli("deploy", str(specs))
        yield d


def fire_http(d: Daemon, n: int) -> str:
    response = d.request(
        "POST", "/api/v1/triggers/workflows/e2e/manual", json={"confirm": True, "data": {"n": n}}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


def fire_cli(d: Daemon, n: int) -> str:
    return str(d.cli_json("trigger", "e2e", "--data", f'{{"n": {n}}}')["execution_id"])


def history(d: Daemon, *args: str) -> dict[str, dict[str, Any]]:
    return {e["execution_id"]: e for e in d.cli_json("history", "--limit", "500", *args)}


def test_it_delivers_every_event_after_engine_outage_and_sigkill(
    daemon: Daemon, engine: EngineThread
) -> None:
    fired = [fire_cli(daemon, 0)] + [fire_http(daemon, n) for n in range(1, 21)]

    def all_retrying() -> bool:
        events = history(daemon)
        return all(events[x]["status"] == "pending" and events[x]["attempts"] >= 1 for x in fired)

    wait_for(all_retrying, 20, interval=0.3, message="every event to be retried")
    error = history(daemon)[fired[0]]["last_error"]
    assert f"cannot reach engine at http://127.0.0.1:{engine.port}/" in error

    daemon.kill()
    fired += [fire_cli(daemon, 21)]  # recorded while no daemon runs
    engine.start()
    daemon.start()

    def delivered() -> bool:
        keys: set[str] = engine.call(engine.engine.distinct_keys)
        return keys >= set(fired)

    wait_for(delivered, 30, message="every fired event at the engine")
    received: list[Received] = engine.call(lambda: list(engine.engine.received))
    assert {r.key for r in received} == set(fired), "the engine saw events nobody fired"
    assert all(r.body["execution_id"] == r.key for r in received)

    def all_dispatched() -> bool:
        events = history(daemon)
        return all(events[x]["status"] == "dispatched" for x in fired)

    wait_for(all_dispatched, 10, interval=0.3, message="every event marked dispatched")

    lines = daemon.log_lines()
    attempts = [x for x in lines if x.get("event") == "dispatch attempt"]
    assert {"execution_id", "duration_ms", "status"} <= set(attempts[-1])
    assert PASSWORD not in daemon.logs()
    assert PASSWORD not in daemon.cli("history", "--limit", "500", "--json").stdout
    assert daemon.stop() == 0


def test_it_lists_failed_events_and_redelivers_them_with_the_same_key(
    daemon: Daemon, engine: EngineThread
) -> None:
    engine.start()
    engine.call(lambda: engine.engine.script(Reply(400, body='{"error": "bad input"}')))
    rejected = fire_http(daemon, 1)
    accepted = fire_http(daemon, 2)

    failed = wait_for(
        lambda: history(daemon, "--status", "failed"), 15, interval=0.3, message="a failed event"
    )
    assert list(failed) == [rejected]
    assert failed[rejected]["attempts"] == 1
    assert "400" in failed[rejected]["last_error"]
    daemon.env["COLUMNS"] = "200"  # rich wraps tables to 80 columns without a terminal
    table = daemon.cli("history", "--status", "failed").stdout
    assert rejected in table and accepted not in table

    queued = daemon.cli_json("redeliver", rejected)
    assert queued == [{"execution_id": rejected, "status": "pending"}]
    wait_for(
        lambda: history(daemon)[rejected]["status"] == "dispatched",
        15,
        interval=0.3,
        message="the redelivered event to be dispatched",
    )
    keys = engine.call(engine.engine.keys)
    assert keys.count(rejected) == 2 and keys.count(accepted) == 1
    assert history(daemon, "--status", "failed") == {}

    unknown = daemon.cli("redeliver", "01NOSUCHEVENT0000000000000", check=False)
    assert unknown.returncode == 1
    assert "01NOSUCHEVENT0000000000000" in unknown.stderr


def test_it_mails_events_in_notify_mode_once_smtp_comes_up(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    from tests.test_notify import Mailbox

    smtp_port = free_port()
    env = {
        "WFSCHED_DISPATCH_MODE": "notify",
        "WFSCHED_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "WFSCHED_NOTIFY_FROM": "wfsched@example.test",
        "WFSCHED_NOTIFY_TO": "ops@example.test",
        "WFSCHED_DISPATCH_RETRY_BASE": "50ms",
        "WFSCHED_DISPATCH_RETRY_MAX": "200ms",
        "WFSCHED_DISPATCH_MAX_ATTEMPTS": "1000",
    }
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "e2e.toml").write_text(SPEC)
    mailbox = Mailbox()
    with Daemon(tmp_path / "run", env=env) as d:
        d.cli("deploy", str(specs))
        fired = [fire_http(d, n) for n in range(3)]
        wait_for(
            lambda: all(e["attempts"] >= 1 for e in history(d).values()),
            15,
            interval=0.3,
            message="failed attempts while SMTP is down",
        )
        controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
        controller.start()
        try:
            wait_for(lambda: len(mailbox.messages) >= 3, 15, message="three mails")
        finally:
            controller.stop()
        assert d.stop() == 0
    ids = sorted(m["Message-ID"] for _, _, m in mailbox.messages)
    assert ids == sorted(f"<{x}@wfsched>" for x in fired)
    assert all(
        m["Subject"] == "[wfsched] manual trigger fired: e2e" for _, _, m in mailbox.messages
    )
