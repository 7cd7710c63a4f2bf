"""``/openapi.json``: a valid OpenAPI 3.1 document of every route, and a schemathesis run
against the live daemon that finds no server error and no answer outside the document."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from tests.daemon_proc import Daemon, wait_for
from wfsched.plugins import load_registry
from wfsched.web.app import create_app, routes
from wfsched.web.ingress import INGRESS_METHODS, PREFIX, WorkflowWebhookRoute
from wfsched.web.openapi import document

TOKEN = "schemathesis-token-0123456789"
# The documented HTTP routes, as (method, path) pairs.
SPEC_ROUTES = {
    ("post", "/api/v1/deployment/workflows/{id}/deploy"),
    ("put", "/api/v1/deployment/workflows/{id}/deploy"),
    ("delete", "/api/v1/deployment/workflows/{id}/undeploy"),
    ("get", "/api/v1/deployment/workflows/{id}/status"),
    ("get", "/api/v1/deployment/workflows/{id}/explain"),
    ("get", "/api/v1/deployment/workflows"),
    ("post", "/api/v1/deployment/workflows"),
    ("post", "/api/v1/deployment/workflows/{id}/pause"),
    ("post", "/api/v1/deployment/workflows/{id}/resume"),
    ("get", "/api/v1/deployment/workflows/{id}/export"),
    ("get", "/api/v1/executions"),
    ("post", "/api/v1/executions/{execution_id}/redeliver"),
    ("post", "/api/v1/executions/prune"),
    ("get", "/api/v1/check"),
    ("get", "/api/v1/plugins"),
    ("get", "/api/v1/density"),
    ("post", "/api/v1/triggers/workflows/{id}/manual"),
    ("post", "/api/v1/triggers/workflows/{id}/webhook"),
    ("get", "/api/v1/triggers/workflows/{id}/status"),
    ("get", "/api/v1/triggers/health"),
    *(
        (m, "/api/v1/public/webhook/workflow/{id}")
        for m in ("get", "post", "put", "patch", "delete")
    ),
    ("post", "/api/v1/public/webhooks/github"),
    ("get", "/api/v1/public/webhooks/status"),
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
}


def builtin_document() -> dict[str, Any]:
    """The document a daemon serves: with the routes of the registered (built-in) types."""
    return document(t.cls for t in load_registry(None).all())


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item}


def test_it_is_a_valid_openapi_31_builtin_document() -> None:
    doc = builtin_document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    json.dumps(doc)  # served as JSON


def test_it_documents_every_spec_route_and_every_app_route() -> None:
    doc = builtin_document()
    assert operations(doc) == SPEC_ROUTES
    ingress = {m.lower() for m in INGRESS_METHODS}
    assert {m for m, p in operations(doc) if p == PREFIX + "{id}"} == ingress
    # The one routes table, the hot per-workflow webhook route included, is what is documented.
    served: set[tuple[str, str]] = set()
    for route in routes():
        if isinstance(route, Mount) and route.path == "/ui":
            continue  # the dashboard's HTML pages are not part of the API
        assert isinstance(route, (Route, WorkflowWebhookRoute))
        path = route.path.replace("{name}", "github")
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        documented = {m for m, p in operations(doc) if p == path}
        assert documented, f"{route.path} is not documented"
        assert documented <= methods
        served |= {(m, path) for m in methods}
    assert served == operations(doc)
    # And it is the table the app routes by. No handler runs: the services are placeholders.
    services = SimpleNamespace(
        api_token="", bind_host="127.0.0.1", deployments=None, store=None, settings=None
    )
    app = create_app(services)  # type: ignore[arg-type]
    table = [(type(r), getattr(r, "path", None)) for r in routes()]
    assert [(type(r), getattr(r, "path", None)) for r in app.routes] == table


def test_it_documents_errors_and_management_security() -> None:
    doc = builtin_document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert any(code.startswith("2") for code in responses), (method, path)
            if path.startswith(
                ("/api/v1/deployment/", "/api/v1/triggers/", "/api/v1/executions")
            ) or path in (
                "/api/v1/public/webhooks/status",
                "/api/v1/check",
                "/api/v1/plugins",
                "/api/v1/density",
            ):
                assert op["security"] == [{"bearerAuth": []}]
                assert "401" in responses
                assert "403" in responses
            for code, response in responses.items():
                if code[0] in "45" and path != "/health":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Daemon]:
    # With a GitHub secret set, unsigned fuzzed deliveries are refused with 401 (without one
    # that route answers 503 github_not_configured, by design).
    d = Daemon(
        tmp_path,
        env={"WFSCHED_API_TOKEN": TOKEN, "GITHUB_WEBHOOK_SECRET": "github-secret-0123456789"},
    )
    spec = {
        "id": "orders",
        "triggers": [
            {
                "type": "webhook",
                "methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
                "max_body_bytes": 65536,
            },
            {"type": "manual", "require_confirmation": False},
        ],
    }
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "orders.json").write_text(json.dumps(spec))
    d.cli("deploy", str(tmp_path / "specs"))
    with d:
        wait_for(
            lambda: d.get(
                "/api/v1/public/webhooks/status", headers={"Authorization": f"Bearer {TOKEN}"}
            ).json()["webhooks"],
            message="webhook running",
        )
        yield d


def test_the_deploy_body_schema_and_the_server_agree(live: Daemon) -> None:
    """What /openapi.json says a deploy body must hold is what the server requires: a body the
    document accepts is deployed, one it refuses is refused (schemathesis checks both ways)."""
    schema = document()["components"]["schemas"]["WorkflowSpec"]
    url = f"{live.url}/api/v1/deployment/workflows/orders/deploy"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body: dict[str, Any]
    for body in ({}, {"triggers": []}, {"name": "Orders", "triggers": [{"type": "manual"}]}):
        jsonschema.validate(body, schema)
        answer = httpx.put(url, json=body, headers=auth)
        assert answer.status_code == 200, (body, answer.text)
    for body in ({"triggers": [{}]}, {"triggers": "manual"}, {"id": "not ok!"}, {"name": 5}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)
        answer = httpx.put(url, json=body, headers=auth)
        assert answer.status_code == 422, (body, answer.text)


CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
    "missing_required_header,unsupported_method,ignored_auth"
)
# Not run: allow_header_conformance (a webhook's methods are set per trigger, so its Allow
# lists a subset of the documented ones) and positive_data_acceptance (a spec that matches the
# schema may still be refused: unknown trigger type, invalid cron).


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error(live: Daemon, tmp_path: Path) -> None:
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    seed = os.environ.get("WFSCHED_SCHEMATHESIS_SEED", "20261128")
    cmd = [
        exe,
        "run",
        f"{live.url}/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        "25",
        "--seed",
        seed,
        "--request-timeout",
        "20",
        # One worker: a fixed seed then replays the same calls in the same order.
        "--workers",
        "1",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    result = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    [junit] = (tmp_path / "report").glob("junit*.xml")
    assert "Server error" not in junit.read_text()
    logs = live.logs()
    assert "unexpected error" not in logs, logs[-4000:]
    assert "Exception in ASGI application" not in logs, logs[-4000:]
    assert sys.executable  # the run used this interpreter's schemathesis
