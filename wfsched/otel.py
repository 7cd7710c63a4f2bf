"""Optional OpenTelemetry spans: receive (ingress), record (group commit), dispatch (each attempt).

Off unless :func:`setup` (called once when the daemon starts) finds a tracer provider: one set
up before wfsched ran (``opentelemetry-instrument``, a plugin), or one it builds from the
standard ``OTEL_*`` environment when ``OTEL_TRACES_EXPORTER`` names an exporter. Off, nothing
of OpenTelemetry is imported (the ``otel`` extra need not be installed) and each hot path pays
one check of the module flag :data:`ENABLED`.

Spans follow the OpenTelemetry HTTP semantic conventions:

* ``receive`` (SERVER, ``POST /api/v1/public/webhook/workflow/{workflow_id}``): a webhook or
  shared-ingress (GitHub) request, continuing the delivery's ``traceparent`` when it has one;
* ``record`` (INTERNAL): one caller's wait for its group commit, a child of the receive span
  (or, for a timer's single fire, in the event's own trace);
* ``dispatch`` (CLIENT, one per attempt, ``POST`` for HTTP targets): its context is the
  ``traceparent`` the target sends, so the engine's own spans join the trace. An attempt runs
  later than the request, perhaps in another replica, knowing only the stored event: its parent
  is the delivery's ``traceparent`` (the sender's span, so receive and dispatch are siblings),
  or for an event without one the event's own trace, derived from its execution id as
  :mod:`wfsched.tracing` does, so every attempt of one event shares one trace.

``tracestate`` is not carried (neither is it on dispatch).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from wfsched.models import NewEvent, TriggerEvent
from wfsched.target import DispatchError, Sender
from wfsched.tracing import CURRENT, inbound, parse_traceparent

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger("wfsched.otel")

ENABLED = False
"""True once :func:`setup` found a tracer provider: the hot paths check only this."""
SCOPE_KEY = "wfsched.otel"
"""Marks an ASGI scope whose request :func:`receive_span` already handles."""
WORKFLOW_ROUTE = "/api/v1/public/webhook/workflow/"
SHARED_ROUTE = "/api/v1/public/webhooks/"
"""Path prefixes of the ingress routes (``http.route``: the prefix and ``{workflow_id}`` or
``{name}``); ``…/webhooks/status`` is a management route."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT"})
_tracer: Tracer | None = None
T = TypeVar("T")


def setup() -> bool:
    """Turn spans on when a tracer provider is (or can be) configured; True when on.

    Imports nothing of OpenTelemetry unless it is already loaded (someone configured it) or
    ``OTEL_TRACES_EXPORTER`` asks for an exporter. A problem (extra missing, unknown exporter)
    is one warning: tracing is never a reason for the scheduler not to run.
    """
    global ENABLED, _tracer
    ENABLED = False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    exporters = [n for n in names if n and n != "none"]
    if not exporters and "opentelemetry.trace" not in sys.modules:
        return False
    try:
        from opentelemetry import trace
    except ImportError:
        log.warning(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed, so no spans are"
            " made: pip install 'wfsched[otel]'"
        )
        return False
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.NoOpTracerProvider):
        return False
    if isinstance(provider, trace.ProxyTracerProvider):
        built = _sdk_provider(exporters) if exporters else None
        if built is None:
            return False
        trace.set_tracer_provider(built)
        provider = built
    from wfsched import __version__

    _tracer = provider.get_tracer("wfsched", __version__)
    ENABLED = True
    return True


def _sdk_provider(exporters: Sequence[str]) -> TracerProvider | None:
    """A TracerProvider from the ``OTEL_*`` environment, or None (after a warning)."""
    from importlib.metadata import entry_points

    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_TRACES_EXPORTER is set but opentelemetry-sdk is not installed, so no spans"
            " are made: pip install 'wfsched[otel]'"
        )
        return None
    processors = []
    for name in exporters:
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            log.warning(
                f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed"
                " (for otlp: pip install opentelemetry-exporter-otlp)"
            )
            continue
        try:
            exporter = next(iter(found)).load()()
        except Exception as exc:  # noqa: BLE001 - a broken exporter must not stop the daemon
            log.warning(f"OTEL_TRACES_EXPORTER: exporter {name!r} failed to start: {exc}")
            continue
        processors.append(BatchSpanProcessor(exporter))
    if not processors:
        return None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read here; the sampler
    # (OTEL_TRACES_SAMPLER) and span limits by the provider itself.
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "wfsched"}))
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _remote(trace_id: str, span_id: str, flags: str) -> Context:
    """A context whose parent is a span of another process (W3C ids as hex)."""
    from opentelemetry import trace

    parent = trace.SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(flags, 16) & trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def event_parent(event: TriggerEvent | NewEvent) -> Context:
    """The parent of an event's dispatch spans: the delivery's ``traceparent``, else the
    event itself (its trace derived from the execution id, as in :mod:`wfsched.tracing`;
    the span id too, so every attempt hangs from one node)."""
    found = inbound(event.payload)
    if found is not None:
        return _remote(*found)
    key = event.execution_id.encode()
    trace_id = hashlib.blake2b(key, digest_size=16).hexdigest()
    span_id = hashlib.blake2b(key, digest_size=8, person=b"wfsched-event").hexdigest()
    return _remote(trace_id, span_id, "01")


def _fail(span: Span, error_type: str, description: str = "") -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description or None))


def _exception_type(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


# receive ----------------------------------------------------------------------------------
def _route(path: str) -> str | None:
    if path.startswith(WORKFLOW_ROUTE):
        rest = path[len(WORKFLOW_ROUTE) :]
        return WORKFLOW_ROUTE + "{workflow_id}" if rest and "/" not in rest else None
    if path.startswith(SHARED_ROUTE):
        rest = path[len(SHARED_ROUTE) :]
        return SHARED_ROUTE + "{name}" if rest and "/" not in rest and rest != "status" else None
    return None


def _server_attributes(scope: MutableMapping[str, Any], method: str, route: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": method if method in _METHODS else "_OTHER",
        "http.route": route,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if method not in _METHODS:
        attributes["http.request.method_original"] = method
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    for key, value in scope["headers"]:
        if key == b"host":
            host, port = _host_port(value.decode("latin-1"))
            attributes["server.address"] = host
            if port is not None:
                attributes["server.port"] = port
        elif key == b"user-agent":
            attributes["user_agent.original"] = value.decode("latin-1")
    return attributes


def _host_port(value: str) -> tuple[str, int | None]:
    """``host[:port]`` of a Host header (an IPv6 literal in brackets)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.partition(":")
    return host, int(port) if port.isdigit() else None


def _inbound(headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The context of a request's one valid ``traceparent`` header (a repeated one is
    invalid, as W3C Trace Context says)."""
    values = [v for k, v in headers if k == b"traceparent"]
    if len(values) != 1:
        return None
    found = parse_traceparent(values[0].decode("latin-1"))
    return None if found is None else _remote(*found)


Asgi = Callable[[Any, Any, Any], Awaitable[None]]


async def receive_span(app: Asgi, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Run ``app`` for one request, an ingress request inside a SERVER span."""
    scope[SCOPE_KEY] = True
    route = _route(scope["path"])
    if route is None or _tracer is None:
        await app(scope, receive, send)
        return
    from opentelemetry.trace import SpanKind

    method: str = scope["method"]
    status = 0

    async def send_status(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            span.set_attribute("http.response.status_code", status)
        await send(message)

    with _tracer.start_as_current_span(
        f"{method} {route}",
        context=_inbound(scope["headers"]),
        kind=SpanKind.SERVER,
        attributes=_server_attributes(scope, method, route),
        set_status_on_exception=False,
    ) as span:
        try:
            await app(scope, receive, send_status)
        except BaseException as exc:
            _fail(span, _exception_type(exc))
            raise
        if status >= 500:  # a 4xx is the client's error, not the server's (HTTP conventions)
            _fail(span, str(status))


# record -----------------------------------------------------------------------------------
async def record_span(
    record: Callable[[Sequence[NewEvent]], Awaitable[T]], events: Sequence[NewEvent]
) -> T:
    """``record(events)`` inside an INTERNAL span: the caller's wait for its group commit."""
    from opentelemetry import trace

    assert _tracer is not None
    parent = None
    if not trace.get_current_span().get_span_context().is_valid and len(events) == 1:
        parent = event_parent(events[0])  # a timer's fire: in the event's own trace
    attributes: dict[str, Any] = {"wfsched.events": len(events)}
    if events:
        attributes["wfsched.workflow_id"] = events[0].workflow_id
        attributes["wfsched.trigger_id"] = events[0].trigger_id
    if len(events) == 1:
        attributes["wfsched.execution_id"] = events[0].execution_id
    with _tracer.start_as_current_span(
        "record",
        context=parent,
        kind=trace.SpanKind.INTERNAL,
        attributes=attributes,
        set_status_on_exception=False,
    ) as span:
        try:
            return await record(events)
        except Exception as exc:
            _fail(span, _exception_type(exc), str(exc))
            raise


# dispatch ---------------------------------------------------------------------------------
async def dispatch_span(sender: Sender, event: TriggerEvent) -> None:
    """``sender.send(event)`` inside a CLIENT span, whose context is the ``traceparent`` the
    target sends (:func:`wfsched.tracing.traceparent` reads it from ``CURRENT``)."""
    from opentelemetry.trace import SpanKind

    assert _tracer is not None
    attributes: dict[str, Any] = {
        "wfsched.dispatch.mode": sender.mode,
        "wfsched.dispatch.attempt": event.attempts + 1,
        "wfsched.workflow_id": event.workflow_id,
        "wfsched.trigger_id": event.trigger_id,
        "wfsched.execution_id": event.execution_id,
    }
    with _tracer.start_as_current_span(
        f"dispatch {sender.mode}",
        context=event_parent(event),
        kind=SpanKind.CLIENT,
        attributes=attributes,
        set_status_on_exception=False,
    ) as span:
        ctx = span.get_span_context()
        header = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        token = CURRENT.set((event.execution_id, header))
        try:
            await sender.send(event)
        except DispatchError as exc:
            _fail(span, _dispatch_error_type(exc), str(exc))
            raise
        except Exception as exc:
            _fail(span, _exception_type(exc), str(exc))
            raise
        finally:
            CURRENT.reset(token)


def _dispatch_error_type(exc: DispatchError) -> str:
    """``error.type``: the status code, else what the sender's own error was (kept as the
    DispatchError's context even when raised ``from None``)."""
    if exc.code is not None:
        return str(exc.code)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, TimeoutError):
        return "timeout"
    return _exception_type(cause) if cause is not None else "_OTHER"


def http_request(method: str, url: Any) -> None:
    """Name the current dispatch span after an HTTP request (``url``: a yarl URL without
    credentials; query values are redacted, they may carry a token)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    if url.query_string:
        url = url.with_query(dict.fromkeys(url.query, "REDACTED"))
    span.update_name(method)
    span.set_attributes(
        {
            "http.request.method": method,
            "url.full": str(url),
            "server.address": url.host or "",
            "server.port": url.explicit_port or url.port or 0,
        }
    )


def http_status(status: int) -> None:
    """Record the status code of the current dispatch span's HTTP response."""
    from opentelemetry import trace

    trace.get_current_span().set_attribute("http.response.status_code", status)
