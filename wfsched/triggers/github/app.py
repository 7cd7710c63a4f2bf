"""GitHub App authentication and REST calls: App JWTs, cached installation tokens, rate limits.

Tokens and keys never leave this module except in ``Authorization`` headers: error messages
carry the HTTP status and GitHub's ``message`` only.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from wfsched import SpecError, resolve_secret

API_VERSION = "2022-11-28"
JWT_BACKDATE = 60  # GitHub's advice: allow for clock drift
JWT_LIFETIME = 540  # GitHub refuses more than 10 minutes
TOKEN_REFRESH_MARGIN = 300.0
MAX_REDELIVERY_WINDOW = 3 * 86400.0  # GitHub only keeps (and redelivers) 3 days of deliveries
USER_AGENT = "wfsched-github-app"


class GitHubError(Exception):
    """A GitHub API call failed; the message is safe to log and to store in an event."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(GitHubError):
    """GitHub asked us to wait ``wait`` seconds before the next call."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


@dataclass(frozen=True, slots=True)
class GitHubSettings:
    """The [github] section with its secrets resolved."""

    webhook_secrets: tuple[str, ...]
    app_id: str
    private_key: str
    api_url: str
    redelivery_window: float

    @property
    def has_app(self) -> bool:
        return bool(self.app_id and self.private_key)


def _split_secrets(raw: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in raw.split(","):
        item = item.strip()
        if item:
            # A reference may itself hold a comma-separated list (e.g. file: with two secrets).
            resolved = resolve_secret(item, field="github.webhook_secret")
            out.extend(s.strip() for s in resolved.split(",") if s.strip())
    return tuple(out)


def load_settings(section: Mapping[str, Any]) -> GitHubSettings:
    """Resolve the [github] section; SpecError names the reference that cannot be resolved."""
    key = str(section.get("private_key") or "")
    key = resolve_secret(key, field="github.private_key") if key else ""
    if key and "\n" not in key and "\\n" in key:
        key = key.replace("\\n", "\n")  # PEM pasted into one environment variable line
    window = section.get("redelivery_window", 3600.0)
    return GitHubSettings(
        webhook_secrets=_split_secrets(str(section.get("webhook_secret") or "")),
        app_id=str(section.get("app_id") or "").strip(),
        private_key=key,
        api_url=str(section.get("api_url") or "https://api.github.com").rstrip("/"),
        redelivery_window=min(float(window), MAX_REDELIVERY_WINDOW),
    )


def _retry_after(response: httpx.Response, now: float) -> float | None:
    """Seconds GitHub asks us to wait, from Retry-After or an exhausted x-ratelimit budget."""
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                return 60.0
    if response.headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(response.headers.get("x-ratelimit-reset", "")) - now)
        except ValueError:
            return 60.0
    return None


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.reason_phrase
    text = data.get("message") if isinstance(data, dict) else None
    return str(text)[:200] if text else response.reason_phrase


@dataclass(eq=False)
class GitHubApp:
    """One GitHub App on one API host: JWTs, installation tokens and rate-limit state.

    Instances are shared per (api_url, app_id, key) by :func:`app_for`, so the token cache and
    the rate-limit gate serve every trigger and the ingress of a process.
    """

    app_id: str
    api_url: str
    key: RSAPrivateKey
    clock: Callable[[], float] = time.time
    _tokens: dict[int, tuple[str, float]] = field(default_factory=dict)
    _blocked_until: dict[str, float] = field(default_factory=dict)
    _locks: dict[int, anyio.Lock] = field(default_factory=dict)

    def jwt(self) -> str:
        """Return an App JWT: RS256, ``iat`` 60 s back, ``exp`` 9 min ahead, ``iss`` the app."""
        now = int(self.clock())
        claims = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": self.app_id}
        return jwt.encode(claims, self.key, algorithm="RS256")

    def forget_token(self, installation_id: int) -> None:
        self._tokens.pop(installation_id, None)

    async def installation_token(
        self, http: httpx.AsyncClient, installation_id: int, *, max_wait: float = 0.0
    ) -> str:
        """Return a cached installation token, fetching one when missing or about to expire."""
        lock = self._locks.setdefault(installation_id, anyio.Lock())
        async with lock:  # one exchange per installation at a time, the others reuse it
            cached = self._tokens.get(installation_id)
            if cached is not None and cached[1] - self.clock() > TOKEN_REFRESH_MARGIN:
                return cached[0]
            response = await self._send(
                http,
                "POST",
                f"/app/installations/{installation_id}/access_tokens",
                auth=None,
                max_wait=max_wait,
            )
            data = response.json()
            token, expires = data.get("token"), data.get("expires_at")
            if not isinstance(token, str) or not isinstance(expires, str):
                raise GitHubError("the installation token answer has no token or expires_at")
            try:
                expires_at = datetime.fromisoformat(expires).timestamp()
            except ValueError:
                raise GitHubError(f"unreadable expires_at {expires!r}") from None
            self._tokens[installation_id] = (token, expires_at)
            return token

    async def call(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        installation_id: int | None = None,
        params: Mapping[str, Any] | None = None,
        max_wait: float = 0.0,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Call the API as the App (JWT) or as an installation; retry once after a 401.

        ``json``: a request body; ``headers``: extra headers (e.g. ``traceparent``)."""
        if installation_id is None:
            return await self._send(
                http,
                method,
                url,
                auth=None,
                params=params,
                max_wait=max_wait,
                json=json,
                headers=headers,
            )
        for attempt in (1, 2):
            token = await self.installation_token(http, installation_id, max_wait=max_wait)
            try:
                return await self._send(
                    http,
                    method,
                    url,
                    auth=token,
                    params=params,
                    max_wait=max_wait,
                    gate=f"installation:{installation_id}",
                    json=json,
                    headers=headers,
                )
            except GitHubError as exc:
                # A revoked or rotated token: get a fresh one once.
                if attempt == 2 or exc.status != 401:
                    raise
                self.forget_token(installation_id)
        raise AssertionError("unreachable")

    async def _send(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        auth: str | None,
        params: Mapping[str, Any] | None = None,
        max_wait: float,
        gate: str = "app",
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        for _ in range(3):
            wait = self._blocked_until.get(gate, 0.0) - self.clock()
            if wait > 0:
                if wait > max_wait:
                    raise RateLimited(
                        f"GitHub rate limit: next call allowed in {math.ceil(wait)} s", wait
                    )
                await anyio.sleep(wait)
            sent = {
                **(headers or {}),
                "Accept": "application/vnd.github+json",
                "User-Agent": USER_AGENT,
                "X-GitHub-Api-Version": API_VERSION,
                "Authorization": f"Bearer {auth if auth is not None else self.jwt()}",
            }
            target = url if url.startswith(("http://", "https://")) else self.api_url + url
            if not target.startswith(self.api_url + "/"):
                # Pagination links come from the answer: never send credentials elsewhere.
                raise GitHubError(f"{method}: refusing a URL outside {self.api_url}")
            try:
                response = await http.request(
                    method, target, headers=sent, params=params, json=json
                )
            except httpx.HTTPError as exc:
                raise GitHubError(f"{method} {url}: {type(exc).__name__}") from None
            delay = _retry_after(response, self.clock())
            if delay is not None:
                self._blocked_until[gate] = self.clock() + delay
                if response.status_code in (403, 429):
                    continue  # the gate waits (within max_wait) or raises RateLimited
            if response.is_success:
                return response
            raise GitHubError(
                f"{response.status_code} {method} {url}: {_message(response)}", response.status_code
            )
        raise GitHubError(f"{method} {url}: still rate limited after retries")


_APPS: dict[tuple[str, str, str], GitHubApp] = {}


def app_for(settings: GitHubSettings) -> GitHubApp:
    """Return the shared GitHubApp for these settings; SpecError when the key is unusable."""
    if not settings.has_app:
        raise SpecError(
            "GitHub App credentials are not configured: set github.app_id and "
            "github.private_key (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY)"
        )
    fingerprint = hashlib.sha256(settings.private_key.encode()).hexdigest()
    ident = (settings.api_url, settings.app_id, fingerprint)
    app = _APPS.get(ident)
    if app is None:
        try:
            key = load_pem_private_key(settings.private_key.encode(), password=None)
        except (ValueError, TypeError):
            raise SpecError("github.private_key is not an unencrypted PEM private key") from None
        if not isinstance(key, RSAPrivateKey):
            raise SpecError("github.private_key must be an RSA key (GitHub Apps sign with RS256)")
        app = _APPS[ident] = GitHubApp(app_id=settings.app_id, api_url=settings.api_url, key=key)
    return app


def client(timeout: float = 5.0) -> httpx.AsyncClient:
    """An HTTP client for GitHub calls; redirects are not followed (the API never needs it)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)


def next_link(response: httpx.Response) -> str | None:
    """Return the ``rel="next"`` URL of a paginated answer (``Link`` header), or None."""
    link = response.links.get("next")
    url = link.get("url") if link else None
    return url if isinstance(url, str) and url else None
