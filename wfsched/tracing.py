"""W3C trace context on every HTTP dispatch and optional OpenTelemetry.

A webhook delivery's ``traceparent`` header is kept where every header is, in the event's
``payload.headers``: no schema change and no work on the hot webhook path. Each dispatch
attempt sends ``traceparent: 00-<trace id>-<new span id>-<flags>``, continuing the delivery's
trace when it had a valid one; otherwise the trace id is derived from the execution id, so
every attempt of one event (and a redelivery) is in one trace.

No OpenTelemetry SDK is involved: the header is made here, at the cost of one hash and one
pseudo-random 64-bit span id per attempt.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from wfsched.models import TriggerEvent

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
CURRENT: ContextVar[tuple[str, str] | None] = ContextVar("wfsched_traceparent", default=None)
"""(execution id, traceparent) of the dispatch under way, for whoever opens a span for it
(a span exporter, later): :func:`traceparent` then names that span."""


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """``(trace id, parent span id, flags)`` of a valid W3C ``traceparent``, else None.

    A future version may append fields (kept out); version ``ff`` and all-zero ids are invalid.
    """
    if not isinstance(value, str):
        return None
    found = _TRACEPARENT.match(value.strip().lower())
    if found is None:
        return None
    version, trace, span, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return trace, span, flags


def inbound(payload: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The trace context a webhook delivery came with (``payload.headers.traceparent``)."""
    headers = payload.get("headers")
    if not isinstance(headers, Mapping):
        return None
    return parse_traceparent(headers.get("traceparent"))


def trace_id(event: TriggerEvent) -> str:
    """The event's trace: the delivery's own, else one derived from the execution id."""
    found = inbound(event.payload)
    if found is not None:
        return found[0]
    return hashlib.blake2b(event.execution_id.encode(), digest_size=16).hexdigest()


def new_traceparent(event: TriggerEvent) -> str:
    """A ``traceparent`` for one dispatch attempt: the event's trace, a new span id."""
    found = inbound(event.payload)
    if found is not None:
        trace, flags = found[0], found[2]
    else:
        trace = hashlib.blake2b(event.execution_id.encode(), digest_size=16).hexdigest()
        flags = "01"
    # Span ids need to be unique, not secret: the random module's generator (OpenTelemetry's
    # SDK uses it too; reseeded in a forked child) makes no system call, os.urandom one each.
    span = random.getrandbits(64)
    while not span:  # pragma: no cover - one chance in 2**64
        span = random.getrandbits(64)
    return f"00-{trace}-{span:016x}-{flags}"


def traceparent(event: TriggerEvent) -> str:
    """The ``traceparent`` header for the dispatch of ``event`` under way.

    Inside a dispatch span (OpenTelemetry on) it names that span; otherwise a new span id in
    the event's trace. HTTP targets send it with every request.
    """
    current = CURRENT.get()
    if current is not None and current[0] == event.execution_id:
        return current[1]
    return new_traceparent(event)
