"""The HTTP application: the one routes table, and ``create_app`` serving it.

Handlers are module-level functions (:mod:`wfsched.web.management`, :mod:`wfsched.web.public`,
:mod:`wfsched.web.ingress`) that find the daemon's services on the app
(:func:`wfsched.web.services.services_of`). The table also says how each is answered:
``public``, ``management`` (behind the management API's access rule, :mod:`wfsched.web.access`)
or ``shared_ingress``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from wfsched import otel
from wfsched.httpdirect import Exchange
from wfsched.httplimits import CYCLE
from wfsched.web import management as api
from wfsched.web import operations as ops
from wfsched.web.access import Access, managed, public_bind_without_token
from wfsched.web.errors import Handler, answering, http_exception, server_error
from wfsched.web.explain import explain
from wfsched.web.ingress import WorkflowWebhookRoute
from wfsched.web.public import WriteCheck, health, metrics, openapi, shared_webhook
from wfsched.web.requests import HttpError, error_response, parse_json, read_body
from wfsched.web.services import WebServices
from wfsched.web.ui import mount as dashboard

__all__ = [
    "HttpError",
    "WebServices",
    "create_app",
    "error_response",
    "parse_json",
    "public_bind_without_token",
    "read_body",
    "routes",
]


def public(handler: Handler) -> Handler:
    """A public route: repeated single headers refused, every failure a JSON error."""
    return answering(handler)


def management(handler: Handler) -> Handler:
    """A management route: a public one behind the management API's access rule."""
    return answering(managed(handler))


def shared_ingress(handler: Handler) -> Handler:
    """A public webhook route: its answers also count in ``wfsched_webhook_requests_total``."""
    return answering(handler, counted=True)


def routes() -> list[BaseRoute]:
    """Every route the daemon serves, in match order.

    The per-workflow webhook route comes first: it is the hot path, matched by one prefix
    test (and :class:`Edge` tries it before anything else). ``webhooks/status`` precedes
    ``webhooks/{name}``, which answers it 405 for any method but GET.
    """
    return [
        WorkflowWebhookRoute(),
        Route("/health", public(health), methods=["GET"]),
        Route("/metrics", public(metrics), methods=["GET"]),
        Route("/openapi.json", public(openapi), methods=["GET"]),
        Route("/api/v1/deployment/workflows", management(ops.workflows), methods=["GET", "POST"]),
        Route("/api/v1/deployment/workflows/{id}/pause", management(ops.pause), methods=["POST"]),
        Route("/api/v1/deployment/workflows/{id}/resume", management(ops.resume), methods=["POST"]),
        Route("/api/v1/deployment/workflows/{id}/export", management(ops.export), methods=["GET"]),
        Route("/api/v1/executions", management(ops.executions), methods=["GET"]),
        Route("/api/v1/executions/prune", management(ops.prune), methods=["POST"]),
        Route(
            "/api/v1/executions/{execution_id}/redeliver",
            management(ops.redeliver),
            methods=["POST"],
        ),
        Route("/api/v1/check", management(ops.check), methods=["GET"]),
        Route("/api/v1/plugins", management(ops.plugins), methods=["GET"]),
        Route("/api/v1/density", management(ops.density), methods=["GET"]),
        Route(
            "/api/v1/deployment/workflows/{id}/deploy",
            management(api.deploy),
            methods=["POST", "PUT"],
        ),
        Route(
            "/api/v1/deployment/workflows/{id}/undeploy",
            management(api.undeploy),
            methods=["DELETE"],
        ),
        Route("/api/v1/deployment/workflows/{id}/status", management(api.status), methods=["GET"]),
        Route("/api/v1/deployment/workflows/{id}/explain", management(explain), methods=["GET"]),
        Route("/api/v1/triggers/workflows/{id}/manual", management(api.manual), methods=["POST"]),
        Route(
            "/api/v1/triggers/workflows/{id}/webhook",
            management(api.gateway_webhook),
            methods=["POST"],
        ),
        Route("/api/v1/triggers/workflows/{id}/status", management(api.status), methods=["GET"]),
        Route("/api/v1/triggers/health", management(api.trigger_health), methods=["GET"]),
        Route("/api/v1/public/webhooks/status", management(api.webhook_status), methods=["GET"]),
        Route("/api/v1/public/webhooks/{name}", shared_ingress(shared_webhook), methods=["POST"]),
        dashboard(),  # /ui: its own guard (a browser signs in for a cookie, no bearer header)
    ]


class Edge(Starlette):
    """The HTTP application: Starlette serving the routes table.

    The table's per-workflow webhook route is tried before Starlette's middleware and routing
    loop: it answers every failure itself, and skipping them saves about a quarter of the web
    layer's own cost per webhook. Every other request takes Starlette's way through the table.

    Handlers find ``services`` on the app (:func:`wfsched.web.services.services_of`), the
    management access rule and the store's write check on ``app.state``.
    """

    def __init__(self, routes: list[BaseRoute], services: WebServices) -> None:
        super().__init__(
            routes=routes,
            exception_handlers={HTTPException: http_exception, Exception: server_error},
        )
        [self.hot] = [r for r in routes if isinstance(r, WorkflowWebhookRoute)]
        self.services = services
        # The DirectRoute of the daemon's protocol (wfsched.httpdirect): the requests it serves
        # without ASGI are the hot route's, answered by it for this app.
        self.takes: Callable[[bytes, bytes], bool] = self.hot.takes
        self.serve: Callable[[Exchange], Coroutine[Any, Any, None]] = partial(
            self.hot.serve, app=self
        )
        self.state.access = Access.of(services)
        self.state.write_check = WriteCheck(services.store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The protocol's cycle (weakly held), for the webhook route's one-write answer.
        ref = scope.pop(CYCLE, None)
        cycle = None if ref is None else ref()
        if otel.ENABLED and scope["type"] == "http" and otel.SCOPE_KEY not in scope:
            # Ingress requests in a SERVER span (wfsched[otel] configured); calls back in, marked.
            # The span reads the answer from ``send``: the cycle is not used.
            await otel.receive_span(self, scope, receive, send)
            return
        if self.hot.matches(scope)[0] is Match.FULL:
            scope["app"] = self
            await self.hot.handle(scope, receive, send, cycle)
        else:
            await super().__call__(scope, receive, send)


def create_app(services: WebServices) -> Edge:
    """Build the HTTP application serving :func:`routes` with ``services``.

    Management routes need the bearer token when one is set. Without one they serve loopback
    clients only, and nobody at all on a non-loopback bind: there a reverse proxy on the same
    host would make every remote client look local (403 ``api_token_required``).
    """
    return Edge(routes(), services)
