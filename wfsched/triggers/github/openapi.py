"""The github route in ``/openapi.json`` (``GitHubTrigger.openapi_paths``)."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
_STR = {"type": "string"}
ACCEPTED = {
    "type": "object",
    "required": [],
    "properties": {
        "delivery_id": _STR,
        "matched": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["workflow_id", "execution_id"],
                "properties": {"workflow_id": _STR, "execution_id": _STR},
            },
        },
    },
}
"""The 202 body: the delivery and the workflows it fired."""


def paths(path: str) -> dict[str, Any]:
    """The path item of the shared github ingress route at ``path``."""
    return {
        path: {
            "post": {
                "operationId": "githubWebhook",
                "tags": ["ingress"],
                "summary": "GitHub App webhook ingress",
                "description": "Verifies X-Hub-Signature-256; ping answers 200; a "
                "repeated X-GitHub-Delivery is ignored.",
                "security": [{}],
                "requestBody": {"required": True, "content": {JSON: {"schema": {}}}},
                "responses": {
                    "200": {
                        "description": "ping",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    },
                    "202": {"description": "Recorded", "content": {JSON: {"schema": ACCEPTED}}},
                    # The core adds its error body and description to each.
                    **{code: {} for code in ("400", "401", "404", "408", "413", "503")},
                },
            }
        }
    }
