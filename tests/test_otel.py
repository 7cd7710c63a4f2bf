"""OpenTelemetry spans end to end: a real daemon, real HTTP, the SDK's in-memory exporter.

The daemon subprocess gets a tracer provider the way ``opentelemetry-instrument`` gives one:
set up before wfsched starts (here by a file in its plugins folder), exporting to the SDK's
``InMemorySpanExporter``; the spans are written out when the daemon exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, free_port, wait_for
from tests.engine_app import EngineThread, Reply
from tests.github_harness import (
    body_of,
    github_env,
    headers_for,
    key_path_fixture,
    key_pem_fixture,
    standin_fixture,
)
from tests.github_standin import GitHubStandIn
from tests.test_targets import (
    INBOUND,
    TRACE,
    TRACEPARENT,
    deploy,
    post_hook,
    received,
    webhook_spec,
)

__all__ = ["key_path_fixture", "key_pem_fixture", "standin_fixture"]
pytestmark = pytest.mark.slow

INBOUND_SPAN = INBOUND.split("-")[2]
MEMORY_PROVIDER = """
import atexit, json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(PROVIDER)


def _dump():
    spans = EXPORTER.get_finished_spans()
    if spans:
        path = os.path.join(os.environ["SPANS_DIR"], f"{os.getpid()}.json")
        with open(path, "w") as fh:
            json.dump([json.loads(s.to_json()) for s in spans], fh)


atexit.register(_dump)
"""


@pytest.fixture
def engine() -> Iterator[EngineThread]:
    thread = EngineThread(free_port())
    thread.start()
    try:
        yield thread
    finally:
        thread.close()


def with_memory_exporter(run: Path) -> Path:
    """Give the daemon in ``run`` the in-memory tracer provider; return where spans go."""
    (run / "plugins").mkdir(parents=True)
    (run / "plugins" / "otel_memory.py").write_text(MEMORY_PROVIDER)
    spans_dir = run.parent / f"{run.name}-spans"
    spans_dir.mkdir()
    return spans_dir


def spans_of(folder: Path) -> list[dict[str, Any]]:
    return [span for path in folder.glob("*.json") for span in json.loads(path.read_text())]


def hexid(value: str | None) -> str | None:
    return None if value is None else value.removeprefix("0x")


def test_a_traced_webhook_gives_receive_record_and_dispatch_spans_in_its_trace(
    tmp_path: Path, engine: EngineThread
) -> None:
    engine.call(lambda: engine.engine.script(Reply(503)))
    run = tmp_path / "run"
    spans_dir = with_memory_exporter(run)
    env = {
        "WFSCHED_DISPATCH_MODE": "engine",
        "WORKFLOW_ENGINE_URL": engine.url,
        "WFSCHED_DISPATCH_RETRY_BASE": "50ms",
        "WFSCHED_DISPATCH_RETRY_MAX": "100ms",
        "SPANS_DIR": str(spans_dir),
    }
    with Daemon(run, env=env) as d:
        assert deploy(d, tmp_path, hooks=webhook_spec("hooks")).returncode == 0
        execution_id = post_hook(d, "hooks", {"traceparent": INBOUND})
        first, retry = received(engine, 2)  # a 503, then the retry
        assert d.stop() == 0
    spans = [s for s in spans_of(spans_dir) if s["context"]["trace_id"] == f"0x{TRACE}"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)

    (receive,) = by_name["POST /api/v1/public/webhook/workflow/{workflow_id}"]
    assert receive["kind"] == "SpanKind.SERVER"
    assert hexid(receive["parent_id"]) == INBOUND_SPAN, "continues the delivery's traceparent"
    attrs = receive["attributes"]
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.route"] == "/api/v1/public/webhook/workflow/{workflow_id}"
    assert attrs["url.path"] == "/api/v1/public/webhook/workflow/hooks"
    assert attrs["url.scheme"] == "http"
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == d.port
    assert attrs["http.response.status_code"] in (200, 202)
    assert "error.type" not in attrs

    (record,) = by_name["record"]
    assert record["kind"] == "SpanKind.INTERNAL"
    assert record["parent_id"] == receive["context"]["span_id"]
    assert record["attributes"]["wfsched.execution_id"] == execution_id

    attempts = sorted(by_name["POST"], key=lambda s: s["start_time"])
    assert len(attempts) == 2
    for span, request in zip(attempts, (first, retry), strict=True):
        assert span["kind"] == "SpanKind.CLIENT"
        assert hexid(span["parent_id"]) == INBOUND_SPAN
        found = TRACEPARENT.match(request.headers["traceparent"])
        assert found is not None
        assert found.groups() == (TRACE, hexid(span["context"]["span_id"]), "01"), (
            "the traceparent sent names the dispatch span"
        )
        attrs = span["attributes"]
        assert attrs["http.request.method"] == "POST"
        assert attrs["url.full"] == f"{engine.url}/v1/workflows/hooks/execute"
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["server.port"] == int(engine.url.rsplit(":", 1)[1])
        assert attrs["wfsched.execution_id"] == execution_id
    failed, ok = attempts
    assert failed["attributes"]["http.response.status_code"] == 503
    assert failed["attributes"]["error.type"] == "503"
    assert failed["status"]["status_code"] == "ERROR"
    assert ok["attributes"]["http.response.status_code"] == 200
    assert "error.type" not in ok["attributes"]
    assert [s["attributes"]["wfsched.dispatch.attempt"] for s in attempts] == [1, 2]


def test_a_github_delivery_gets_a_receive_span_continuing_its_traceparent(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    run = tmp_path / "gh"
    spans_dir = with_memory_exporter(run)
    env = {**github_env(standin, key_path), "SPANS_DIR": str(spans_dir)}
    body = body_of("push.new-branch")
    with Daemon(run, env=env) as d:
        spec = {"id": "pushes", "triggers": [{"type": "github", "events": "push"}]}
        (tmp_path / "pushes.json").write_text(json.dumps(spec))
        d.cli("deploy", str(tmp_path / "pushes.json"))
        headers = {**headers_for("push", body), "traceparent": INBOUND}

        def delivered() -> bool:
            r = d.request("POST", "/api/v1/public/webhooks/github", content=body, headers=headers)
            return r.status_code == 202 and bool(r.json()["matched"])

        wait_for(delivered, 20, message="a matched delivery")
        assert d.stop() == 0
    spans = [s for s in spans_of(spans_dir) if s["context"]["trace_id"] == f"0x{TRACE}"]
    receive = [s for s in spans if s["name"] == "POST /api/v1/public/webhooks/{name}"]
    assert receive, "a receive span in the delivery's trace"
    last = receive[-1]
    assert last["kind"] == "SpanKind.SERVER"
    assert hexid(last["parent_id"]) == INBOUND_SPAN
    assert last["attributes"]["http.route"] == "/api/v1/public/webhooks/{name}"
    assert last["attributes"]["http.response.status_code"] == 202
    records = [s for s in spans if s["name"] == "record"]
    assert any(r["parent_id"] == last["context"]["span_id"] for r in records)


PROBE = """
import json, logging, os, sys
if os.environ.get("BLOCK_OTEL"):
    sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from wfsched.plugins import load_registry
from wfsched.daemon import serve  # noqa: F401 - the daemon's own imports count too
from wfsched import otel
load_registry(None)
on = otel.setup()
provider = None
if on:
    from opentelemetry import trace
    resource = trace.get_tracer_provider().resource
    provider = {k: str(v) for k, v in resource.attributes.items() if k.startswith("service.")}
print(json.dumps({
    "on": on,
    "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m]),
    "provider": provider,
}))
"""


def probe(**env: str) -> tuple[dict[str, Any], str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**clean, **env},
    ).stdout
    lines = out.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_without_configuration_nothing_of_opentelemetry_is_imported() -> None:
    found, _ = probe()
    assert found == {"on": False, "loaded": [], "provider": None}


def test_without_the_extra_an_exporter_setting_is_one_warning() -> None:
    found, warnings = probe(BLOCK_OTEL="1", OTEL_TRACES_EXPORTER="console")
    assert found["on"] is False
    assert "pip install 'wfsched[otel]'" in warnings


def test_the_standard_environment_configures_the_sdk() -> None:
    found, _ = probe(OTEL_TRACES_EXPORTER="console")
    assert found["on"] is True
    assert found["provider"]["service.name"] == "wfsched"
    found, _ = probe(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="sched-eu")
    assert found["provider"]["service.name"] == "sched-eu"
    found, warnings = probe(OTEL_TRACES_EXPORTER="nosuch")
    assert found["on"] is False
    assert "no span exporter 'nosuch' is installed" in warnings
    found, _ = probe(OTEL_TRACES_EXPORTER="console", OTEL_SDK_DISABLED="true")
    assert found == {"on": False, "loaded": [], "provider": None}
