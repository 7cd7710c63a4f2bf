"""How every route answers a failure: one exception-to-error mapping, as ``{"error", "detail"}``.

Handlers raise (:class:`HttpError`, or a wfsched error that maps to one); nothing escapes as a
traceback. Answers of the webhook routes are counted by status in
``wfsched_webhook_requests_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from wfsched.errors import AuthError, Conflict, NotFound, StoreError, Unavailable, WfschedError
from wfsched.metrics import WEBHOOK_REQUESTS
from wfsched.spec import InvalidSpecs
from wfsched.web.requests import HttpError, error_response, repeated_header, repeated_header_error

log = logging.getLogger("wfsched.web")
RETRY_AFTER = "2"
"""Seconds a sender is asked to wait while triggers start, stop or are replaced."""
Handler = Callable[[Request], Awaitable[Response]]


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


class _Counts(dict[int, Any]):
    """``wfsched_webhook_requests_total`` children by status (``COUNTS[status].inc()``),
    looked up once each."""

    def __missing__(self, status: int) -> Any:
        child = self[status] = WEBHOOK_REQUESTS.labels(str(status))
        return child


COUNTS = _Counts()


def answering(handler: Handler, *, counted: bool = False) -> Handler:
    """``handler`` as a route endpoint: a repeated single header is refused before it runs,
    and whatever it raises is answered as a JSON error. ``counted``: a webhook route, whose
    answers count in ``wfsched_webhook_requests_total``."""

    async def endpoint(request: Request) -> Response:
        try:
            repeated = repeated_header(request.scope["headers"])
            if repeated is not None:
                raise repeated_header_error(repeated)
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
            err = http_error_of(exc, path=request.url.path, method=request.method)
            response = error_response(err.status, err.code, err.detail, err.headers)
        if counted:
            COUNTS[response.status_code].inc()
        return response

    return endpoint


def no_route(path: str) -> Response:
    """The 404 of a path that no route serves."""
    return error_response(404, "not_found", f"no route {path}")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (route without that method) as JSON errors."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return no_route(request.url.path)
    codes = {405: "method_not_allowed"}
    code = codes.get(exc.status_code, "bad_request")
    detail = (
        f"allowed: {exc.headers.get('Allow', '')}"
        if exc.status_code == 405 and exc.headers
        else str(exc.detail)
    )
    return error_response(exc.status_code, code, detail, dict(exc.headers or {}))


async def server_error(request: Request, exc: Exception) -> Response:
    """Outside any route handler (should not happen): still JSON, never a traceback."""
    return error_response(500, "internal_error", "unexpected server error; it has been logged")
