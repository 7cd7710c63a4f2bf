"""The ``webhook`` trigger: ``{METHOD} /api/v1/public/webhook/workflow/{id}`` fires the workflow.

A request is checked in this order, and nothing is recorded for a refused one: method (405, by
the web layer), body size (413, while reading), ``auth`` over the raw bytes (401), ``rate_limit``
(429 with Retry-After; only authenticated requests count, so an unauthenticated flood cannot
use it up), body and headers (400). The event is then committed and only then answered 202
``{"execution_id", "workflow_id", "status": "accepted"}``.

Dedupe: a delivery is recorded once per key; a repeat answers 202 with the first execution id.
The key is the Standard Webhooks ``webhook-id`` header whenever the request carries one (with
``auth.type = "standard-webhooks"`` it is always present and signed), whatever
``dedupe_header`` says: the two never combine into one key, because a replay of a signed message
keeps its webhook-id while the other header may change or be absent. ``dedupe_header`` is the
key of requests without a ``webhook-id``.

An unknown or paused workflow, or one without an enabled webhook trigger, gets 404; one
deployed and active whose trigger is starting, stopping or being replaced gets 503 with
Retry-After (the core's routing decides both).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from wfsched import (
    AuthError,
    BadBody,
    BaseTrigger,
    Fields,
    FireRequest,
    FireResult,
    Inbound,
    Outbound,
    SpecError,
    TriggerContext,
    TriggerSpec,
    hookimpl,
)
from wfsched.triggers.webhook.auth import RESOLVED_KEYS, Verifier, WebhookAuth, parse_auth
from wfsched.triggers.webhook.payload import ALWAYS_DROPPED, decode_body, has_nul, visible_headers

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_MAX_BODY = 1024 * 1024
MAX_BODY_LIMIT = 32 * 1024 * 1024
MAX_RATE = 1_000_000.0
MAX_DEDUPE_CHARS = 256
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_DEDUPE_VALUE = re.compile(r"[\x21-\x7e]+")
# RFC 9110 §11.6.1: a 401 names the scheme a client should use, where there is one.
_CHALLENGES = {
    "basic": 'Basic realm="wfsched", charset="UTF-8"',
    "token": "Bearer",
    "jwt": "Bearer",
}


class TokenBucket:
    """``rate`` requests per second with a burst of one second's worth (at least 1)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self._clock = clock
        self._stamp = clock()

    def take(self) -> float:
        """Take a token: return 0 when allowed, else the seconds until one is available."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class WebhookTrigger(BaseTrigger):
    """Fires on HTTP requests to the workflow's public webhook URL."""

    type = "webhook"
    ingress = "workflow"

    def __init__(self, spec: TriggerSpec, ctx: TriggerContext) -> None:
        super().__init__(spec, ctx)
        self._methods = frozenset(self.config.get("methods", ("POST",)))
        self._max_body = int(self.config.get("max_body_bytes", DEFAULT_MAX_BODY))
        self._auth: WebhookAuth = parse_auth(self.config.get("auth"))
        self._dropped = self._auth.auth_headers() | ALWAYS_DROPPED
        self._dedupe_header: str | None = self.config.get("dedupe_header")
        rate = self.config.get("rate_limit")
        self._bucket = TokenBucket(float(rate)) if rate else None
        self._verifier: Verifier | None = None
        self._path = f"/api/v1/public/webhook/workflow/{ctx.workflow_id}"
        self._challenge = _CHALLENGES.get(self._auth.type, "")
        if self._auth.type == "token" and self._auth.header != "authorization":
            self._challenge = ""

    # deploy time ----------------------------------------------------------------------------
    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        fields = Fields(
            config, allowed={"methods", "max_body_bytes", "auth", "dedupe_header", "rate_limit"}
        )
        methods: list[str] = []
        for method in fields.str_list("methods", ["POST"]):
            name = method.upper()
            if name not in METHODS:
                raise fields.error("methods", f"{method!r} is not one of {', '.join(METHODS)}")
            if name not in methods:
                methods.append(name)
        if not methods:
            raise fields.error("methods", "must list at least one method")
        out: dict[str, Any] = {"methods": methods}
        out["max_body_bytes"] = fields.int("max_body_bytes", DEFAULT_MAX_BODY, minimum=0)
        if out["max_body_bytes"] > MAX_BODY_LIMIT:
            raise fields.error("max_body_bytes", f"must be at most {MAX_BODY_LIMIT} (32 MiB)")
        table = fields.table_("auth", {"type": "none"})
        auth = parse_auth(table)
        out["auth"] = dict(table)
        dedupe = fields.str("dedupe_header", None)
        if dedupe is not None:
            if not _HEADER_NAME.fullmatch(dedupe):
                raise fields.error("dedupe_header", "must be an HTTP header name")
            dedupe = dedupe.lower()
            if dedupe in auth.auth_headers() | ALWAYS_DROPPED:
                raise fields.error("dedupe_header", "must not be a header carrying credentials")
            out["dedupe_header"] = dedupe
        rate = fields.number("rate_limit", None)
        if rate is not None:
            if not 0 < rate <= MAX_RATE or not math.isfinite(rate):
                raise fields.error("rate_limit", "must be a number of requests per second > 0")
            out["rate_limit"] = rate
        return out

    @classmethod
    def warnings(cls, config: Mapping[str, Any]) -> list[str]:
        auth = config.get("auth") or {}
        if auth.get("type", "none") == "none":
            advice = (
                "public webhook without auth: anyone who knows its URL can fire it; set "
                "auth.type to hmac, standard-webhooks, jwt, token or basic"
            )
            return [advice]
        return []

    @classmethod
    def secret_fields(cls, config: Mapping[str, Any]) -> list[str]:
        auth = config.get("auth")
        if not isinstance(auth, Mapping):
            return []
        return [f"auth.{key}" for key in RESOLVED_KEYS if key in auth]

    def describe(self) -> dict[str, Any]:
        return {
            "path": self._path,
            "methods": sorted(self._methods),
            "max_body_bytes": self.max_body_bytes,
            "auth": self._auth.type,
            "dedupe_header": self._dedupe_header,
            "rate_limit": self.config.get("rate_limit"),
        }

    # run time -------------------------------------------------------------------------------
    def _get_verifier(self) -> Verifier | None:
        """The auth secrets, resolved by the first request (and by ``wfsched check``).

        One that cannot be resolved (unset env:, unreadable file:) reports "failing" and is
        tried again by each request; requests meanwhile get 503 so senders retry.
        """
        if self._verifier is None:
            try:
                self._verifier = Verifier(self._auth)
            except SpecError as exc:
                self.ctx.report_health("failing", str(exc))
                return None
            self.ctx.report_health("healthy")
        return self._verifier

    @property
    def max_body_bytes(self) -> int:
        return self._max_body

    def allows_method(self, method: str) -> bool:
        return method in self._methods

    def _refuse(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> Outbound:
        """The error answer, noted in the ledger (``explain`` shows it as refused)."""
        self.ctx.record_occurrence("refused", f"{status} {code}: {detail}")
        return Outbound.error(status, code, detail, headers)

    async def receive(self, request: Inbound) -> Outbound:
        verifier = self._get_verifier()
        if verifier is None:
            return self._refuse(
                503,
                "trigger_unavailable",
                "this webhook's auth secret cannot be "
                "resolved; the operator must fix the configuration",
                {"Retry-After": "30"},
            )
        try:
            verifier.verify(request.headers, request.body)
        except AuthError as exc:
            extra = {"WWW-Authenticate": self._challenge} if self._challenge else None
            return self._refuse(401, "unauthorized", str(exc), extra)
        # Only authenticated requests count: an unsigned flood must not lock out the sender.
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait:
                return self._refuse(
                    429,
                    "rate_limited",
                    "too many requests for this webhook",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        dedupe_key, problem = self._dedupe_key(request)
        if problem is not None:
            return self._refuse(400, "bad_request", problem)
        query = request.query
        if (query and (has_nul(query) or has_nul(query.values()))) or has_nul(
            request.headers.values()
        ):
            return self._refuse(
                400, "bad_request", "the query or a header contains a NUL character"
            )
        try:
            body, encoding = decode_body(request.body, request.headers.get("content-type"))
        except BadBody as exc:
            return self._refuse(400, exc.code, str(exc))
        payload = {
            "method": request.method,
            "path": request.path,
            "query": dict(query),
            "headers": visible_headers(request.headers, self._dropped),
            "body": body,
            "body_encoding": encoding,
        }
        result = await self.ctx.fire(FireRequest(payload=payload, dedupe_key=dedupe_key))
        return self._accepted(result)

    def _dedupe_key(self, request: Inbound) -> tuple[str | None, str | None]:
        """Return ``(dedupe key or None, problem or None)`` from the delivery id header."""
        name = "webhook-id" if "webhook-id" in request.headers else self._dedupe_header
        if name is None:
            return None, None
        count = sum(1 for key, _ in request.raw_headers if key == name)
        if count == 0:
            return None, None
        if count > 1:
            return None, f"the {name} header is repeated; send it once"
        value = request.headers[name].strip()
        if not value or len(value) > MAX_DEDUPE_CHARS or not _DEDUPE_VALUE.fullmatch(value):
            return None, (
                f"the {name} header must be 1-{MAX_DEDUPE_CHARS} visible ASCII characters"
            )
        return f"webhook:{self.ctx.trigger_id}:{value}", None

    def _accepted(self, result: FireResult) -> Outbound:
        body: dict[str, Any] = {
            "execution_id": result.execution_id,
            "workflow_id": result.workflow_id,
            "status": "accepted",
        }
        if not result.created:
            body["duplicate"] = True
        return Outbound(status=202, body=body)

    async def invoke(self, data: Any, *, user: str) -> FireResult:
        """Fire from the trusted gateway route: ``data`` is the forwarded JSON body."""
        payload = {
            "method": "POST",
            "path": f"/api/v1/triggers/workflows/{self.ctx.workflow_id}/webhook",
            "query": {},
            "headers": {},
            "body": data,
            "body_encoding": None if data is None else "json",
            "user": user,
        }
        return await self.ctx.fire(FireRequest(payload=payload))


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(WebhookTrigger)
