"""Every documented route over real HTTP: statuses, shapes and management auth."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.daemon_proc import Daemon, free_port, wait_for
from wfsched.httplimits import BODY_RECEIVED, HttpLimits, protocol_class
from wfsched.web.requests import HttpError, error_response, read_body, receive_body

TOKEN = "mgmt-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEPLOY = "/api/v1/deployment/workflows/{}/deploy"
SPEC = {
    "id": "orders",
    "name": "Orders",
    "triggers": [
        {"type": "webhook"},
        {"type": "manual"},
        {"type": "manual", "id": "quick", "require_confirmation": False},
    ],
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("api"), env={"WFSCHED_API_TOKEN": TOKEN})
    with d:
        yield d


@pytest.fixture(scope="module")
def open_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon without api_token: loopback clients only."""
    with Daemon(tmp_path_factory.mktemp("loopback")) as d:
        yield d


def call(d: Daemon, method: str, path: str, *, auth: bool = True, **kw: Any) -> httpx.Response:
    headers = {**(AUTH if auth else {}), **kw.pop("headers", {})}
    return httpx.request(method, d.url + path, headers=headers, timeout=15, **kw)


def error_of(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert body["detail"]
    return str(body["error"])


def deployed(d: Daemon, spec: dict[str, Any] = SPEC) -> None:
    r = call(d, "POST", DEPLOY.format(spec["id"]), json=spec)
    assert r.status_code in (200, 201), r.text
    if not any(t["type"] == "webhook" for t in spec["triggers"]):
        return
    wait_for(
        lambda: any(
            w["workflow_id"] == spec["id"]
            for w in httpx.get(d.url + "/api/v1/public/webhooks/status", headers=AUTH).json()[
                "webhooks"
            ]
        ),
        message="webhook running",
    )


MANAGEMENT = [
    ("GET", "/api/v1/deployment/workflows"),
    ("POST", "/api/v1/deployment/workflows/orders/deploy"),
    ("PUT", "/api/v1/deployment/workflows/orders/deploy"),
    ("DELETE", "/api/v1/deployment/workflows/orders/undeploy"),
    ("GET", "/api/v1/deployment/workflows/orders/status"),
    ("POST", "/api/v1/triggers/workflows/orders/manual"),
    ("POST", "/api/v1/triggers/workflows/orders/webhook"),
    ("GET", "/api/v1/triggers/workflows/orders/status"),
    ("GET", "/api/v1/triggers/health"),
    ("GET", "/api/v1/public/webhooks/status"),
]


def test_it_requires_the_bearer_token_on_every_management_route(daemon: Daemon) -> None:
    for method, path in MANAGEMENT:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = call(daemon, method, path, auth=False, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
            assert error_of(r) == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/health", "/metrics", "/openapi.json"):
        assert call(daemon, "GET", path, auth=False).status_code == 200, path


def test_it_refuses_a_repeated_authorization_header(daemon: Daemon) -> None:
    r = httpx.get(
        daemon.url + "/api/v1/deployment/workflows",
        timeout=5,
        headers=[("authorization", AUTH["Authorization"]), ("authorization", "Bearer other")],
    )
    assert (r.status_code, error_of(r)) == (400, "bad_request")


def test_it_deploys_updates_and_undeploys_with_the_spec_statuses(daemon: Daemon) -> None:
    spec = {**SPEC, "id": "lifecycle"}
    r = call(daemon, "POST", DEPLOY.format("lifecycle"), json=spec)
    assert r.status_code == 201, r.text
    assert r.json()["action"] == "created"
    assert any("without auth" in w for w in r.json()["warnings"])
    r = call(daemon, "POST", DEPLOY.format("lifecycle"), json=spec)
    assert (r.status_code, r.json()["action"]) == (200, "unchanged")
    changed = {**spec, "name": "Renamed"}
    r = call(daemon, "PUT", DEPLOY.format("lifecycle"), json=changed)
    assert (r.status_code, r.json()["action"]) == (200, "updated")
    without_id = {k: v for k, v in spec.items() if k != "id"}
    r = call(daemon, "PUT", DEPLOY.format("never-deployed"), json=without_id)
    assert (r.status_code, error_of(r)) == (404, "not_found")
    listed = call(daemon, "GET", "/api/v1/deployment/workflows").json()
    [view] = [w for w in listed if w["workflow_id"] == "lifecycle"]
    assert view["name"] == "Renamed"
    assert {t["id"] for t in view["triggers"]} == {"webhook", "manual", "quick"}
    assert all(t["state"] == "active" for t in view["triggers"])
    r = call(daemon, "DELETE", "/api/v1/deployment/workflows/lifecycle/undeploy")
    assert r.json() == {"workflow_id": "lifecycle", "action": "undeployed"}
    r = call(daemon, "DELETE", "/api/v1/deployment/workflows/lifecycle/undeploy")
    assert (r.status_code, error_of(r)) == (404, "not_found")


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"", {}, 400, "invalid_json"),
        (b'{"triggers": [{"type": "webhook", "x": NaN}]}', {}, 400, "invalid_json"),
        (b"[" * 200 + b"]" * 200, {}, 400, "invalid_json"),
        (b"\xff\xfe{}", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"{}", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (
            b"id=x",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (b'{"triggers": [{"type": "webhook", "methodz": ["POST"]}]}', {}, 422, "invalid_spec"),
        (b'{"triggers": [{"type": "nope"}]}', {}, 422, "invalid_spec"),
        (b'{"id": "other", "triggers": []}', {}, 422, "invalid_spec"),
        (b'["not", "an", "object"]', {}, 422, "invalid_spec"),
        (b" " * (1024 * 1024 + 1), {}, 413, "payload_too_large"),
    ],
)
def test_it_refuses_bad_deploy_requests_with_json_errors(
    daemon: Daemon, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    r = call(daemon, "POST", DEPLOY.format("bad"), content=body, headers=headers)
    assert (r.status_code, error_of(r)) == (status, code), r.text


def test_it_names_the_trigger_and_field_of_an_invalid_spec(daemon: Daemon) -> None:
    body = {"triggers": [{"type": "webhook", "methodz": ["POST"]}]}
    detail = call(daemon, "POST", DEPLOY.format("bad"), json=body).json()["detail"]
    assert "methodz" in detail
    assert "did you mean 'methods'" in detail


def test_it_reports_deployment_and_trigger_status(daemon: Daemon) -> None:
    deployed(daemon)
    for path in (
        "/api/v1/deployment/workflows/orders/status",
        "/api/v1/triggers/workflows/orders/status",
    ):
        r = call(daemon, "GET", path)
        assert r.status_code == 200
        view = r.json()
        assert (view["workflow_id"], view["state"]) == ("orders", "active")
        for trigger in view["triggers"]:
            assert {
                "id",
                "type",
                "state",
                "next_fire",
                "health",
                "last_error",
                "last_event",
            } <= set(trigger)
        missing = call(daemon, "GET", path.replace("orders", "missing"))
        assert (missing.status_code, error_of(missing)) == (404, "not_found")
    health = call(daemon, "GET", "/api/v1/triggers/health").json()
    assert health["status"] in ("ok", "degraded")
    assert health["running"] >= 3


def test_it_fires_manual_triggers_with_the_confirmation_rule(daemon: Daemon) -> None:
    deployed(daemon)
    path = "/api/v1/triggers/workflows/orders/manual"
    r = call(daemon, "POST", path, json={"data": {"n": 1}})
    assert (r.status_code, error_of(r)) == (409, "confirmation_required")
    r = call(daemon, "POST", path, json={"confirm": True, "data": {"n": 1}})
    assert r.status_code == 202
    assert set(r.json()) == {"execution_id", "workflow_id", "status"}
    r = call(daemon, "POST", path, json={"trigger_id": "quick"})
    assert r.status_code == 202
    r = call(daemon, "POST", path, content=b"")
    assert (r.status_code, error_of(r)) == (409, "confirmation_required")
    r = call(daemon, "POST", path, json={"trigger_id": ["x"]})
    assert (r.status_code, error_of(r)) == (400, "bad_request")
    r = call(daemon, "POST", path, json=[1])
    assert (r.status_code, error_of(r)) == (400, "invalid_json")
    r = call(daemon, "POST", "/api/v1/triggers/workflows/missing/manual", json={})
    assert (r.status_code, error_of(r)) == (404, "not_found")
    r = call(daemon, "POST", path, json={"trigger_id": "no-such-trigger"})
    assert (r.status_code, error_of(r)) == (404, "not_found")


def test_it_fires_the_webhook_trigger_from_the_gateway_route(daemon: Daemon) -> None:
    deployed(daemon)
    r = call(daemon, "POST", "/api/v1/triggers/workflows/orders/webhook", json={"order": 7})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "accepted"
    events = json.loads(daemon.cli("history", "orders", "--json", "--limit", "50").stdout)
    [event] = [e for e in events if e["execution_id"] == r.json()["execution_id"]]
    assert event["trigger_type"] == "webhook"
    assert event["payload"]["body"] == {"order": 7}
    assert event["payload"]["user"] == "api-token@127.0.0.1"
    deployed(daemon, {"id": "no-hook", "triggers": [{"type": "manual"}]})
    r = call(daemon, "POST", "/api/v1/triggers/workflows/no-hook/webhook", json={})
    assert (r.status_code, error_of(r)) == (404, "not_found")


def test_it_answers_409_for_a_paused_workflow(daemon: Daemon) -> None:
    deployed(daemon, {"id": "paused", "triggers": [{"type": "manual"}, {"type": "webhook"}]})
    daemon.cli("pause", "paused")
    r = call(daemon, "POST", "/api/v1/triggers/workflows/paused/manual", json={"confirm": True})
    assert (r.status_code, error_of(r)) == (409, "conflict")
    assert "paused" in r.json()["detail"]


def test_it_serves_health_metrics_webhook_status_and_openapi(daemon: Daemon) -> None:
    deployed(daemon)
    health = call(daemon, "GET", "/health", auth=False)
    assert (health.status_code, health.json()["status"], health.json()["store"]) == (
        200,
        "ok",
        "ok",
    )
    assert (
        call(
            daemon, "POST", "/api/v1/public/webhook/workflow/orders", content=b"{}", auth=False
        ).status_code
        == 202
    )
    metrics = call(daemon, "GET", "/metrics", auth=False)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'wfsched_webhook_requests_total{code="202"}' in metrics.text
    status = call(daemon, "GET", "/api/v1/public/webhooks/status").json()
    assert {
        "workflow_id": "orders",
        "trigger_id": "webhook",
        "type": "webhook",
        "path": "/api/v1/public/webhook/workflow/orders",
        "health": "healthy",
    } in status["webhooks"]
    document = call(daemon, "GET", "/openapi.json", auth=False).json()
    assert document["openapi"].startswith("3.1")


def test_it_answers_unknown_routes_and_methods_with_json(daemon: Daemon) -> None:
    r = call(daemon, "GET", "/api/v1/nothing-here")
    assert (r.status_code, error_of(r)) == (404, "not_found")
    r = call(daemon, "PATCH", "/api/v1/deployment/workflows/orders/deploy")
    assert (r.status_code, error_of(r)) == (405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"POST", "PUT"}
    r = call(daemon, "POST", "/api/v1/public/webhooks/status")
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
    r = call(daemon, "POST", "/api/v1/public/webhooks/no-such-type", content=b"{}")
    assert (r.status_code, error_of(r)) == (404, "not_found")


def test_it_accepts_only_loopback_clients_without_a_token(open_daemon: Daemon) -> None:
    path = "/api/v1/deployment/workflows"
    accepted = [
        {},
        {"Origin": "http://localhost:3000"},
        {"X-Forwarded-For": "203.0.113.9"},  # ignored: server.trusted_proxies is empty
    ]
    for headers in accepted:
        assert call(open_daemon, "GET", path, auth=False, headers=headers).status_code == 200
    refused = [
        {"Host": "attacker.example"},  # DNS rebinding
        {"Origin": "https://attacker.example"},  # a cross-site page
        {"Origin": "null"},
    ]
    for headers in refused:
        r = call(open_daemon, "GET", path, auth=False, headers=headers)
        assert (r.status_code, error_of(r)) == (401, "unauthorized"), headers
    # The public routes stay public.
    r = call(open_daemon, "GET", "/health", auth=False, headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 200


# --- slow clients, on a real uvicorn with a short read deadline ----------------------------


@pytest.fixture(params=["uvicorn's protocol", "the daemon's protocol"])
def slow_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """An echo of the body's size; the daemon's protocol says when the body is all there
    (``BODY_RECEIVED``), and then it is read without a deadline."""

    async def echo(request: Request) -> Response:
        try:
            body = await read_body(request, 1024, timeout=0.5)
        except HttpError as exc:
            return error_response(exc.status, exc.code, exc.detail)
        return JSONResponse({"size": len(body), "received": BODY_RECEIVED in request.scope})

    port = free_port()
    daemons = request.param == "the daemon's protocol"
    config = uvicorn.Config(
        Starlette(routes=[Route("/", echo, methods=["POST"])]),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        http=protocol_class(HttpLimits()) if daemons else "auto",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: anyio.run(server.serve), daemon=True)
    thread.start()
    wait_for(lambda: server.started, message="uvicorn started")
    yield port
    server.should_exit = True
    thread.join(5)


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response: its headers and body can arrive in separate packets."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_it_answers_408_to_a_client_that_sends_its_body_too_slowly(slow_server: int) -> None:
    with socket.create_connection(("127.0.0.1", slow_server), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123")
        started = time.monotonic()
        answer = read_response(sock)
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"request_timeout" in answer
    assert elapsed < 3
    r = httpx.post(f"http://127.0.0.1:{slow_server}/", content=b"x" * 100)
    assert r.json()["size"] == 100


def test_the_daemons_protocol_says_when_the_body_is_all_there(
    slow_server: int, request: pytest.FixtureRequest
) -> None:
    # The request in one packet: the daemon's protocol holds the whole body when the app runs.
    with socket.create_connection(("127.0.0.1", slow_server), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello")
        whole = json.loads(read_response(sock).partition(b"\r\n\r\n")[2])
    assert whole["size"] == 5
    daemons = request.node.callspec.params["slow_server"] == "the daemon's protocol"
    assert whole["received"] is daemons


def test_a_body_said_to_be_received_but_arriving_in_parts_still_has_a_deadline() -> None:
    # BODY_RECEIVED promises the whole body in the first receive(); should a first part come
    # alone (the body read before by someone else, or a server that says so too early), the
    # rest is waited for within the deadline, not forever.
    parts = [{"type": "http.request", "body": b"{", "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def read() -> int:
        with anyio.fail_after(5):
            try:
                await receive_body(receive, None, 1024, timeout=0.2, received=True)
            except HttpError as exc:
                return exc.status
        return 200

    assert anyio.run(read) == 408


def test_it_records_nothing_for_refused_requests(daemon: Daemon, tmp_path: Path) -> None:
    deployed(daemon)
    before = len(json.loads(daemon.cli("history", "orders", "--json", "--limit", "1000").stdout))
    call(daemon, "POST", "/api/v1/triggers/workflows/orders/manual", json={"data": 1})
    call(daemon, "POST", "/api/v1/triggers/workflows/orders/webhook", auth=False, json={})
    call(
        daemon,
        "POST",
        "/api/v1/triggers/workflows/orders/webhook",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    call(daemon, "GET", "/api/v1/public/webhook/workflow/orders")
    after = len(json.loads(daemon.cli("history", "orders", "--json", "--limit", "1000").stdout))
    assert after == before
