"""The notify mail of one event: a readable summary, then the event as JSON.

The Message-ID is derived from the execution id, so a redelivered event is recognisable as
the same message; ``Auto-Submitted`` keeps vacation responders from answering it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from wfsched.dispatch import event_document
from wfsched.models import TriggerEvent

PAYLOAD_LINES = 40
"""Payload fields listed in the readable part; the JSON part always holds everything."""


def _text(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            out.extend(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix or "(payload)", value)]


def readable(event: TriggerEvent) -> str:
    """The human part of the mail: what fired, when, and the payload as ``key: value``."""
    doc = event_document(event)
    headline = f'The {event.trigger_type} trigger "{event.trigger_id}" of workflow'
    headline += f' "{event.workflow_id}" fired.'
    lines = [
        headline,
        "",
        f"  Workflow      {event.workflow_id}",
        f"  Trigger       {event.trigger_id} ({event.trigger_type})",
        f"  Execution id  {event.execution_id}",
    ]
    if doc["scheduled_at"]:
        lines.append(f"  Scheduled at  {doc['scheduled_at']}")
    lines.append(f"  Fired at      {doc['fired_at']}")
    if event.attempts:
        lines.append(f"  Attempt       {event.attempts + 1} (earlier: {event.last_error or '-'})")
    fields = _flatten(dict(event.payload))
    lines += ["", "Payload"]
    if not event.payload:
        lines.append("  (empty)")
    for key, value in fields[:PAYLOAD_LINES]:
        lines.append(f"  {key}: {_text(value)}")
    if len(fields) > PAYLOAD_LINES:
        lines.append(f"  … {len(fields) - PAYLOAD_LINES} more fields in the JSON below")
    return "\n".join(lines)


def build_message(event: TriggerEvent, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The notify mail for one event: readable text, then the event as JSON."""
    msg = EmailMessage()
    msg["Subject"] = f"[wfsched] {event.trigger_type} trigger fired: {event.workflow_id}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(event.fired_at)
    msg["Message-ID"] = f"<{event.execution_id}@wfsched>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg["X-Wfsched-Execution-Id"] = event.execution_id
    msg["X-Wfsched-Workflow-Id"] = event.workflow_id
    msg["X-Wfsched-Trigger"] = f"{event.trigger_id} ({event.trigger_type})"
    document = json.dumps(event_document(event), indent=2, ensure_ascii=False, default=str)
    msg.set_content(f"{readable(event)}\n\nEvent (JSON)\n{document}\n")
    return msg
