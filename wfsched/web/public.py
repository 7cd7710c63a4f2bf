"""The public routes served by Starlette: health, metrics, the OpenAPI document, and the
shared ingress routes (``POST /api/v1/public/webhooks/{name}``, e.g. GitHub App deliveries)
where one delivery is offered to every trigger of a type."""

from __future__ import annotations

import json
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wfsched.errors import StoreError, Unavailable
from wfsched.manager import TriggerManager
from wfsched.metrics import render
from wfsched.store import Store
from wfsched.web.ingress import inbound_of
from wfsched.web.openapi import document
from wfsched.web.requests import HttpError, read_body
from wfsched.web.services import services_of

SHARED_INGRESS_LIMIT = 25 * 1024 * 1024
"""GitHub's own payload cap: the largest body a shared ingress route reads."""


async def health(request: Request) -> Response:
    """200 when the store answers and commits; 503 (with why) when a webhook would get 503."""
    store = services_of(request.app).store
    try:
        with anyio.fail_after(3):
            await store.ping()
    except (StoreError, TimeoutError) as exc:
        return JSONResponse(
            {
                "status": "unavailable",
                "store": "unreachable",
                "detail": str(exc) or "the store did not answer within 3 s",
            },
            status_code=503,
        )
    refusal = await writable_of(request).error()
    if refusal is not None:
        return JSONResponse(
            {"status": "unavailable", "store": "unwritable", "detail": refusal},
            status_code=503,
        )
    triggers = trigger_rows(services_of(request.app).manager)
    return JSONResponse({"status": "ok", "store": "ok", "triggers": triggers})


async def metrics(request: Request) -> Response:
    return Response(render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    """The OpenAPI document, rendered on the first request and kept."""
    state = request.app.state
    body: bytes | None = getattr(state, "openapi_body", None)
    if body is None:
        # Trigger types add their own routes (e.g. the github ingress) to the document.
        types = [t.cls for t in services_of(request.app).manager.registry.all()]
        body = state.openapi_body = json.dumps(document(types), separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


async def shared_webhook(request: Request) -> Response:
    """Offer one delivery to every running trigger of the ingress type ``{name}``."""
    name = request.path_params["name"]
    if name == "status":  # the status route only answers GET
        raise HttpError(
            405, "method_not_allowed", "allowed: GET, HEAD", headers={"Allow": "GET, HEAD"}
        )
    services = services_of(request.app)
    manager = services.manager
    cls = manager.shared_ingress_type(name)
    body = await read_body(request, SHARED_INGRESS_LIMIT)
    # "Matched nothing" is an answer only when every deployed trigger was asked.
    if not await manager.settled():
        raise Unavailable(
            "triggers are starting, stopping or being redeployed, so this delivery cannot "
            "be checked against every deployed trigger; nothing was recorded, retry shortly"
        )
    outbound = await cls.receive_shared(
        inbound_of(request.scope, body),
        manager.shared_triggers(name),
        services.settings.sections.get(name, {}),
    )
    return JSONResponse(outbound.body, status_code=outbound.status, headers=dict(outbound.headers))


def trigger_rows(manager: TriggerManager) -> list[dict[str, Any]]:
    """Every running trigger's health, in workflow and trigger order."""
    return [
        {
            "workflow_id": workflow_id,
            "trigger_id": trigger_id,
            "type": kind,
            "health": health,
            "last_error": error,
        }
        for workflow_id, trigger_id, kind, health, error in manager.instances()
    ]


def writable_of(request: Request) -> WriteCheck:
    """The app's :class:`WriteCheck`, which ``create_app`` stored: one per app, so that
    ``/health`` requests share its probe."""
    check: WriteCheck = request.app.state.write_check
    return check


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
