"""Dispatch targets end to end: a real daemon subprocess, real HTTP, a stand-in receiver.

cloudevents (parsed with the CloudEvents SDK), a workflow's own ``[dispatch]`` table, deploy
errors naming the field, and the W3C traceparent continuing a webhook's own trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

from tests.daemon_proc import Daemon, free_port, wait_for
from tests.engine_app import EngineThread, Received, Reply

pytestmark = pytest.mark.slow

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INBOUND = f"00-{TRACE}-00f067aa0ba902b7-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")


def webhook_spec(workflow_id: str, dispatch: str = "") -> str:
    return f'id = "{workflow_id}"\n{dispatch}\n[[triggers]]\ntype = "webhook"\nid = "hook"\n'


@pytest.fixture
def engine() -> Iterator[EngineThread]:
    thread = EngineThread(free_port())
    thread.start()
    try:
        yield thread
    finally:
        thread.close()


def received(engine: EngineThread, n: int) -> list[Received]:
    return list(
        wait_for(
            lambda: (
                (got := engine.call(lambda: list(engine.engine.received))) and len(got) >= n and got
            ),
            20,
            message=f"{n} request(s) at the stand-in",
        )
    )


def post_hook(d: Daemon, workflow_id: str, headers: dict[str, str] | None = None) -> str:
    response = d.request(
        "POST",
        f"/api/v1/public/webhook/workflow/{workflow_id}",
        json={"order": 42},
        headers=headers or {},
    )
    assert response.status_code in (200, 202), response.text
    return str(response.json()["execution_id"])


def deploy(d: Daemon, tmp_path: Path, **specs: str) -> Any:
    folder = tmp_path / "specs"
    folder.mkdir(exist_ok=True)
    for name, text in specs.items():
        (folder / f"{name}.toml").write_text(text)
    return d.cli("deploy", str(folder), check=False)


def test_cloudevents_target_sends_binary_mode_events_with_every_attribute(
    tmp_path: Path, engine: EngineThread
) -> None:
    env = {
        "WFSCHED_DISPATCH_MODE": "cloudevents",
        "WFSCHED_CLOUDEVENTS_URL": f"{engine.url}/sink/events",
    }
    with Daemon(tmp_path / "run", env=env) as d:
        assert deploy(d, tmp_path, orders=webhook_spec("orders")).returncode == 0
        execution_id = post_hook(d, "orders", {"traceparent": INBOUND})
        (got,) = received(engine, 1)
        event = d.cli_json("history", "orders")[0]
    assert got.path == "/sink/events"
    headers = {k.lower(): v for k, v in got.headers.items()}
    cloud = from_binary_event(HTTPMessage(headers=headers, body=got.raw))
    assert cloud.get_specversion() == "1.0"
    assert cloud.get_id() == execution_id
    assert cloud.get_source() == "wfsched/orders/hook"
    assert cloud.get_type() == "dev.wfsched.trigger.webhook"
    assert cloud.get_time() == datetime.fromisoformat(event["fired_at"])
    assert headers["ce-time"] == event["fired_at"]
    assert cloud.get_datacontenttype() == "application/json"
    assert headers["idempotency-key"] == execution_id
    data = cloud.get_data()
    assert isinstance(data, dict)
    assert data["execution_id"] == execution_id
    assert data["trigger"] == {"id": "hook", "type": "webhook"}
    assert data["payload"]["body"] == {"order": 42}
    assert set(data) == {
        "execution_id",
        "workflow_id",
        "trigger",
        "scheduled_at",
        "fired_at",
        "payload",
    }
    found = TRACEPARENT.match(headers["traceparent"])
    assert found is not None and found.group(1) == TRACE
    assert found.group(2) != "00f067aa0ba902b7", "each dispatch is a new span"


def test_a_workflows_dispatch_table_chooses_its_target(
    tmp_path: Path, engine: EngineThread
) -> None:
    routed = webhook_spec("routed", f'[dispatch]\nmode = "engine"\nurl = "{engine.url}/eng"\n')
    ce = webhook_spec("ce", f'[dispatch]\nmode = "cloudevents"\nurl = "{engine.url}/sink/ce"\n')
    with Daemon(tmp_path / "run", env={}) as d:  # default target: log
        result = deploy(d, tmp_path, routed=routed, ce=ce, plain=webhook_spec("plain"))
        assert result.returncode == 0, result.stderr
        plain = post_hook(d, "plain")
        first = post_hook(d, "routed")
        second = post_hook(d, "ce")
        got = received(engine, 2)
        wait_for(
            lambda: (
                {e["execution_id"]: e["status"] for e in d.cli_json("history")}
                == {plain: "dispatched", first: "dispatched", second: "dispatched"}
            ),
            15,
            message="all three dispatched",
        )
    by_key = {r.key: r for r in got}
    assert set(by_key) == {first, second}, "the plain workflow went to the log target"
    assert by_key[first].path == "/eng/v1/workflows/routed/execute"
    assert by_key[second].path == "/sink/ce"
    assert by_key[second].headers["ce-source"] == "wfsched/ce/hook"


@pytest.mark.parametrize(
    ("dispatch", "needle"),
    [
        ('[dispatch]\nmode = "carrier-pigeon"\n', "field 'dispatch.mode': unknown dispatch target"),
        ('[dispatch]\nmode = "engine"\nurll = "http://x"\n', "field 'dispatch.urll'"),
        ('[dispatch]\nmode = "engine"\nurl = "ftp://x"\n', "field 'dispatch.url'"),
        ('[dispatch]\nmode = "log"\nurl = "http://x"\n', "field 'dispatch.url'"),
        ('[dispatch]\nmode = "cloudevents"\n', "dispatch.cloudevents_url"),
        ("[dispatch]\nurl = 'http://x'\n", "field 'dispatch.mode': is required"),
    ],
)
def test_deploy_refuses_a_bad_dispatch_table_naming_file_and_field(
    tmp_path: Path, dispatch: str, needle: str
) -> None:
    from wfsched.deployments import DeploymentService
    from wfsched.errors import WfschedError
    from wfsched.plugins import configure

    (tmp_path / "bad.toml").write_text(webhook_spec("bad", dispatch))
    settings, registry = configure(environ={})
    service = DeploymentService(store=None, registry=registry, settings=settings)  # type: ignore[arg-type]
    with pytest.raises(WfschedError) as err:
        service.load([tmp_path / "bad.toml"])
    assert str(tmp_path / "bad.toml") in str(err.value)
    assert needle in str(err.value)


def test_engine_dispatch_continues_the_webhooks_trace_and_keeps_one_trace_per_event(
    tmp_path: Path, engine: EngineThread
) -> None:
    engine.call(lambda: engine.engine.script(Reply(503)))
    env = {
        "WFSCHED_DISPATCH_MODE": "engine",
        "WORKFLOW_ENGINE_URL": engine.url,
        "WFSCHED_DISPATCH_RETRY_BASE": "50ms",
        "WFSCHED_DISPATCH_RETRY_MAX": "100ms",
    }
    with Daemon(tmp_path / "run", env=env) as d:
        assert deploy(d, tmp_path, hooks=webhook_spec("hooks")).returncode == 0
        traced = post_hook(d, "hooks", {"traceparent": INBOUND})
        got = received(engine, 2)  # a 503, then the retry
        untraced = post_hook(d, "hooks", {"traceparent": "00-garbage"})
        got = received(engine, 3)
    first, retry, other = got
    assert first.key == retry.key == traced and other.key == untraced
    spans = set()
    for request in (first, retry):
        found = TRACEPARENT.match(request.headers["traceparent"])
        assert found is not None and found.group(1) == TRACE and found.group(3) == "01"
        spans.add(found.group(2))
    assert len(spans) == 2, "a new span id per attempt"
    found = TRACEPARENT.match(other.headers["traceparent"])
    assert found is not None and found.group(1) not in (TRACE, "0" * 32)
