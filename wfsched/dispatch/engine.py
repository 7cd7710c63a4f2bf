"""``engine`` dispatch mode: POST each event to the workflow engine.

One keep-alive pool of at most ``scheduler.max_workers`` connections, through the small
HTTP/1.1 client of :mod:`wfsched.dispatch.http` (aiohttp's ``ClientSession`` was about half of
a dispatch's CPU). Redirects are never followed: a 3xx is a permanent failure naming the
target, so an engine that moved is noticed instead of silently chased.
"""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import quote

from yarl import URL

from wfsched import __version__, otel
from wfsched.dispatch import DispatchError, event_document
from wfsched.dispatch.http import ConnectionPool, Disconnected, HTTPError, Response
from wfsched.errors import ConfigError
from wfsched.jsontext import dumpb
from wfsched.logs import register_secret
from wfsched.models import TriggerEvent
from wfsched.target import RETRYABLE, http_failure, parse_retry_after
from wfsched.tracing import traceparent

__all__ = ["RETRYABLE", "EngineSender", "classify", "execute_url", "parse_retry_after"]

KEEPALIVE_SECONDS = 4.0
"""Idle pooled connections are closed before common server keep-alive limits (uvicorn and
Node close after 5 s), so a request rarely meets a connection the server is closing."""


def parse_engine_url(
    engine_url: str, setting: str = "dispatch.engine_url"
) -> tuple[URL, str | None, str]:
    """Return the base URL without credentials, a Basic auth header (or None) and a display
    form safe to log. Raises ConfigError naming ``setting`` on anything but an absolute
    http(s) URL."""
    try:
        url = URL(engine_url.strip())
    except (ValueError, TypeError):
        raise ConfigError(f"{setting} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        shown = url.with_user(None).with_password(None) if url.host else "the value"
        raise ConfigError(f"{setting}: use http://HOST[:PORT][/PATH] or https://…, not {shown}")
    auth = None
    if url.user is not None:
        password = url.password or ""
        register_secret(password)
        if ":" in url.user:
            raise ConfigError(f"{setting}: a user name may not contain ':'")
        auth = basic_auth(url.user, password)
        register_secret(auth)  # the whole header value, as a request's headers may be logged
    base = url.with_user(None).with_password(None).with_fragment(None)
    return base, auth, str(base.with_query(None))


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` value for HTTP Basic auth: Latin-1 as aiohttp encoded it, UTF-8
    (RFC 7617) for credentials Latin-1 cannot hold."""
    credentials = f"{user}:{password}"
    try:
        raw = credentials.encode("latin-1")
    except UnicodeEncodeError:
        raw = credentials.encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def execute_url(base: URL, workflow_id: str) -> URL:
    """``{engine_url}/v1/workflows/{workflow_id}/execute``, keeping the base's path prefix."""
    path = f"{base.path.rstrip('/')}/v1/workflows/{quote(workflow_id, safe='')}/execute"
    return base.with_path(path, encoded=True).with_query(base.query)


def classify(
    status: int,
    reason: str,
    body: str,
    *,
    retry_after: float | None = None,
    location: str | None = None,
    who: str = "engine",
    setting: str = "dispatch.engine_url",
) -> DispatchError | None:
    """Map an engine response to None (delivered) or the DispatchError to raise."""
    if 200 <= status < 300:
        return None
    what = f"{who} answered {status} {reason}".rstrip()
    if 300 <= status < 400:
        target = f" to {location}" if location else ""
        return DispatchError(
            f"{what}: redirect{target} not followed; point {setting} at the final address",
            retry=False,
            code=status,
        )
    return http_failure(who, status, reason, body, retry_after=retry_after)


class EngineSender:
    """Delivers events to ``POST {engine_url}/v1/workflows/{id}/execute``.

    Every request carries ``Idempotency-Key`` and a W3C ``traceparent`` (wfsched.tracing).
    Subclasses (cloudevents) change where and with which headers through ``_request``.
    """

    mode = "engine"
    who = "engine"
    """How the receiver is named in errors."""
    setting = "dispatch.engine_url"
    """The setting (or spec field) its URL came from, named in errors."""

    def __init__(
        self, engine_url: str, *, timeout: float = 30.0, max_connections: int = 10
    ) -> None:
        self.base, self._auth, self.display_url = parse_engine_url(engine_url, self.setting)
        self.timeout = timeout
        self.max_connections = max(1, max_connections)
        self._pool: ConnectionPool | None = None
        self._urls: dict[str, URL] = {}
        self._headers = {
            "User-Agent": f"wfsched/{__version__}",
            "Accept": "*/*",
            "Content-Type": "application/json",
        }
        if self._auth is not None:
            self._headers["Authorization"] = self._auth

    def _open(self) -> ConnectionPool:
        # Created on first use: a pool binds to the running event loop.
        self._pool = ConnectionPool(
            self.base,
            limit=self.max_connections,
            keepalive=KEEPALIVE_SECONDS,
            headers=self._headers,
        )
        return self._pool

    async def send(self, event: TriggerEvent) -> None:
        """POST the event once; raise DispatchError unless the engine answered 2xx."""
        pool = self._pool or self._open()
        body = dumpb(event_document(event))
        url, headers = self._request(event)
        if otel.ENABLED:
            otel.http_request("POST", url)
        target = url.raw_path_qs
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    response = await pool.post(target, headers, body)
                except Disconnected:
                    # A keep-alive connection closed by the engine just as it was reused (or
                    # as it opened): nothing was answered, and the same Idempotency-Key makes
                    # a resend safe. It gets what is left of the timeout, so the lease holds.
                    response = await pool.post(target, headers, body)
        except TimeoutError:
            raise DispatchError(
                f"{self.who} at {self.display_url} did not answer within {self.timeout:g}s",
                retry=True,
            ) from None
        except HTTPError as exc:
            raise DispatchError(
                f"cannot reach {self.who} at {self.display_url}: {exc}", retry=True
            ) from None
        if otel.ENABLED:
            otel.http_status(response.status)
        if not 200 <= response.status < 300:
            raise self._failure(response)

    def _failure(self, response: Response) -> DispatchError:
        error = classify(
            response.status,
            response.reason,
            response.text(),
            retry_after=parse_retry_after(response.header("Retry-After")),
            location=response.header("Location"),
            who=self.who,
            setting=self.setting,
        )
        assert error is not None
        return error

    def _request(self, event: TriggerEvent) -> tuple[URL, dict[str, str]]:
        """Where to POST ``event`` and its per-request headers."""
        url = self._urls.get(event.workflow_id)
        if url is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            url = self._urls[event.workflow_id] = execute_url(self.base, event.workflow_id)
        return url, {"Idempotency-Key": event.execution_id, "traceparent": traceparent(event)}

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
