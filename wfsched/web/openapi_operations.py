"""The OpenAPI path items and schemas of the routes in ``wfsched.web.operations``.

Error responses are left bare (``{}``): the document gives each the JSON error body and the
standard description of its status.
"""

from __future__ import annotations

from typing import Any

from wfsched.web.schemas import JSON, STR, obj, ref

_MANAGEMENT: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_INSTANT = {"type": ["string", "null"], "format": "date-time"}
_NULLABLESTR = {"type": ["string", "null"]}


def _id(name: str = "id", description: str = "Workflow id") -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": STR,
    }


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size")
_CURSOR = _q("cursor", STR, "The next_cursor of the page before (opaque)")


def _ok(schema: dict[str, Any], description: str, media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _op(
    op_id: str,
    tag: str,
    summary: str,
    ok: dict[str, Any],
    errors: tuple[str, ...],
    *,
    parameters: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "security": _MANAGEMENT,
        "responses": {**ok, **{code: {} for code in ("400", "401", *errors)}},
    }
    if parameters:
        out["parameters"] = list(parameters)
    if body is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return out


def paths() -> dict[str, Any]:
    """The path items of the operations routes."""
    state_changed = {"200": _ok(ref("StateChanged"), "Done")}
    return {
        "/api/v1/deployment/workflows": {
            "get": _op(
                "listDeployments",
                "deployment",
                "Deployments sorted by id; with limit, one page",
                {
                    "200": _ok(
                        {
                            "oneOf": [
                                {"type": "array", "items": ref("Workflow")},
                                ref("WorkflowPage"),
                            ]
                        },
                        "All deployments (a list), or with limit one page",
                    )
                },
                ("503",),
                parameters=(
                    _LIMIT,
                    _CURSOR,
                    _q("state", {"enum": ["active", "paused"]}, "Only this state"),
                    _q("q", STR, "A case-insensitive substring of the id or name"),
                ),
            ),
            "post": _op(
                "deployBatch",
                "deployment",
                "Validate and deploy several specs at once, all or nothing",
                {"200": _ok(ref("BatchDeployResult"), "Deployed (or, with dry_run, planned)")},
                ("408", "413", "415", "422", "503"),
                body=ref("BatchDeploy"),
            ),
        },
        "/api/v1/deployment/workflows/{id}/pause": {
            "post": _op(
                "pause",
                "deployment",
                "Pause a workflow's triggers, keeping their state",
                state_changed,
                ("404", "503"),
                parameters=(_id(),),
            )
        },
        "/api/v1/deployment/workflows/{id}/resume": {
            "post": _op(
                "resume",
                "deployment",
                "Resume a paused workflow",
                state_changed,
                ("404", "503"),
                parameters=(_id(),),
            )
        },
        "/api/v1/deployment/workflows/{id}/export": {
            "get": _op(
                "export",
                "deployment",
                "The deployed spec as TOML",
                {"200": _ok(STR, "The spec", "application/toml")},
                ("404", "503"),
                parameters=(_id(),),
            )
        },
        "/api/v1/executions": {
            "get": _op(
                "listExecutions",
                "executions",
                "Trigger events, newest first, one page at a time",
                {"200": _ok(ref("ExecutionPage"), "One page")},
                ("404", "503"),
                parameters=(
                    _q("workflow_id", STR, "Only this workflow's events"),
                    _q("trigger_id", STR, "Only this trigger's events"),
                    _q("status", {"enum": ["pending", "dispatched", "failed"]}, "Only this status"),
                    _q("since", {"type": "string", "format": "date-time"}, "fired_at at or after"),
                    _q("until", {"type": "string", "format": "date-time"}, "fired_at before"),
                    _LIMIT,
                    _CURSOR,
                ),
            )
        },
        "/api/v1/executions/{execution_id}/redeliver": {
            "post": _op(
                "redeliver",
                "executions",
                "Queue a failed event for dispatch again (same Idempotency-Key)",
                {"200": _ok(ref("Redelivered"), "Queued")},
                ("404", "409", "503"),
                parameters=(_id("execution_id", "Execution id"),),
            )
        },
        "/api/v1/executions/prune": {
            "post": _op(
                "prune",
                "executions",
                "Delete dispatched and failed events past retention now (pending: never)",
                {"200": _ok(ref("Pruned"), "How many were (or would be) deleted")},
                ("503",),
                parameters=(
                    _q("older_than", STR, "One age for dispatched and failed events, e.g. 7d"),
                    _q("dry_run", {"type": "boolean"}, "Count only"),
                ),
            )
        },
        "/api/v1/check": {
            "get": _op(
                "check",
                "service",
                "What wfsched check reports, run by the daemon",
                {"200": _ok(ref("CheckReport"), "Every check; ok is false when one failed")},
                (),
            )
        },
        "/api/v1/plugins": {
            "get": _op(
                "plugins",
                "service",
                "Trigger types with their source",
                {"200": _ok({"type": "array", "items": ref("Plugin")}, "Loaded trigger types")},
                (),
            )
        },
        "/api/v1/density": {
            "get": _op(
                "density",
                "service",
                "Fires per minute of every active time trigger, the peak minutes, H rewrites",
                {"200": _ok(ref("Density"), "Fire density (what wfsched density prints)")},
                (),
                parameters=(
                    _q(
                        "hours",
                        {"type": "integer", "minimum": 1, "maximum": 168},
                        "How far ahead (default 24)",
                    ),
                ),
            )
        },
    }


def schemas() -> dict[str, Any]:
    """The component schemas the operations routes answer with."""
    event = obj(
        [
            "execution_id",
            "workflow_id",
            "trigger_id",
            "trigger_type",
            "fired_at",
            "payload",
            "status",
            "attempts",
            "last_error",
        ],
        {
            "execution_id": STR,
            "workflow_id": STR,
            "trigger_id": STR,
            "trigger_type": STR,
            "scheduled_at": _INSTANT,
            "fired_at": _INSTANT,
            "payload": {"type": "object"},
            "status": {"enum": ["pending", "dispatched", "failed"]},
            "attempts": {"type": "integer"},
            "last_error": _NULLABLESTR,
            "next_attempt_at": _INSTANT,
            "dispatched_at": _INSTANT,
        },
    )
    return {
        "Event": event,
        "ExecutionPage": obj(
            ["items", "next_cursor"],
            {"items": {"type": "array", "items": ref("Event")}, "next_cursor": _NULLABLESTR},
        ),
        "WorkflowPage": obj(
            ["items", "next_cursor"],
            {"items": {"type": "array", "items": ref("Workflow")}, "next_cursor": _NULLABLESTR},
        ),
        "StateChanged": obj(
            ["workflow_id", "action"],
            {"workflow_id": STR, "action": {"enum": ["paused", "resumed"]}},
        ),
        "Redelivered": obj(["execution_id", "status"], {"execution_id": STR, "status": STR}),
        "Pruned": obj(
            ["deleted"], {"deleted": {"type": "integer"}, "dry_run": {"type": "boolean"}}
        ),
        "Density": obj(
            ["start", "minutes", "triggers", "fires", "counts", "peaks"],
            {
                "start": STR,
                "minutes": {"type": "integer"},
                "triggers": {"type": "integer"},
                "fires": {"type": "integer"},
                "counts": {"type": "array", "items": {"type": "integer"}},
                "peaks": {"type": "array", "items": {"type": "object"}},
            },
        ),
        "Plugin": obj(
            ["type", "source", "module"],
            {
                "type": STR,
                "kind": {"enum": ["trigger", "dispatch-target"]},
                "source": {"enum": ["builtin", "entry-point", "plugins-dir"]},
                "module": STR,
            },
        ),
        "CheckReport": obj(
            ["ok", "checks"],
            {
                "ok": {"type": "boolean"},
                "config": _NULLABLESTR,
                "checks": {
                    "type": "array",
                    "items": obj(
                        ["name", "ok", "detail"],
                        {
                            "name": STR,
                            "ok": {"type": "boolean"},
                            "detail": STR,
                            "warnings": {"type": "array", "items": STR},
                        },
                    ),
                },
            },
        ),
        "BatchDeploy": obj(
            ["specs"],
            {
                "specs": {
                    "type": "array",
                    "items": obj(
                        ["document"],
                        {
                            "source": {"type": "string", "description": "Named in errors"},
                            "document": ref("WorkflowSpec"),
                        },
                    ),
                },
                "dry_run": {"type": "boolean"},
            },
        ),
        "BatchDeployResult": obj(
            ["results", "warnings"],
            {
                "results": {"type": "array", "items": ref("DeployResult")},
                "warnings": {"type": "array", "items": STR},
            },
        ),
    }
