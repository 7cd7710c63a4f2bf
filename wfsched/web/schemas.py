"""Component schemas of the OpenAPI document: the JSON shapes the CLI's --json and the API answer with."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
STR = {"type": "string"}
_NULLABLESTR = {"type": ["string", "null"]}
_INSTANT = {"type": ["string", "null"], "format": "date-time"}


def ref(name: str) -> dict[str, Any]:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object schema."""
    return {"type": "object", "required": required, "properties": properties, **extra}


def schemas() -> dict[str, Any]:
    """Return the ``components.schemas`` table."""
    trigger = obj(
        ["id", "type", "state", "next_fire"],
        {
            "id": STR,
            "type": STR,
            "state": {"enum": ["active", "paused", "disabled"]},
            "next_fire": _INSTANT,
        },
    )
    event_summary = {
        "oneOf": [
            {"type": "null"},
            obj(
                ["execution_id", "fired_at", "status"],
                {
                    "execution_id": STR,
                    "fired_at": _INSTANT,
                    "scheduled_at": _INSTANT,
                    "status": {"enum": ["pending", "dispatched", "failed"]},
                    "attempts": {"type": "integer"},
                },
            ),
        ]
    }
    trigger_status = {
        "allOf": [
            trigger,
            obj(
                ["health", "last_error", "last_event"],
                {
                    "health": ref("Health"),
                    "last_error": _NULLABLESTR,
                    "last_event": event_summary,
                    "config": {
                        "type": "object",
                        "description": "The trigger's fields, secrets redacted",
                    },
                    "details": {"type": "object"},
                },
            ),
        ]
    }
    workflow = obj(
        ["workflow_id", "name", "state", "triggers"],
        {
            "workflow_id": STR,
            "name": STR,
            "state": {"enum": ["active", "paused"]},
            "revision": {"type": "integer"},
            "updated_at": _INSTANT,
            "triggers": {"type": "array", "items": ref("Trigger")},
        },
    )
    status = {
        "allOf": [
            workflow,
            obj(
                ["triggers", "daemon"],
                {
                    "triggers": {"type": "array", "items": ref("TriggerStatus")},
                    "daemon": ref("Daemon"),
                    "pending": obj(
                        ["count", "since"],
                        {"count": {"type": "integer"}, "since": _INSTANT},
                        description="Only while no daemon runs: events waiting for dispatch",
                    ),
                },
            ),
        ]
    }
    health_item = obj(
        ["workflow_id", "trigger_id", "type", "health", "last_error"],
        {
            "workflow_id": STR,
            "trigger_id": STR,
            "type": STR,
            "health": ref("Health"),
            "last_error": _NULLABLESTR,
        },
    )
    # Nothing is required: the id defaults to the path's and a spec without triggers (as on the
    # CLI) deploys a workflow that never fires.
    spec = obj(
        [],
        {
            "id": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.-]{1,128}$",
                "description": "Defaults to the path's id; must equal it",
            },
            "name": STR,
            "description": STR,
            "triggers": {
                "type": "array",
                "description": "The workflow's triggers (default: none)",
                "items": obj(
                    ["type"],
                    {
                        "type": STR,
                        "id": STR,
                        "enabled": {"type": "boolean"},
                        "payload": {"type": "object"},
                    },
                    additionalProperties=True,
                ),
            },
        },
        description="A workflow spec as JSON, as a spec file would hold it",
    )
    return {
        "Error": obj(["error", "detail"], {"error": STR, "detail": STR}),
        "Health": {"enum": ["healthy", "degraded", "failing", "late", "unknown"]},
        **ledger_schemas(),
        "Trigger": trigger,
        "TriggerStatus": trigger_status,
        "Workflow": workflow,
        "WorkflowStatus": status,
        "WorkflowSpec": spec,
        "DeployResult": obj(
            ["workflow_id", "action"],
            {
                "workflow_id": STR,
                "action": {"enum": ["created", "updated", "unchanged"]},
                "warnings": {"type": "array", "items": STR},
            },
        ),
        "Undeployed": obj(
            ["workflow_id", "action"], {"workflow_id": STR, "action": {"const": "undeployed"}}
        ),
        "ManualRequest": obj(
            [],
            {
                "confirm": {"type": "boolean", "description": "Required where the trigger asks"},
                "data": {"description": "Any JSON value, passed as the payload's data"},
                "trigger_id": {
                    "type": "string",
                    "description": "Which manual trigger (default: the workflow's first)",
                },
            },
        ),
        "Fired": obj(
            ["execution_id", "workflow_id", "status"],
            {"execution_id": STR, "workflow_id": STR, "status": STR},
        ),
        "Accepted": obj(
            ["execution_id", "workflow_id", "status"],
            {
                "execution_id": STR,
                "workflow_id": STR,
                "status": {"const": "accepted"},
                "duplicate": {"type": "boolean", "description": "True for a repeated delivery"},
            },
        ),
        "TriggerHealthItem": health_item,
        "TriggersHealth": obj(
            ["status", "running", "unhealthy"],
            {
                "status": {"enum": ["ok", "degraded"]},
                "running": {"type": "integer"},
                "timers": {"type": "integer"},
                "unhealthy": {"type": "array", "items": ref("TriggerHealthItem")},
                "daemon": {
                    "type": "object",
                    "description": "Every daemon on the store, from the heartbeats",
                    "properties": {
                        "running": {"type": "boolean"},
                        "last_seen": {"type": ["string", "null"]},
                        "replicas": {"type": "array"},
                    },
                },
            },
        ),
        "HealthOk": obj(
            ["status", "store"],
            {
                "status": {"const": "ok"},
                "store": {"const": "ok"},
                "triggers": {"type": "array", "items": ref("TriggerHealthItem")},
            },
        ),
        "HealthUnavailable": obj(
            ["status", "store", "detail"],
            {"status": {"const": "unavailable"}, "store": {"const": "unreachable"}, "detail": STR},
        ),
        "WebhookStatus": obj(
            ["status", "webhooks"],
            {
                "status": {"const": "ok"},
                "webhooks": {
                    "type": "array",
                    "items": obj(
                        ["workflow_id", "trigger_id", "type", "path", "health"],
                        {
                            "workflow_id": STR,
                            "trigger_id": STR,
                            "type": STR,
                            "path": STR,
                            "health": ref("Health"),
                        },
                    ),
                },
            },
        ),
    }


def ledger_schemas() -> dict[str, Any]:
    """The daemon object of status and explain, and explain's answer."""
    daemon = obj(
        ["running", "last_seen", "replicas"],
        {
            "running": {"type": "boolean", "description": "A heartbeat within the last 15 s"},
            "last_seen": _INSTANT,
            "replicas": {
                "type": "array",
                "items": obj(
                    ["id", "started_at", "last_seen"],
                    {"id": STR, "listen": STR, "started_at": _INSTANT, "last_seen": _INSTANT},
                ),
            },
        },
    )
    occurrence = obj(
        ["trigger_id", "at", "outcome", "reason"],
        {
            "trigger_id": STR,
            "trigger_type": STR,
            "at": {"type": "string", "format": "date-time"},
            "outcome": {
                "enum": [
                    "fired",
                    "deduplicated",
                    "skipped",
                    "missed",
                    "paused",
                    "pending",
                    "refused",
                    "filtered",
                ]
            },
            "reason": STR,
            "execution_id": STR,
        },
    )
    explain = obj(
        ["workflow_id", "since", "until", "daemon", "occurrences"],
        {
            "workflow_id": STR,
            "since": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"},
            "daemon": ref("Daemon"),
            "occurrences": {"type": "array", "items": ref("Occurrence")},
        },
    )
    return {"Daemon": daemon, "Occurrence": occurrence, "Explain": explain}
