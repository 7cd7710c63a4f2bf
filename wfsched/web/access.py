"""Who may use the management API: the one guard the routes table puts in front of it.

With ``server.api_token`` set, a caller sends it as a bearer token. Without one, only loopback
clients are served, and nobody at all on a non-loopback bind: there a reverse proxy on the same
host would make every remote client look local (403 ``api_token_required``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from wfsched.web.errors import Handler
from wfsched.web.requests import error_response, is_loopback, loopback_refusal
from wfsched.web.services import WebServices


def public_bind_without_token(host: str, api_token: str) -> bool:
    """True when the server listens beyond loopback without a token: management is then closed.

    Loopback trust cannot hold there: a reverse proxy on the same host makes every client local.
    """
    return not api_token and not is_loopback(host)


@dataclass(frozen=True)
class Access:
    """The management API's access rule, settled once when the app is built."""

    token: bytes
    """``server.api_token``; empty: loopback clients only."""
    closed: bool
    """A non-loopback bind without a token: every management request is refused."""

    @classmethod
    def of(cls, services: WebServices) -> Access:
        host = services.bind_host or services.settings.host
        return cls(
            token=services.api_token.encode(),
            closed=public_bind_without_token(host, services.api_token),
        )


def access_of(request: Request) -> Access:
    """The rule ``create_app`` stored on the app."""
    access: Access = request.app.state.access
    return access


def managed(handler: Handler) -> Handler:
    """``handler`` behind the management API's access rule."""

    async def guarded(request: Request) -> Response:
        refusal = _refusal(request, access_of(request))
        if refusal is not None:
            return refusal
        return await handler(request)

    return guarded


def _refusal(request: Request, access: Access) -> Response | None:
    if access.closed:
        return error_response(
            403,
            "api_token_required",
            "the server listens on a non-loopback address without server.api_token; "
            "set server.api_token (WFSCHED_API_TOKEN) to use the management API",
        )
    if access.token:
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), access.token):
            return error_response(
                401,
                "unauthorized",
                "send Authorization: Bearer <server.api_token>",
                {"WWW-Authenticate": "Bearer"},
            )
        return None
    refusal = loopback_refusal(request)
    return None if refusal is None else error_response(401, "unauthorized", refusal)


def user_of(request: Request) -> str:
    """Who fired, as management auth established it, never as the caller claims.

    ``api-token@<client>`` for a bearer-token holder, ``api@<client>`` for a token-less
    loopback caller; the client is the peer, or what a trusted proxy forwarded for.
    """
    client = request.client.host if request.client else "unknown"
    return f"api-token@{client}" if access_of(request).token else f"api@{client}"
