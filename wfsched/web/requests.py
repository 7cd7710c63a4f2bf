"""Reading HTTP requests defensively and answering errors as ``{"error", "detail"}``.

Everything here turns bad input into a 4xx with a message naming the header or limit at
fault: oversized or slow bodies, malformed or deeply nested JSON, wrong content types,
repeated headers. Nothing in it knows about workflows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from wfsched.httpjson import BadBody, error_body
from wfsched.httpjson import parse_json as strict_json

BODY_READ_TIMEOUT = 10.0
"""Seconds a client may take to send a whole body (slow-body clients get 408)."""
SINGLE_HEADERS = (b"authorization", b"content-type", b"content-length", b"host")
"""Headers whose repetition makes a request ambiguous: refused with 400."""
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class HttpError(Exception):
    """An error answered as ``{"error", "detail"}`` with a status code."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every route answers with (the shape of ``Outbound.error``)."""
    return JSONResponse(error_body(code, detail), status_code=status, headers=headers)


def parse_json(body: bytes, *, allow_empty: bool = False) -> Any:
    """Parse a JSON body with :func:`wfsched.parse_json`; HttpError 400 ``invalid_json`` if bad.

    ``allow_empty``: an empty body is None (a route whose JSON is optional)."""
    if allow_empty and not body.strip():
        return None
    try:
        return strict_json(body)
    except BadBody as exc:
        raise HttpError(400, exc.code, str(exc)) from None


def require_json(request: Request) -> None:
    """Refuse (415) a declared Content-Type that is not JSON.

    Besides clarity this blocks cross-site "simple" form posts (text/plain, form-urlencoded)
    that a browser would send to a loopback management API without a CORS preflight.
    """
    declared = request.headers.get("content-type")
    if declared is None:
        return
    kind = declared.partition(";")[0].strip().lower()
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return
    raise HttpError(
        415,
        "unsupported_media_type",
        f"send Content-Type: application/json (got {kind or 'an empty type'!r})",
    )


async def read_body(request: Request, limit: int, *, timeout: float = BODY_READ_TIMEOUT) -> bytes:
    """Read the body, refusing with 413 as soon as it exceeds ``limit`` and 408 when slow."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "bad_request", "invalid Content-Length header")
        if int(declared) > limit:
            raise HttpError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(timeout) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "payload_too_large", f"the body exceeds {limit} bytes")
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise HttpError(408, "request_timeout", f"the body was not received within {timeout:g} s")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def repeated_header(
    raw: Iterable[tuple[bytes, bytes]], names: Iterable[bytes] = SINGLE_HEADERS
) -> str | None:
    """Return the first of ``names`` sent more than once (ASGI names are lower-case)."""
    wanted = set(names)
    seen: set[bytes] = set()
    for key, _ in raw:
        if key in wanted:
            if key in seen:
                return key.decode("latin-1")
            seen.add(key)
    return None


def is_loopback(host: str | None) -> bool:
    """True for a loopback address or name (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_part(authority: str) -> str:
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def loopback_refusal(request: Request) -> str | None:
    """Why a request is refused by the token-less (loopback-only) management API, or None.

    The client address must be loopback. So must the Host it asked for (a DNS-rebinding
    page reaches 127.0.0.1 under its own name) and any Origin (a cross-site page).
    """
    client = request.client.host if request.client else None
    if not is_loopback(client):
        return "the management API accepts loopback clients only unless server.api_token is set"
    host = request.headers.get("host")
    if host is not None and not is_loopback(_host_part(host)):
        return f"Host {host!r} is not a loopback name; set server.api_token to allow it"
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        netloc = urlsplit(origin).hostname
        if not is_loopback(netloc):
            return "cross-origin requests are refused unless server.api_token is set"
    elif origin == "null":
        return "cross-origin requests are refused unless server.api_token is set"
    return None
