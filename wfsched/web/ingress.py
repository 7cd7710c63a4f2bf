"""The per-workflow webhook route as a raw ASGI handler, and the error mapping of every route.

``{METHOD} /api/v1/public/webhook/workflow/{id}`` is the hot path: it is served here, in
front of the Starlette app, without Starlette's request objects, middleware and routing,
which cost more per request than the whole of wfsched's own work (auth, event, commit).
Behaviour is that of the other routes: the same checks in the same order and the same JSON
errors; everything else goes to the Starlette app unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from wfsched.errors import AuthError, Conflict, NotFound, StoreError, Unavailable, WfschedError
from wfsched.jsontext import dumpb
from wfsched.metrics import WEBHOOK_REQUESTS
from wfsched.spec import InvalidSpecs
from wfsched.trigger import BaseTrigger, Inbound
from wfsched.web.requests import BODY_READ_TIMEOUT, SINGLE_HEADERS, HttpError

log = logging.getLogger("wfsched.web")
PREFIX = "/api/v1/public/webhook/workflow/"
INGRESS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_JSON_TYPE = (b"content-type", b"application/json")
RETRY_AFTER = "2"
"""Seconds a sender is asked to wait while triggers start, stop or are replaced."""


def http_error_of(exc: Exception, *, path: str = "", method: str = "") -> HttpError:
    """Map any exception raised while handling a request to the error answered for it."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, InvalidSpecs):
        return HttpError(422, "invalid_spec", str(exc))
    if isinstance(exc, AuthError):
        return HttpError(401, "unauthorized", str(exc))
    if isinstance(exc, NotFound):
        return HttpError(404, "not_found", str(exc))
    if isinstance(exc, Conflict):
        if str(exc) == "confirmation_required":
            return HttpError(
                409,
                "confirmation_required",
                'this trigger requires confirmation: send {"confirm": true}',
            )
        return HttpError(409, "conflict", str(exc))
    if isinstance(exc, StoreError):
        log.warning("store unavailable", extra={"error": str(exc), "path": path})
        return HttpError(
            503,
            "store_unavailable",
            "the store is unreachable or did not commit in time; retry later (a repeat of a"
            " delivery with the same id is deduplicated)",
            {"Retry-After": "5"},
        )
    if isinstance(exc, Unavailable):
        # Senders retry a 503 (GitHub's recovery asks for a redelivery); a 2xx would be final.
        return HttpError(503, "unavailable", str(exc), {"Retry-After": RETRY_AFTER})
    if isinstance(exc, WfschedError):
        return HttpError(400, "bad_request", str(exc))
    if isinstance(exc, ClientDisconnect):
        return HttpError(400, "client_disconnected", "the client closed the connection mid-request")
    # A bug: logged with its traceback, answered without it.
    log.error(
        "unexpected error handling a request", exc_info=exc, extra={"path": path, "method": method}
    )
    return HttpError(500, "internal_error", "unexpected server error; it has been logged")


class _Counts:
    """``wfsched_webhook_requests_total`` children by status, looked up once each."""

    def __init__(self) -> None:
        self._children: dict[int, Any] = {}

    def inc(self, status: int) -> None:
        child = self._children.get(status)
        if child is None:
            child = self._children[status] = WEBHOOK_REQUESTS.labels(str(status))
        child.inc()


COUNTS = _Counts()


class WorkflowIngress:
    """ASGI app serving the per-workflow webhook route and passing every other request on."""

    def __init__(
        self,
        app: ASGIApp,
        lookup: Callable[[str], BaseTrigger],
        *,
        miss: Callable[[str], Awaitable[BaseTrigger]] | None = None,
        body_timeout: float = BODY_READ_TIMEOUT,
    ) -> None:
        """``lookup`` finds a running trigger or raises NotFound; only then is ``miss`` awaited,
        to tell a workflow that is not deployed (NotFound: 404) from one whose trigger is not
        running yet or any more (Unavailable: 503), or to return it once it runs."""
        self.app = app
        self.lookup = lookup
        self.miss = miss or _not_found
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if (
                path.startswith(PREFIX)
                and len(path) > len(PREFIX)
                and "/" not in path[len(PREFIX) :]
            ):
                await self._serve(scope, receive, send, path[len(PREFIX) :])
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, workflow_id: str) -> None:
        try:
            status, body, headers = await self._handle(scope, receive, workflow_id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
            err = http_error_of(exc, path=scope["path"], method=scope["method"])
            status, body, headers = (
                err.status,
                {"error": err.code, "detail": err.detail},
                err.headers,
            )
        COUNTS.inc(status)
        data = dumpb(body)
        raw = [_JSON_TYPE, (b"content-length", str(len(data)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data})

    async def _handle(
        self, scope: Scope, receive: Receive, workflow_id: str
    ) -> tuple[int, Any, Mapping[str, str]]:
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers: dict[str, str] = {}
        for key, value in raw:
            if key in headers:
                if key.encode("latin-1") in SINGLE_HEADERS:
                    raise HttpError(
                        400, "bad_request", f"the {key} header is repeated; send it once"
                    )
                headers[key] = f"{headers[key]}, {value}"
            else:
                headers[key] = value
        try:
            trigger = self.lookup(workflow_id)
        except NotFound:
            # Off the hot path: only a request that found no running trigger gets here.
            trigger = await self.miss(workflow_id)
        method: str = scope["method"]
        if not trigger.allows_method(method):
            allowed = ", ".join(m for m in INGRESS_METHODS if trigger.allows_method(m))
            trigger.ctx.record_occurrence(
                "refused", f"405 method_not_allowed: {method} (allowed: {allowed})"
            )
            raise HttpError(405, "method_not_allowed", f"allowed: {allowed}", {"Allow": allowed})
        try:
            body = await self._body(receive, headers.get("content-length"), trigger.max_body_bytes)
        except HttpError as exc:
            # Too large, too slow: the trigger never sees it, so the route notes it.
            trigger.ctx.record_occurrence("refused", f"{exc.status} {exc.code}: {exc.detail}")
            raise
        query = _query(scope["query_string"]) if scope.get("query_string") else {}
        client = scope.get("client")
        inbound = Inbound(
            method=method,
            path=scope["path"],
            query=query,
            headers=headers,
            raw_headers=raw,
            body=body,
            client=client[0] if client else None,
        )
        out = await trigger.receive(inbound)
        return out.status, out.body, out.headers

    async def _body(self, receive: Receive, declared: str | None, limit: int) -> bytes:
        """Read the body within ``limit`` bytes (413 as soon as it is past) and the deadline."""
        if declared is not None:
            if not declared.isdigit():
                raise HttpError(400, "bad_request", "invalid Content-Length header")
            if int(declared) > limit:
                raise HttpError(413, "payload_too_large", f"the body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        # asyncio.timeout rather than an anyio cancel scope: this runs once per request on
        # uvicorn's own asyncio task, and costs a third as much.
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientDisconnect()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise HttpError(413, "payload_too_large", f"the body exceeds {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise HttpError(
                408, "request_timeout", f"the body was not received within {self.body_timeout:g} s"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _not_found(workflow_id: str) -> BaseTrigger:
    raise NotFound(f"no active webhook trigger for {workflow_id!r}")


def _query(raw: bytes) -> dict[str, str]:
    # As Starlette's QueryParams: latin-1 bytes, percent-escapes decoded as UTF-8.
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
