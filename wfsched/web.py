"""Starlette app factory: ingress routes, management API, health, metrics, OpenAPI."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wfsched.config import Settings
from wfsched.deployments import DeploymentService
from wfsched.errors import AuthError, Conflict, NotFound, StoreError, WfschedError
from wfsched.metrics import WEBHOOK_REQUESTS, render
from wfsched.runtime import TriggerManager, invoke
from wfsched.spec import InvalidSpecs
from wfsched.store import Store
from wfsched.trigger import Inbound, Outbound

log = logging.getLogger("wfsched.web")
MAX_JSON_DEPTH = 64
BODY_READ_TIMEOUT = 10.0
MANAGEMENT_BODY_LIMIT = 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """An error answered as ``{"error", "detail"}`` with a status code."""

    def __init__(self, status: int, code: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def error_response(status: int, code: str, detail: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


@dataclass
class WebServices:
    """What the web layer needs from the daemon."""

    settings: Settings
    store: Store
    deployments: DeploymentService
    manager: TriggerManager
    api_token: str


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(body: bytes, *, allow_empty: bool = False) -> Any:
    """Parse a JSON body; HttpError 400 ``invalid_json`` on bad bytes, syntax or nesting."""
    if not body.strip():
        if allow_empty:
            return None
        raise HttpError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise HttpError(400, "invalid_json", "the body is not valid UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise HttpError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise HttpError(400, "invalid_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing with 413 as soon as it exceeds ``limit`` and 408 when slow."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HttpError(413, "payload_too_large", f"the body exceeds {limit} bytes")
        except ValueError:
            raise HttpError(400, "bad_request", "invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(BODY_READ_TIMEOUT) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "payload_too_large", f"the body exceeds {limit} bytes")
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise HttpError(408, "request_timeout", "the body was not received in time")
    return b"".join(chunks)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(services: WebServices) -> Starlette:
    """Build the HTTP application."""
    deployments = services.deployments
    manager = services.manager

    def management(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            token = services.api_token
            if token:
                header = request.headers.get("authorization", "")
                given = header[7:] if header[:7].lower() == "bearer " else ""
                if not hmac.compare_digest(given.encode(), token.encode()):
                    return error_response(401, "unauthorized",
                                          "send Authorization: Bearer <server.api_token>")
            elif not _is_loopback(request.client.host if request.client else None):
                return error_response(401, "unauthorized", "the management API accepts "
                                      "loopback clients only unless server.api_token is set")
            return await handler(request)
        return guarded

    def user_of(request: Request) -> str:
        client = request.client.host if request.client else "unknown"
        return request.headers.get("x-wfsched-user") or f"api@{client}"

    async def health(request: Request) -> Response:
        try:
            with anyio.fail_after(3):
                await services.store.ping()
        except (StoreError, TimeoutError) as exc:
            return JSONResponse({"status": "unavailable", "store": "unreachable",
                                 "detail": str(exc)}, status_code=503)
        triggers = _trigger_health(manager)
        return JSONResponse({"status": "ok", "store": "ok", "triggers": triggers})

    async def metrics(request: Request) -> Response:
        return Response(render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def list_workflows(request: Request) -> Response:
        return JSONResponse(await deployments.list())

    async def deploy(request: Request) -> Response:
        workflow_id = request.path_params["id"]
        document = parse_json(await read_body(request, MANAGEMENT_BODY_LIMIT))
        if isinstance(document, dict):
            document.setdefault("id", workflow_id)
            if document["id"] != workflow_id:
                raise HttpError(422, "invalid_spec",
                                f"the body's id {document['id']!r} differs from the path's")
        spec = deployments.parse_document(document)
        exists = True
        try:
            await services.store.get_deployment(workflow_id)
        except NotFound:
            exists = False
        if request.method == "PUT" and not exists:
            raise NotFound(f"workflow {workflow_id!r} is not deployed; POST …/deploy creates it")
        [result] = await deployments.deploy([spec])
        result["warnings"] = deployments.warnings([spec])
        return JSONResponse(result, status_code=201 if result["action"] == "created" else 200)

    async def undeploy(request: Request) -> Response:
        workflow_id = request.path_params["id"]
        await deployments.undeploy([workflow_id])
        return JSONResponse({"workflow_id": workflow_id, "action": "undeployed"})

    async def status(request: Request) -> Response:
        return JSONResponse(await deployments.status(request.path_params["id"]))

    async def manual(request: Request) -> Response:
        body = parse_json(await read_body(request, MANAGEMENT_BODY_LIMIT), allow_empty=True) or {}
        if not isinstance(body, dict):
            raise HttpError(400, "invalid_json", "send a JSON object {\"confirm\", \"data\"}")
        result = await deployments.fire_manual(
            request.path_params["id"], body.get("data", {}), user=user_of(request),
            confirmed=body.get("confirm") is True, trigger_id=body.get("trigger_id"))
        return JSONResponse({"execution_id": result.execution_id,
                             "workflow_id": result.workflow_id, "status": result.status},
                            status_code=202)

    async def gateway_webhook(request: Request) -> Response:
        trigger = await deployments.find_trigger(request.path_params["id"], kind="webhook")
        body = await read_body(request, trigger.max_body_bytes)
        data = parse_json(body, allow_empty=True)
        result = await invoke(trigger, data, user=user_of(request), confirmed=True)
        return JSONResponse({"execution_id": result.execution_id,
                             "workflow_id": result.workflow_id, "status": "accepted"},
                            status_code=202)

    async def trigger_health(request: Request) -> Response:
        triggers = _trigger_health(manager)
        failing = [t for t in triggers if t["health"] != "healthy"]
        return JSONResponse({"status": "ok" if not failing else "degraded",
                             "running": len(manager.running), "timers": len(manager.timer),
                             "unhealthy": failing})

    async def public_webhook(request: Request) -> Response:
        workflow_id = request.path_params["id"]
        try:
            trigger = manager.ingress_trigger(workflow_id)
        except NotFound:
            raise HttpError(404, "not_found", f"no active webhook trigger for {workflow_id!r}")
        if not trigger.allows_method(request.method):
            allowed = ", ".join(m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                                if trigger.allows_method(m))
            raise HttpError(405, "method_not_allowed", f"allowed: {allowed}",
                            headers={"Allow": allowed})
        body = await read_body(request, trigger.max_body_bytes)
        return _outbound(await trigger.receive(_inbound(request, body)))

    async def shared_webhook(request: Request) -> Response:
        name = request.path_params["name"]
        cls = manager.shared_ingress_type(name)
        body = await read_body(request, 25 * 1024 * 1024)
        outbound = await cls.receive_shared(_inbound(request, body), manager.shared_triggers(name),
                                            services.settings.sections.get(name, {}))
        return _outbound(outbound)

    async def webhook_status(request: Request) -> Response:
        routes = []
        for (workflow_id, trigger_id), run in sorted(manager.running.items()):
            if run.trigger.ingress is not None:
                path = (f"/api/v1/public/webhook/workflow/{workflow_id}"
                        if run.trigger.ingress == "workflow"
                        else f"/api/v1/public/webhooks/{run.trigger.ingress}")
                routes.append({"workflow_id": workflow_id, "trigger_id": trigger_id,
                               "type": run.trigger.type, "path": path,
                               "health": run.ctx.health[0]})
        return JSONResponse({"status": "ok", "webhooks": routes})

    async def openapi(request: Request) -> Response:
        from wfsched.openapi import document

        return JSONResponse(document())

    def wrap(handler: Handler, *, ingress: bool = False) -> Handler:
        async def call(request: Request) -> Response:
            try:
                response = await handler(request)
            except HttpError as exc:
                response = error_response(exc.status, exc.code, exc.detail, exc.headers)
            except InvalidSpecs as exc:
                response = error_response(422, "invalid_spec", str(exc))
            except AuthError as exc:
                response = error_response(401, "unauthorized", str(exc))
            except NotFound as exc:
                response = error_response(404, "not_found", str(exc))
            except Conflict as exc:
                code = str(exc) if str(exc) == "confirmation_required" else "conflict"
                detail = ("this trigger requires confirmation: send {\"confirm\": true}"
                          if code == "confirmation_required" else str(exc))
                response = error_response(409, code, detail)
            except StoreError as exc:
                log.warning("store unavailable", extra={"error": str(exc)})
                response = error_response(503, "store_unavailable", "the store is unreachable; "
                                          "nothing was recorded, retry later",
                                          {"Retry-After": "5"})
            except WfschedError as exc:
                response = error_response(400, "bad_request", str(exc))
            if ingress:
                WEBHOOK_REQUESTS.labels(str(response.status_code)).inc()
            return response
        return call

    all_methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    m = management
    routes = [
        Route("/health", wrap(health), methods=["GET"]),
        Route("/metrics", wrap(metrics), methods=["GET"]),
        Route("/openapi.json", wrap(openapi), methods=["GET"]),
        Route("/api/v1/deployment/workflows", wrap(m(list_workflows)), methods=["GET"]),
        Route("/api/v1/deployment/workflows/{id}/deploy", wrap(m(deploy)), methods=["POST", "PUT"]),
        Route("/api/v1/deployment/workflows/{id}/undeploy", wrap(m(undeploy)), methods=["DELETE"]),
        Route("/api/v1/deployment/workflows/{id}/status", wrap(m(status)), methods=["GET"]),
        Route("/api/v1/triggers/workflows/{id}/manual", wrap(m(manual)), methods=["POST"]),
        Route("/api/v1/triggers/workflows/{id}/webhook", wrap(m(gateway_webhook)),
              methods=["POST"]),
        Route("/api/v1/triggers/workflows/{id}/status", wrap(m(status)), methods=["GET"]),
        Route("/api/v1/triggers/health", wrap(m(trigger_health)), methods=["GET"]),
        Route("/api/v1/public/webhook/workflow/{id}", wrap(public_webhook, ingress=True),
              methods=all_methods),
        Route("/api/v1/public/webhooks/status", wrap(webhook_status), methods=["GET"]),
        Route("/api/v1/public/webhooks/{name}", wrap(shared_webhook, ingress=True),
              methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _trigger_health(manager: TriggerManager) -> list[dict[str, Any]]:
    out = []
    for (workflow_id, trigger_id), run in sorted(manager.running.items()):
        health, error = run.ctx.health
        out.append({"workflow_id": workflow_id, "trigger_id": trigger_id,
                    "type": run.trigger.type, "health": health, "last_error": error})
    return out


def _inbound(request: Request, body: bytes) -> Inbound:
    raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers.raw]
    headers: dict[str, str] = {}
    for key, value in raw:
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Inbound(method=request.method, path=request.url.path,
                   query=dict(request.query_params), headers=headers, raw_headers=raw,
                   body=body, client=request.client.host if request.client else None)


def _outbound(outbound: Outbound) -> Response:
    return JSONResponse(outbound.body, status_code=outbound.status, headers=dict(outbound.headers))
