"""Who may see the dashboard, and how a browser proves it on every request.

The dashboard follows the management API's access rule (:mod:`wfsched.web.access`): on a
non-loopback bind without ``server.api_token`` nobody is served (403); without a token, loopback
clients only, asking for a loopback Host, with no foreign Origin. With a token a browser cannot
send a bearer header, so it signs in once with the token and gets a session cookie instead.

The cookie holds ``<issued>.<nonce>.<mac>``: an HMAC keyed by (a key derived from) the token,
never the token itself. It is HttpOnly (no script reads it) and SameSite=Strict (no other
site's page makes the browser send it). Every POST also carries the session's CSRF token, a
second HMAC of the same nonce, in a hidden field. Sessions are stateless: changing the token
ends all of them; a session also ends :data:`SESSION_SECONDS` after sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from wfsched.web.access import Access, access_of
from wfsched.web.requests import HttpError, loopback_refusal, read_body

COOKIE = "wfsched_ui"
SESSION_SECONDS = 12 * 3600
FORM_LIMIT = 64 * 1024
_PROCESS_KEY = secrets.token_bytes(32)
"""The session key without a token: sessions then last as long as the daemon process."""


@dataclass(frozen=True, slots=True)
class Session:
    """A browser's session: its CSRF token and who it acts as."""

    csrf: str
    user: str
    issued: str = ""
    """Set when this request started the session: the cookie to send back."""


def _key(access: Access) -> bytes:
    if not access.token:
        return _PROCESS_KEY
    return hmac.new(access.token, b"wfsched ui session key", hashlib.sha256).digest()


def _mac(key: bytes, purpose: str, issued: str, nonce: str) -> str:
    return hmac.new(key, f"{purpose}|{issued}|{nonce}".encode(), hashlib.sha256).hexdigest()


def new_cookie(access: Access) -> tuple[str, str]:
    """A new session: its cookie value and its CSRF token."""
    issued, nonce = str(int(time.time())), secrets.token_urlsafe(16)
    key = _key(access)
    return f"{issued}.{nonce}.{_mac(key, 'session', issued, nonce)}", _csrf(key, issued, nonce)


def _csrf(key: bytes, issued: str, nonce: str) -> str:
    return _mac(key, "csrf", issued, nonce)[:32]


def _session(access: Access, cookie: str | None, user: str) -> Session | None:
    """The session ``cookie`` proves, or None when it is absent, forged or expired."""
    if not cookie or cookie.count(".") != 2:
        return None
    issued, nonce, mac = cookie.split(".")
    key = _key(access)
    if not hmac.compare_digest(mac, _mac(key, "session", issued, nonce)):
        return None
    if not issued.isdigit() or time.time() - int(issued) > SESSION_SECONDS:
        return None
    return Session(_csrf(key, issued, nonce), user)


def _user(request: Request, access: Access) -> str:
    client = request.client.host if request.client else "unknown"
    return f"ui-token@{client}" if access.token else f"ui@{client}"


class Refused(Exception):
    """The request may not see the dashboard: answered with ``status`` and ``detail``."""

    def __init__(self, status: int, detail: str, *, sign_in: bool = False) -> None:
        super().__init__(detail)
        self.status, self.detail, self.sign_in = status, detail, sign_in


def authenticate(request: Request) -> Session:
    """The request's session, or :class:`Refused` (``sign_in``: redirect to the form)."""
    access = access_of(request)
    if access.closed:
        raise Refused(
            403,
            "the server listens on a non-loopback address without server.api_token; "
            "set server.api_token (WFSCHED_API_TOKEN) to use the dashboard",
        )
    user = _user(request, access)
    cookie = request.cookies.get(COOKIE)
    if access.token:
        session = _session(access, cookie, user)
        if session is None:
            raise Refused(401, "sign in with server.api_token", sign_in=True)
        return session
    refusal = loopback_refusal(request)
    if refusal is not None:
        raise Refused(401, refusal)
    session = _session(access, cookie, user)
    if session is None:
        # Without a token a loopback browser needs no sign-in, but still a session: its CSRF
        # token is what keeps another local page from posting actions.
        fresh, csrf = new_cookie(access)
        session = Session(csrf, user, issued=fresh)
    return session


def set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the dashboard's forms send)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HttpError(415, "unsupported_media_type", "send the dashboard's form")
    body = await read_body(request, FORM_LIMIT)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def check_csrf(session: Session, form: dict[str, str]) -> None:
    """Refuse a POST whose hidden ``csrf`` field is not this session's token."""
    if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
        raise Refused(403, "the form's CSRF token does not match this session; reload the page")


def token_matches(request: Request, given: str) -> bool:
    return hmac.compare_digest(given.strip().encode(), access_of(request).token)
