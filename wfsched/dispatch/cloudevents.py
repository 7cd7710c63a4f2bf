"""``cloudevents`` dispatch target: each event as a CloudEvent in HTTP binary content mode.

``POST dispatch.cloudevents_url`` (or a workflow's own ``[dispatch] url``) with the engine-mode
JSON body and the event's attributes as ``ce-*`` headers. Receivers such as
Knative, Argo Events or Azure Event Grid deduplicate on ``source`` + ``id``, and ``id`` is the
execution id, so a retried or redelivered event is recognisably the same one. The transport,
retry rules and trace context are the engine target's.
"""

from __future__ import annotations

from urllib.parse import quote

from yarl import URL

from wfsched.dispatch.engine import EngineSender
from wfsched.models import TriggerEvent, iso
from wfsched.tracing import traceparent

# Printable ASCII except space, '"' and '%' may stand in a ce- header as is; the rest is
# percent-encoded as the CloudEvents HTTP binding asks.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def _header(value: str) -> str:
    return quote(value, safe=_SAFE)


def event_type(trigger_type: str) -> str:
    """``ce-type`` of an event fired by a trigger of ``trigger_type``."""
    return f"dev.wfsched.trigger.{trigger_type}"


def event_source(workflow_id: str, trigger_id: str) -> str:
    """``ce-source``: the trigger that fired, ``wfsched/<workflow>/<trigger>``."""
    return f"wfsched/{workflow_id}/{trigger_id}"


class CloudEventsSender(EngineSender):
    """POSTs every event to one URL as a binary-mode CloudEvent."""

    mode = "cloudevents"
    who = "CloudEvents sink"

    def __init__(
        self,
        url: str,
        *,
        setting: str = "dispatch.cloudevents_url",
        timeout: float = 30.0,
        max_connections: int = 10,
    ) -> None:
        self.setting = setting
        super().__init__(url, timeout=timeout, max_connections=max_connections)

    def _request(self, event: TriggerEvent) -> tuple[URL, dict[str, str]]:
        return self.base, {
            "ce-specversion": "1.0",
            "ce-id": event.execution_id,
            "ce-source": _header(event_source(event.workflow_id, event.trigger_id)),
            "ce-type": _header(event_type(event.trigger_type)),
            "ce-time": iso(event.fired_at) or "",
            "Idempotency-Key": event.execution_id,
            "traceparent": traceparent(event),
        }
