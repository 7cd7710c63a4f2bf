"""The per-workflow webhook route, ``{METHOD} /api/v1/public/webhook/workflow/{id}``: the hot path.

It is a route of the app's one routes table, first in it, but served as raw ASGI: Starlette's
request objects, endpoint wrapping and path regexes cost more per request than the whole of
wfsched's own work (auth, event, commit). Behaviour is that of the other routes: the same
checks in the same order (:mod:`wfsched.web.requests`) and the same JSON errors
(:mod:`wfsched.web.errors`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import URL
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from wfsched import otel
from wfsched.errors import NotFound
from wfsched.httpdirect import Exchange
from wfsched.httpjson import error_body
from wfsched.httplimits import BODY_RECEIVED, whole_body
from wfsched.httpwrites import answer_at_once
from wfsched.jsontext import dumpb
from wfsched.trigger import Inbound
from wfsched.web.errors import COUNTS, http_error_of, no_route
from wfsched.web.requests import (
    BODY_READ_TIMEOUT,
    HttpError,
    fold_headers,
    receive_body,
    whole_body_within,
)
from wfsched.web.services import services_of

PREFIX = "/api/v1/public/webhook/workflow/"
INGRESS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_DIRECT_METHODS = frozenset(m.encode() for m in INGRESS_METHODS)
_PREFIX_BYTES = PREFIX.encode()
_JSON_TYPE = (b"content-type", b"application/json")
# Prebuilt answers of ``matches``, which runs on every request (no path parameters: the
# handler takes the id from the path itself).
_FULL: tuple[Match, Scope] = (Match.FULL, {})
_NONE: tuple[Match, Scope] = (Match.NONE, {})


class WorkflowWebhookRoute(BaseRoute):
    """The route of ``PREFIX + "{id}"``, for every method (a trigger allows its own).

    It claims the whole ``PREFIX`` subtree, answering 404 for an id with a ``/`` in it, as no
    other route lives there: the match is one prefix test, and Starlette's trailing-slash
    redirect never sends ``…/{id}/`` to a webhook.
    """

    path = PREFIX + "{id}"
    methods = frozenset(INGRESS_METHODS)

    def __init__(self, *, body_timeout: float = BODY_READ_TIMEOUT) -> None:
        self.body_timeout = body_timeout

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(PREFIX) and len(path) > len(PREFIX):
                return _FULL
        return _NONE

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    def takes(self, method: bytes, target: bytes) -> bool:
        """A request to serve without ASGI (:mod:`wfsched.httpdirect`): an ingress method on a
        workflow's webhook path (no ``/`` in the id, no fragment); none while OpenTelemetry
        wants a span for each."""
        return (
            not otel.ENABLED
            and method in _DIRECT_METHODS
            and target.startswith(_PREFIX_BYTES)
            and len(target) > len(_PREFIX_BYTES)
            # find, not "in": see wfsched.httpjson
            and target.partition(b"?")[0].find(b"/", len(_PREFIX_BYTES)) < 0
            and target.find(b"#") < 0
        )

    async def serve(self, exchange: Exchange, app: Any) -> None:
        """Answer a request the daemon's protocol read itself (:mod:`wfsched.httpdirect`)."""
        status, headers, data = await self._reply(
            app,
            exchange.method,
            exchange.path,
            exchange.headers,
            exchange.query_string,
            exchange.client,
            None,
            False,
            bytes(exchange.body),
        )
        if not answer_at_once(exchange, status, headers, data):
            await exchange.answer(status, headers, data)  # paused for writing: wait for room

    async def handle(self, scope: Scope, receive: Receive, send: Send, cycle: Any = None) -> None:
        """Answer one request; ``cycle``: the daemon's HTTP protocol's (see
        :data:`wfsched.httplimits.CYCLE`), to read a whole body and write the answer at once
        (without it, through ``receive`` and ``send``)."""
        path: str = scope["path"]
        if "/" in path[len(PREFIX) :]:
            # Not counted as a webhook answer: no webhook route has this path.
            await no_route(URL(scope=scope).path)(scope, receive, send)
            return
        status, headers, data = await self._reply(
            scope["app"],
            scope["method"],
            path,
            scope["headers"],
            scope.get("query_string", b""),
            scope.get("client"),
            receive,
            scope.get(BODY_RECEIVED, False),
            None if cycle is None else whole_body(cycle),
        )
        if cycle is not None and answer_at_once(cycle, status, headers, data):
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _reply(
        self,
        app: Any,
        method: str,
        path: str,
        raw_headers: list[tuple[bytes, bytes]],
        query_string: bytes,
        client: tuple[str, int] | None,
        receive: Receive | None,
        received: bool,
        whole: bytes | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The answer to a request on ``path``: status, headers and body, every failure a JSON
        error; the body is ``whole`` if already read, else read through ``receive``."""
        try:
            headers, raw = fold_headers(raw_headers)
            workflow_id = path[len(PREFIX) :]
            manager = services_of(app).manager
            try:
                trigger = manager.ingress_trigger(workflow_id)
            except NotFound:
                # Off the hot path: only a request that found no running trigger gets here.
                # It tells a workflow that is not deployed (404) from one whose trigger is not
                # running yet or any more (503), or returns the trigger once it runs.
                trigger = await manager.ingress_after_miss(workflow_id)
            if not trigger.allows_method(method):
                raise _not_allowed(trigger, method)
            try:
                if whole is None:
                    body = await receive_body(
                        receive,  # type: ignore[arg-type]  # given when ``whole`` is not
                        headers.get("content-length"),
                        trigger.max_body_bytes,
                        timeout=self.body_timeout,
                        received=received,
                    )
                else:  # no coroutine to make and run for what is already read
                    body = whole_body_within(
                        whole, headers.get("content-length"), trigger.max_body_bytes
                    )
            except HttpError as exc:
                # Too large, too slow: the trigger never sees it, so the route notes it.
                trigger.ctx.record_occurrence("refused", f"{exc.status} {exc.code}: {exc.detail}")
                raise
            out = await trigger.receive(
                _inbound(method, path, query_string, client, body, headers, raw)
            )
            status, answer, extra = out.status, out.body, out.headers
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
            err = http_error_of(exc, path=path, method=method)
            status, answer, extra = err.status, error_body(err.code, err.detail), err.headers
        COUNTS[status].inc()
        data = dumpb(answer)
        answer_headers = [_JSON_TYPE, (b"content-length", str(len(data)).encode())]
        if extra:  # a 202 has none
            answer_headers += [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()
            ]
        return status, answer_headers, data


def _not_allowed(trigger: Any, method: str) -> HttpError:
    """The 405 of a method the trigger does not allow, noted in its ledger."""
    allowed = ", ".join(m for m in INGRESS_METHODS if trigger.allows_method(m))
    trigger.ctx.record_occurrence(
        "refused", f"405 method_not_allowed: {method} (allowed: {allowed})"
    )
    return HttpError(405, "method_not_allowed", f"allowed: {allowed}", {"Allow": allowed})


def inbound_of(scope: Scope, body: bytes) -> Inbound:
    """The request a trigger sees, from an ASGI scope and the body read from it."""
    headers, raw = fold_headers(scope["headers"])
    return _inbound(
        scope["method"],
        scope["path"],
        scope.get("query_string", b""),
        scope.get("client"),
        body,
        headers,
        raw,
    )


def _inbound(
    method: str,
    path: str,
    raw_query: bytes,
    client: tuple[str, int] | None,
    body: bytes,
    headers: dict[str, str],
    raw: list[tuple[str, str]],
) -> Inbound:
    # The query as Starlette's QueryParams: latin-1 bytes, percent-escapes decoded as UTF-8,
    # the last of a repeated name winning.
    query = (
        dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) if raw_query else {}
    )
    return Inbound(
        method=method,
        path=path,
        query=query,
        headers=headers,
        raw_headers=raw,
        body=body,
        client=client[0] if client else None,
    )
