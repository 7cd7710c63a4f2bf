"""Reading HTTP requests defensively and answering errors as ``{"error", "detail"}``.

Everything here turns bad input into a 4xx with a message naming the header or limit at
fault: oversized or slow bodies, malformed or deeply nested JSON, wrong content types,
repeated headers. Nothing in it knows about workflows.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive

from wfsched.httpjson import BadBody, error_body
from wfsched.httpjson import parse_json as strict_json
from wfsched.httplimits import BODY_RECEIVED

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


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "payload_too_large", f"the body exceeds {limit} bytes")


def _check_declared(declared: str | None, limit: int) -> None:
    """Refuse a malformed (400) or too large (413) Content-Length."""
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "bad_request", "invalid Content-Length header")
        if int(declared) > limit:
            raise _too_large(limit)


def _within(body: bytes, limit: int) -> bytes:
    if len(body) > limit:
        raise _too_large(limit)
    return body


def whole_body_within(whole: bytes, declared: str | None, limit: int) -> bytes:
    """``whole``, a body already taken from the server, refused as :func:`receive_body` would
    refuse it (``declared``: the Content-Length header, if sent)."""
    _check_declared(declared, limit)
    return _within(whole, limit)


async def receive_body(
    receive: Receive,
    declared: str | None,
    limit: int,
    *,
    timeout: float = BODY_READ_TIMEOUT,
    received: bool = False,
) -> bytes:
    """Read a request body from ASGI ``receive``: the one body reader of every route.

    ``declared`` is the Content-Length header, if sent. Refused: a malformed or too large
    declared length (400, 413), a body past ``limit`` bytes (413 as soon as it is past, not
    once it is all read) and one not received within ``timeout`` seconds (408). A client that
    disconnects mid-body raises :class:`ClientDisconnect`. ``received``: the server already
    holds the whole body (the daemon's protocol says so in the scope, :data:`BODY_RECEIVED`),
    so reading it cannot wait and needs no deadline. A body already read whole:
    :func:`whole_body_within`.
    """
    _check_declared(declared, limit)
    first = None
    if received:
        # Trusted only because this is the body's one reader: the first receive() returns the
        # whole body at once. Had anything called receive() before, this one would wait (for a
        # disconnect) with no deadline; a first part that is not the whole body gets one.
        first = await receive()
        if first["type"] == "http.request" and not first.get("more_body", False):
            return _within(first.get("body", b""), limit)
    # asyncio.timeout rather than an anyio cancel scope: it costs a third as much.
    try:
        async with asyncio.timeout(timeout):
            return await _receive_chunks(receive, limit, first)
    except TimeoutError:
        raise HttpError(
            408, "request_timeout", f"the body was not received within {timeout:g} s"
        ) from None


async def _receive_chunks(receive: Receive, limit: int, first: Message | None = None) -> bytes:
    """The body's chunks joined, starting with ``first`` if already received."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = first if first is not None else await receive()
        first = None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int, *, timeout: float = BODY_READ_TIMEOUT) -> bytes:
    """:func:`receive_body` for a Starlette request (whose body nothing else has read)."""
    return await receive_body(
        request.receive,
        request.headers.get("content-length"),
        limit,
        timeout=timeout,
        received=request.scope.get(BODY_RECEIVED, False),
    )


def repeated_header_error(name: str) -> HttpError:
    """The 400 answered for a repeated header of :data:`SINGLE_HEADERS`."""
    return HttpError(400, "bad_request", f"the {name} header is repeated; send it once")


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


def fold_headers(
    raw_headers: Iterable[tuple[bytes, bytes]],
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Decode ASGI headers: ``(folded, raw)``, the one header folder of every route.

    ``raw`` keeps every header in order; ``folded`` joins a repeated header's values with
    ``", "`` (RFC 9110 5.3), except that a repeated header of :data:`SINGLE_HEADERS` is
    refused (400): which Authorization or Content-Length counts would be a guess.
    """
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers]
    headers = dict(raw)
    if len(headers) == len(raw):  # no header repeated: nothing to fold
        return headers, raw
    headers = {}
    for key, value in raw:
        if key in headers:
            if key.encode("latin-1") in SINGLE_HEADERS:
                raise repeated_header_error(key)
            headers[key] = f"{headers[key]}, {value}"
        else:
            headers[key] = value
    return headers, raw


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
