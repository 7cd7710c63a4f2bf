"""The OpenAPI 3.1 document of every HTTP route (served at ``/openapi.json``).

Written by hand rather than generated so that it states the HTTP contract (the
shapes users rely on), including every error status each route can answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wfsched import __version__
from wfsched.trigger import BaseTrigger
from wfsched.web import openapi_operations as operations
from wfsched.web.schemas import JSON, STR, ref, schemas


def _json(schema: dict[str, Any], description: str, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = {
            name: {"description": text, "schema": STR} for name, text in headers.items()
        }
    return out


_ERRORS: dict[str, dict[str, Any]] = {
    "400": _json(
        ref("Error"),
        "Malformed request: invalid JSON (`invalid_json`), a repeated "
        "header, an invalid Content-Length (`bad_request`)",
    ),
    "401": _json(ref("Error"), "Missing or wrong credentials (`unauthorized`)"),
    "403": _json(
        ref("Error"),
        "The server listens on a non-loopback address without server.api_token: the "
        "management API is closed (`api_token_required`)",
    ),
    "404": _json(ref("Error"), "Unknown workflow or trigger (`not_found`)"),
    "405": _json(
        ref("Error"),
        "Method not allowed (`method_not_allowed`)",
        Allow="The methods this route accepts",
    ),
    "408": _json(ref("Error"), "The body was not received in time (`request_timeout`)"),
    "409": _json(
        ref("Error"),
        "`confirmation_required`, or a paused workflow / disabled trigger (`conflict`)",
    ),
    "413": _json(ref("Error"), "The body exceeds the route's limit (`payload_too_large`)"),
    "415": _json(ref("Error"), "The Content-Type is not JSON (`unsupported_media_type`)"),
    "422": _json(
        ref("Error"),
        "The workflow spec is invalid (`invalid_spec`), or uses an env:/file: secret "
        "reference, which only the CLI on the host may; the detail names the trigger and field",
    ),
    "429": _json(
        ref("Error"),
        "Over the trigger's rate_limit (`rate_limited`)",
        **{"Retry-After": "Seconds to wait"},
    ),
    "503": _json(
        ref("Error"),
        "The store is unreachable (`store_unavailable`), or triggers are starting, stopping "
        "or being redeployed (`unavailable`); nothing was recorded",
        **{"Retry-After": "Seconds to wait"},
    ),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ERRORS[code] for code in codes}


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Workflow id",
    "schema": {"type": "string"},
    "example": "orders",
}
_MANAGEMENT: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_JSON_BODY_ERRORS = ("400", "401", "408", "413", "415")


def _ingress_operation(method: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"webhook{method.capitalize()}",
        "tags": ["ingress"],
        "summary": "Public webhook ingress of one workflow",
        "description": (
            "Accepted methods, body limit, auth (none, token, basic, hmac, standard-webhooks, "
            "jwt), rate limit and dedupe header are set per trigger. Answered 202 only after "
            "the event is committed; a repeated delivery (same webhook-id or dedupe header) "
            "answers 202 with the first execution id."
        ),
        "parameters": [_ID],
        "security": [{}],
        "responses": {
            "202": _json(ref("Accepted"), "Recorded"),
            **_errors("400", "401", "404", "405", "408", "413", "429", "503"),
        },
    }
    if method != "get":
        op["requestBody"] = {
            "required": False,
            "content": {
                JSON: {"schema": {}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "text/plain": {"schema": STR},
            },
        }
    return op


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": STR}  # fmt: skip


def _explain_operation() -> dict[str, Any]:
    return {
        "operationId": "explain",
        "tags": ["deployment"],
        "summary": "Why each occurrence of the workflow's triggers did or didn't fire",
        "description": (
            "Occurrences in a window, sorted by `at`: fired, deduplicated, skipped, missed, "
            "paused, pending (time triggers), refused and filtered (inbound triggers). The "
            "window includes `since` and excludes `until` (default now); `at` asks about the "
            "60 s on either side of it; without `at`/`since`, the last hour."
        ),
        "parameters": [
            _ID,
            _query("trigger", "One trigger id only"),
            _query("at", "ISO 8601 instant (not with since/until)"),
            _query("since", "ISO 8601 window start"),
            _query("until", "ISO 8601 window end (default now)"),
        ],
        "security": _MANAGEMENT,
        "responses": {
            "200": _json(ref("Explain"), "The occurrences"),
            **_errors("400", "401", "404", "503"),
        },
    }


def _paths() -> dict[str, Any]:
    deploy_body = {"required": True, "content": {JSON: {"schema": ref("WorkflowSpec")}}}
    status_op = {
        "parameters": [_ID],
        "security": _MANAGEMENT,
        "responses": {
            "200": _json(ref("WorkflowStatus"), "Deployment and per-trigger status"),
            **_errors("400", "401", "404", "503"),
        },
    }
    return {
        "/api/v1/deployment/workflows/{id}/deploy": {
            "post": {
                "operationId": "deploy",
                "tags": ["deployment"],
                "summary": "Deploy (create or update) a workflow from a JSON spec",
                "parameters": [_ID],
                "security": _MANAGEMENT,
                "requestBody": deploy_body,
                "responses": {
                    "201": _json(ref("DeployResult"), "Created"),
                    "200": _json(ref("DeployResult"), "Updated or unchanged"),
                    **_errors(*_JSON_BODY_ERRORS, "422", "503"),
                },
            },
            "put": {
                "operationId": "updateDeployment",
                "tags": ["deployment"],
                "summary": "Update a deployed workflow",
                "parameters": [_ID],
                "security": _MANAGEMENT,
                "requestBody": deploy_body,
                "responses": {
                    "200": _json(ref("DeployResult"), "Updated or unchanged"),
                    **_errors(*_JSON_BODY_ERRORS, "404", "422", "503"),
                },
            },
        },
        "/api/v1/deployment/workflows/{id}/undeploy": {
            "delete": {
                "operationId": "undeploy",
                "tags": ["deployment"],
                "summary": "Undeploy a workflow; its triggers stop",
                "parameters": [_ID],
                "security": _MANAGEMENT,
                "responses": {
                    "200": _json(ref("Undeployed"), "Undeployed"),
                    **_errors("400", "401", "404", "503"),
                },
            }
        },
        "/api/v1/deployment/workflows/{id}/status": {
            "get": {
                "operationId": "deploymentStatus",
                "tags": ["deployment"],
                "summary": "Deployment and trigger status",
                **status_op,
            }
        },
        "/api/v1/deployment/workflows/{id}/explain": {"get": _explain_operation()},
        "/api/v1/triggers/workflows/{id}/manual": {
            "post": {
                "operationId": "fireManual",
                "tags": ["triggers"],
                "summary": "Fire the workflow's manual trigger",
                "parameters": [_ID],
                "security": _MANAGEMENT,
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": ref("ManualRequest")}},
                },
                "responses": {
                    "202": _json(ref("Fired"), "Recorded"),
                    **_errors(*_JSON_BODY_ERRORS, "404", "409", "503"),
                },
            }
        },
        "/api/v1/triggers/workflows/{id}/webhook": {
            "post": {
                "operationId": "fireWebhookFromGateway",
                "tags": ["triggers"],
                "summary": "Fire the webhook trigger from a trusted gateway",
                "description": "The body (any JSON) becomes the payload's body; the "
                "trigger's own auth is not checked (management auth is).",
                "parameters": [_ID],
                "security": _MANAGEMENT,
                "requestBody": {"required": False, "content": {JSON: {"schema": {}}}},
                "responses": {
                    "202": _json(ref("Accepted"), "Recorded"),
                    **_errors(*_JSON_BODY_ERRORS, "404", "409", "503"),
                },
            }
        },
        "/api/v1/triggers/workflows/{id}/status": {
            "get": {
                "operationId": "triggerStatus",
                "tags": ["triggers"],
                "summary": "Trigger states of a workflow",
                **status_op,
            }
        },
        "/api/v1/triggers/health": {
            "get": {
                "operationId": "triggersHealth",
                "tags": ["triggers"],
                "summary": "Trigger subsystem health",
                "security": _MANAGEMENT,
                "responses": {
                    "200": _json(ref("TriggersHealth"), "Health"),
                    **_errors("400", "401"),
                },
            }
        },
        "/api/v1/public/webhook/workflow/{id}": {
            m: _ingress_operation(m) for m in ("get", "post", "put", "patch", "delete")
        },
        "/api/v1/public/webhooks/status": {
            "get": {
                "operationId": "webhookStatus",
                "tags": ["ingress"],
                "summary": "Webhook ingress status (a management route)",
                "security": _MANAGEMENT,
                "responses": {
                    "200": _json(ref("WebhookStatus"), "Served webhooks"),
                    **_errors("400", "401"),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "tags": ["service"],
                "summary": "Liveness and store",
                "security": [{}],
                "responses": {
                    "200": _json(ref("HealthOk"), "Healthy"),
                    "503": _json(ref("HealthUnavailable"), "Store unreachable"),
                    **_errors("400"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["service"],
                "summary": "Prometheus metrics",
                "security": [{}],
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": STR}},
                    },
                    **_errors("400"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["service"],
                "summary": "This document",
                "security": [{}],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors("400")},
            }
        },
    }


def _with_management_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Every management operation may also answer 403 ``api_token_required``."""
    for item in paths.values():
        for op in item.values():
            if op.get("security") == _MANAGEMENT:
                op["responses"] = {**op["responses"], **_errors("403")}
    return paths


def _plugin_paths(trigger_types: Iterable[type[BaseTrigger]]) -> dict[str, Any]:
    """The routes trigger types serve besides the core's (``BaseTrigger.openapi_paths``)."""
    paths: dict[str, Any] = {}
    for cls in trigger_types:
        paths.update(_filled(cls.openapi_paths()))
    return paths


def _filled(paths: dict[str, Any]) -> dict[str, Any]:
    """``paths`` whose bare error responses get the error body and description every route
    has."""
    for item in paths.values():
        for op in item.values():
            op["responses"] = {
                code: {**_ERRORS[code], **response}
                if code[0] in "45" and "content" not in response and code in _ERRORS
                else response
                for code, response in op["responses"].items()
            }
    return paths


def document(trigger_types: Iterable[type[BaseTrigger]] = ()) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the wfsched HTTP API and of the routes
    ``trigger_types`` add (the registered ones: ``Registry.all()``)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wfsched",
            "version": __version__,
            "description": (
                "Durable workflow triggers. Management routes (/api/v1/deployment/…, "
                "/api/v1/triggers/…, /api/v1/executions…, /api/v1/check, /api/v1/plugins, "
                "GET /api/v1/public/webhooks/status) need "
                "`Authorization: Bearer <server.api_token>` when a token is set; without one "
                "they accept loopback clients of a loopback-bound server only, and answer 403 "
                "`api_token_required` on any other bind. Errors are "
                'JSON `{"error", "detail"}`.'
            ),
        },
        "paths": _with_management_errors(
            {**_paths(), **_filled(operations.paths()), **_plugin_paths(trigger_types)}
        ),
        "components": {
            "schemas": {**schemas(), **operations.schemas()},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "server.api_token",
                }
            },
        },
    }
