"""The management API's handlers: deploy, undeploy and inspect workflows, fire them by hand.

The routes table puts every one of them behind :func:`wfsched.web.access.managed`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wfsched.errors import NotFound, Unavailable
from wfsched.manager import invoke
from wfsched.web.access import user_of
from wfsched.web.ingress import PREFIX
from wfsched.web.public import trigger_rows
from wfsched.web.requests import HttpError, parse_json, read_body, require_json
from wfsched.web.services import services_of

MANAGEMENT_BODY_LIMIT = 1024 * 1024


async def list_workflows(request: Request) -> Response:
    return JSONResponse(await services_of(request.app).deployments.list())


async def deploy(request: Request) -> Response:
    """POST creates or replaces a workflow, PUT only replaces one (404 when not deployed)."""
    services = services_of(request.app)
    deployments = services.deployments
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
    await services_of(request.app).deployments.undeploy([workflow_id])
    return JSONResponse({"workflow_id": workflow_id, "action": "undeployed"})


async def status(request: Request) -> Response:
    deployments = services_of(request.app).deployments
    return JSONResponse(await deployments.status(request.path_params["id"]))


async def manual(request: Request) -> Response:
    """Fire a workflow's manual trigger; ``{"confirm": true}`` where it requires confirmation."""
    require_json(request)
    body = parse_json(await read_body(request, MANAGEMENT_BODY_LIMIT), allow_empty=True)
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_json", 'send a JSON object {"confirm", "data"}')
    trigger_id = body.get("trigger_id")
    if trigger_id is not None and not isinstance(trigger_id, str):
        raise HttpError(400, "bad_request", "trigger_id must be a string")
    result = await services_of(request.app).deployments.fire_manual(
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
    """Fire a workflow's webhook trigger as an API caller (no webhook auth: management's)."""
    require_json(request)
    services = services_of(request.app)
    if services.manager.stopping:
        raise Unavailable("the daemon is stopping; nothing was recorded, retry shortly")
    trigger = await services.deployments.find_trigger(request.path_params["id"], kind="webhook")
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
    services = services_of(request.app)
    manager = services.manager
    failing = [t for t in trigger_rows(manager) if t["health"] != "healthy"]
    return JSONResponse(
        {
            "status": "ok" if not failing else "degraded",
            "running": manager.started(),
            "timers": len(manager.timer),
            "unhealthy": failing,
            # Every daemon on the store, from the heartbeats (what `wfsched list` shows).
            "daemon": await services.deployments.daemon(),
        }
    )


async def webhook_status(request: Request) -> Response:
    """Every running trigger that serves an ingress route, with the route's path."""
    routes = [
        {
            "workflow_id": workflow_id,
            "trigger_id": trigger_id,
            "type": kind,
            "path": (
                f"{PREFIX}{workflow_id}"
                if ingress == "workflow"
                else f"/api/v1/public/webhooks/{ingress}"
            ),
            "health": health,
        }
        for workflow_id, trigger_id, kind, ingress, health in services_of(
            request.app
        ).manager.ingress_routes()
    ]
    return JSONResponse({"status": "ok", "webhooks": routes})
