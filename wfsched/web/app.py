"""Starlette app factory: ingress routes, management API, health, metrics, OpenAPI."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wfsched.config import Settings
from wfsched.deployments import DeploymentService
from wfsched.errors import NotFound, StoreError, Unavailable
from wfsched.manager import TriggerManager, invoke
from wfsched.metrics import render
from wfsched.store import Store
from wfsched.trigger import Inbound, Outbound
from wfsched.web import operations as ops
from wfsched.web.ingress import COUNTS, WorkflowIngress, http_error_of
from wfsched.web.openapi import document
from wfsched.web.requests import (
    HttpError,
    error_response,
    is_loopback,
    loopback_refusal,
    parse_json,
    read_body,
    repeated_header,
    require_json,
)

log = logging.getLogger("wfsched.web")
MANAGEMENT_BODY_LIMIT = 1024 * 1024
SHARED_INGRESS_LIMIT = 25 * 1024 * 1024
"""GitHub's own payload cap: the largest body a shared ingress route reads."""
Handler = Callable[[Request], Awaitable[Response]]

__all__ = ["HttpError", "WebServices", "create_app", "error_response", "parse_json", "read_body"]


@dataclass
class WebServices:
    """What the web layer needs from the daemon."""

    settings: Settings
    store: Store
    deployments: DeploymentService
    manager: TriggerManager
    api_token: str
    bind_host: str = ""
    """The address the server listens on; empty: ``server.host``."""


def public_bind_without_token(host: str, api_token: str) -> bool:
    """True when the server listens beyond loopback without a token: management is then closed.

    Loopback trust cannot hold there: a reverse proxy on the same host makes every client local.
    """
    return not api_token and not is_loopback(host)


def create_app(services: WebServices) -> WorkflowIngress:
    """Build the HTTP application.

    Management routes need the bearer token when one is set. Without one they serve loopback
    clients only, and nobody at all on a non-loopback bind: there a reverse proxy on the same
    host would make every remote client look local (403 ``api_token_required``).
    """
    deployments = services.deployments
    manager = services.manager
    token = services.api_token.encode()
    closed = public_bind_without_token(
        services.bind_host or services.settings.host, services.api_token
    )

    def management(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if closed:
                return error_response(
                    403,
                    "api_token_required",
                    "the server listens on a non-loopback address without server.api_token; "
                    "set server.api_token (WFSCHED_API_TOKEN) to use the management API",
                )
            if token:
                header = request.headers.get("authorization", "")
                given = header[7:].strip() if header[:7].lower() == "bearer " else ""
                if not hmac.compare_digest(given.encode(), token):
                    return error_response(
                        401,
                        "unauthorized",
                        "send Authorization: Bearer <server.api_token>",
                        {"WWW-Authenticate": "Bearer"},
                    )
            else:
                refusal = loopback_refusal(request)
                if refusal is not None:
                    return error_response(401, "unauthorized", refusal)
            return await handler(request)

        return guarded

    def user_of(request: Request) -> str:
        """Who fired, as management auth established it, never as the caller claims.

        ``api-token@<client>`` for a bearer-token holder, ``api@<client>`` for a token-less
        loopback caller; the client is the peer, or what a trusted proxy forwarded for.
        """
        client = request.client.host if request.client else "unknown"
        return f"api-token@{client}" if token else f"api@{client}"

    writable = WriteCheck(services.store)

    async def health(request: Request) -> Response:
        try:
            with anyio.fail_after(3):
                await services.store.ping()
        except (StoreError, TimeoutError) as exc:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "store": "unreachable",
                    "detail": str(exc) or "the store did not answer within 3 s",
                },
                status_code=503,
            )
        refusal = await writable.error()
        if refusal is not None:
            return JSONResponse(
                {"status": "unavailable", "store": "unwritable", "detail": refusal},
                status_code=503,
            )
        triggers = _trigger_health(manager)
        return JSONResponse({"status": "ok", "store": "ok", "triggers": triggers})

    async def metrics(request: Request) -> Response:
        return Response(render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def deploy(request: Request) -> Response:
        workflow_id = request.path_params["id"]
        require_json(request)
        document = parse_json(await read_body(request, MANAGEMENT_BODY_LIMIT))
        if isinstance(document, dict):
            document.setdefault("id", workflow_id)
            if document["id"] != workflow_id:
                raise HttpError(
                    422, "invalid_spec", f"the body's id {document['id']!r} differs from the path's"
                )
        spec = deployments.parse_document(document, from_api=True)
        exists = True
        try:
            await services.store.get_deployment(workflow_id)
        except NotFound:
            exists = False
        if request.method == "PUT" and not exists:
            raise NotFound(f"workflow {workflow_id!r} is not deployed; POST …/deploy creates it")
        [action] = await deployments.deploy([spec])
        result: dict[str, Any] = {**action, "warnings": deployments.warnings([spec])}
        return JSONResponse(result, status_code=201 if result["action"] == "created" else 200)

    async def undeploy(request: Request) -> Response:
        workflow_id = request.path_params["id"]
        await deployments.undeploy([workflow_id])
        return JSONResponse({"workflow_id": workflow_id, "action": "undeployed"})

    async def status(request: Request) -> Response:
        return JSONResponse(await deployments.status(request.path_params["id"]))

    async def manual(request: Request) -> Response:
        require_json(request)
        body = parse_json(await read_body(request, MANAGEMENT_BODY_LIMIT), allow_empty=True)
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise HttpError(400, "invalid_json", 'send a JSON object {"confirm", "data"}')
        trigger_id = body.get("trigger_id")
        if trigger_id is not None and not isinstance(trigger_id, str):
            raise HttpError(400, "bad_request", "trigger_id must be a string")
        result = await deployments.fire_manual(
            request.path_params["id"],
            body.get("data", {}),
            user=user_of(request),
            confirmed=body.get("confirm") is True,
            trigger_id=trigger_id,
        )
        return JSONResponse(
            {
                "execution_id": result.execution_id,
                "workflow_id": result.workflow_id,
                "status": result.status,
            },
            status_code=202,
        )

    async def gateway_webhook(request: Request) -> Response:
        require_json(request)
        if manager.stopping:
            raise Unavailable("the daemon is stopping; nothing was recorded, retry shortly")
        trigger = await deployments.find_trigger(request.path_params["id"], kind="webhook")
        body = await read_body(request, trigger.max_body_bytes)
        data = parse_json(body, allow_empty=True)
        result = await invoke(trigger, data, user=user_of(request), confirmed=True)
        return JSONResponse(
            {
                "execution_id": result.execution_id,
                "workflow_id": result.workflow_id,
                "status": "accepted",
            },
            status_code=202,
        )

    async def trigger_health(request: Request) -> Response:
        triggers = _trigger_health(manager)
        failing = [t for t in triggers if t["health"] != "healthy"]
        return JSONResponse(
            {
                "status": "ok" if not failing else "degraded",
                "running": len(manager.running),
                "timers": len(manager.timer),
                "unhealthy": failing,
            }
        )

    async def shared_webhook(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "status":  # the status route only answers GET
            raise HttpError(
                405, "method_not_allowed", "allowed: GET, HEAD", headers={"Allow": "GET, HEAD"}
            )
        cls = manager.shared_ingress_type(name)
        body = await read_body(request, SHARED_INGRESS_LIMIT)
        # "Matched nothing" is an answer only when every deployed trigger was asked.
        if not await manager.settled():
            raise Unavailable(
                "triggers are starting, stopping or being redeployed, so this delivery cannot "
                "be checked against every deployed trigger; nothing was recorded, retry shortly"
            )
        outbound = await cls.receive_shared(
            _inbound(request, body),
            manager.shared_triggers(name),
            services.settings.sections.get(name, {}),
        )
        return _outbound(outbound)

    async def webhook_status(request: Request) -> Response:
        routes = []
        for (workflow_id, trigger_id), run in sorted(manager.running.items()):
            if run.trigger.ingress is not None:
                path = (
                    f"/api/v1/public/webhook/workflow/{workflow_id}"
                    if run.trigger.ingress == "workflow"
                    else f"/api/v1/public/webhooks/{run.trigger.ingress}"
                )
                routes.append(
                    {
                        "workflow_id": workflow_id,
                        "trigger_id": trigger_id,
                        "type": run.trigger.type,
                        "path": path,
                        "health": run.ctx.health[0],
                    }
                )
        return JSONResponse({"status": "ok", "webhooks": routes})

    openapi_body: list[bytes] = []

    async def openapi(request: Request) -> Response:
        if not openapi_body:
            types = [t.cls for t in manager.registry.all()]
            openapi_body.append(json.dumps(document(types), separators=(",", ":")).encode())
        return Response(openapi_body[0], media_type="application/json")

    def wrap(handler: Handler, *, ingress: bool = False) -> Handler:
        async def call(request: Request) -> Response:
            try:
                repeated = repeated_header(request.scope["headers"])
                if repeated is not None:
                    raise HttpError(
                        400, "bad_request", f"the {repeated} header is repeated; send it once"
                    )
                response = await handler(request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
                err = http_error_of(exc, path=request.url.path, method=request.method)
                response = error_response(err.status, err.code, err.detail, err.headers)
            if ingress:
                COUNTS.inc(response.status_code)
            return response

        return call

    m = management
    routes = [
        Route("/health", wrap(health), methods=["GET"]),
        Route("/metrics", wrap(metrics), methods=["GET"]),
        Route("/openapi.json", wrap(openapi), methods=["GET"]),
        Route("/api/v1/deployment/workflows", wrap(m(ops.workflows)), methods=["GET", "POST"]),
        Route("/api/v1/deployment/workflows/{id}/pause", wrap(m(ops.pause)), methods=["POST"]),
        Route("/api/v1/deployment/workflows/{id}/resume", wrap(m(ops.resume)), methods=["POST"]),
        Route("/api/v1/deployment/workflows/{id}/export", wrap(m(ops.export)), methods=["GET"]),
        Route("/api/v1/executions", wrap(m(ops.executions)), methods=["GET"]),
        Route("/api/v1/executions/prune", wrap(m(ops.prune)), methods=["POST"]),
        Route(
            "/api/v1/executions/{execution_id}/redeliver", wrap(m(ops.redeliver)), methods=["POST"]
        ),
        Route("/api/v1/check", wrap(m(ops.check)), methods=["GET"]),
        Route("/api/v1/plugins", wrap(m(ops.plugins)), methods=["GET"]),
        Route("/api/v1/deployment/workflows/{id}/deploy", wrap(m(deploy)), methods=["POST", "PUT"]),
        Route("/api/v1/deployment/workflows/{id}/undeploy", wrap(m(undeploy)), methods=["DELETE"]),
        Route("/api/v1/deployment/workflows/{id}/status", wrap(m(status)), methods=["GET"]),
        Route("/api/v1/triggers/workflows/{id}/manual", wrap(m(manual)), methods=["POST"]),
        Route(
            "/api/v1/triggers/workflows/{id}/webhook", wrap(m(gateway_webhook)), methods=["POST"]
        ),
        Route("/api/v1/triggers/workflows/{id}/status", wrap(m(status)), methods=["GET"]),
        Route("/api/v1/triggers/health", wrap(m(trigger_health)), methods=["GET"]),
        Route("/api/v1/public/webhooks/status", wrap(m(webhook_status)), methods=["GET"]),
        Route(
            "/api/v1/public/webhooks/{name}", wrap(shared_webhook, ingress=True), methods=["POST"]
        ),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_exception, Exception: _server_error}
    )
    app.state.services = services
    return WorkflowIngress(app, manager.ingress_trigger, miss=manager.ingress_after_miss)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (route without that method) as JSON errors."""
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "bad_request")
    detail = (
        f"no route {request.url.path}"
        if exc.status_code == 404
        else f"allowed: {exc.headers.get('Allow', '')}"
        if exc.status_code == 405 and exc.headers
        else str(exc.detail)
    )
    return error_response(exc.status_code, code, detail, dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    """Outside any route handler (should not happen): still JSON, never a traceback."""
    return error_response(500, "internal_error", "unexpected server error; it has been logged")


def _trigger_health(manager: TriggerManager) -> list[dict[str, Any]]:
    out = []
    for (workflow_id, trigger_id), run in sorted(manager.running.items()):
        health, error = run.ctx.health
        out.append(
            {
                "workflow_id": workflow_id,
                "trigger_id": trigger_id,
                "type": run.trigger.type,
                "health": health,
                "last_error": error,
            }
        )
    return out


class WriteCheck:
    """Whether the store can commit, for ``/health``: a webhook gets 503 when it cannot.

    The probe is a small commit that queues with the webhooks' commits, and ``/health`` is
    public, so it runs at most once per ``every`` seconds; calls in between share its answer.
    """

    def __init__(self, store: Store, every: float = 1.0, timeout: float = 3.0) -> None:
        self._store = store
        self._every = every
        self._timeout = timeout
        self._lock = anyio.Lock()
        self._checked_at = -every
        self._error: str | None = None

    async def error(self) -> str | None:
        """None when the last probe (at most ``every`` seconds old) committed, else why not."""
        async with self._lock:
            if anyio.current_time() - self._checked_at >= self._every:
                try:
                    with anyio.fail_after(self._timeout):
                        await self._store.check_writable()
                    self._error = None
                except StoreError as exc:
                    self._error = str(exc)
                except TimeoutError:
                    self._error = f"the store did not commit a write within {self._timeout:g} s"
                self._checked_at = anyio.current_time()
            return self._error


def _inbound(request: Request, body: bytes) -> Inbound:
    scope = request.scope
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    headers: dict[str, str] = {}
    for key, value in raw:
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    query = dict(request.query_params) if scope.get("query_string") else {}
    client = scope.get("client")
    return Inbound(
        method=scope["method"],
        path=scope["path"],
        query=query,
        headers=headers,
        raw_headers=raw,
        body=body,
        client=client[0] if client else None,
    )


def _outbound(outbound: Outbound) -> Response:
    return JSONResponse(outbound.body, status_code=outbound.status, headers=dict(outbound.headers))
