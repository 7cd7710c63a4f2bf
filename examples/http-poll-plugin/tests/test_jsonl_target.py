"""The jsonl-file dispatch target: validation at deploy and real appends to a real file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from wfsched_http_poll.jsonl import JsonlFileTarget

from wfsched import ConfigError, DispatchError, SpecError, TargetContext, TriggerEvent


def event(n: int) -> TriggerEvent:
    return TriggerEvent(
        execution_id=f"01J{n:023d}",
        workflow_id="orders",
        trigger_id="hook",
        trigger_type="webhook",
        dedupe_key=f"k{n}",
        scheduled_at=None,
        fired_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        payload={"n": n},
        status="pending",
    )


def test_it_appends_every_event_as_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    options = JsonlFileTarget.validate({"path": str(path)})
    target = JsonlFileTarget.open(TargetContext({}), options)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(target.send, event(n))
        await target.aclose()

    anyio.run(main)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["payload"]["n"] for line in lines) == list(range(20))
    assert lines[0]["trigger"] == {"id": "hook", "type": "webhook"}
    assert lines[0]["fired_at"] == "2025-01-02T03:04:05Z"


def test_a_write_error_is_retried(tmp_path: Path) -> None:
    target = JsonlFileTarget.open(TargetContext({}), {"path": str(tmp_path / "no" / "x.jsonl")})
    with pytest.raises(DispatchError) as err:
        anyio.run(target.send, event(1))
    assert err.value.retry and "cannot append to" in str(err.value)


def test_it_refuses_a_relative_path_or_no_path() -> None:
    with pytest.raises(SpecError, match="absolute") as err:
        JsonlFileTarget.validate({"path": "events.jsonl"})
    assert err.value.field == "path"
    with pytest.raises(SpecError) as err:
        JsonlFileTarget.validate({"file": "/x"})
    assert err.value.field == "file"
    with pytest.raises(ConfigError, match="needs a path"):
        JsonlFileTarget.check_settings({}, {})


def test_the_plugin_registers_the_target_through_its_hook() -> None:
    from wfsched_http_poll import register_dispatch_targets

    got: list[type] = []
    register_dispatch_targets(register=got.append)
    assert got == [JsonlFileTarget]


def test_a_path_is_refused_over_the_http_api() -> None:
    [problem] = JsonlFileTarget.untrusted_problems({"path": "/root/.bashrc"}, {})
    assert problem.field == "path"
