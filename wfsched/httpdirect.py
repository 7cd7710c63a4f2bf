"""Requests the daemon's HTTP protocol serves itself, without an ASGI cycle: the webhook path.

uvicorn turns every request into an ASGI call: a scope, a request-response cycle with its own
event, a task running the app, ``receive`` and ``send`` messages checked one by one. Measured
under load that machinery costs several times what a minimal asyncio protocol spends on the
same request, and for a small webhook it is the largest single part of the daemon's own work.

A :class:`DirectRoute` (the app's per-workflow webhook route) names the requests it serves
directly (:meth:`DirectRoute.takes`); :class:`DirectProtocol` then reads such a request's body
into an :class:`Exchange` instead of a cycle and, once the body is complete, runs
:meth:`DirectRoute.serve` as the request's one task, which answers with
:meth:`Exchange.answer`: one write, uvicorn's default headers, keep-alive as uvicorn keeps it.

Everything else still goes through ASGI, unchanged: other paths, a request pipelined behind
one still being answered, ``Expect: 100-continue``, upgrades, a percent-encoded path, and a
body that does not arrive in the same read as the end of its head (the ASGI route reads it
with its deadline). With a trusted proxy configured (uvicorn's proxy-headers middleware wraps
the app) the daemon gives the protocol no route at all; with OpenTelemetry on, the route takes
no request (each gets its span through ASGI).

The connection's own state stays uvicorn's: an exchange stands where a cycle would, with the
attributes the protocol reads of one (``body``, ``more_body``, ``response_complete``,
``disconnected``, ``keep_alive``), so disconnects, graceful shutdown (the task is one of the
server's tasks, waited for), keep-alive and pipelining behave as for any request.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from wfsched.httplimits import HttpLimits, LimitedHttpToolsProtocol
from wfsched.httpwrites import answer_at_once


class DirectRoute(Protocol):
    """What the app offers the protocol for the requests it serves without ASGI."""

    def takes(self, method: bytes, target: bytes) -> bool:
        """True for a request (method, request target as sent) to serve directly."""

    def serve(self, exchange: Exchange) -> Coroutine[Any, Any, None]:
        """Answer ``exchange`` (its body is complete) with :meth:`Exchange.answer`."""


class _NoEvent:
    """The ``message_event`` of an exchange: the protocol sets it, nobody waits on it."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class Exchange:
    """One request served directly: its head and body, and the state of its answer.

    ``method`` and ``path`` are text (the path as sent, not percent-decoded: such paths go
    through ASGI), ``query_string`` and ``headers`` as uvicorn gives them to ASGI (lower-case
    names), ``client`` the peer's address.
    """

    __slots__ = (
        "__weakref__",
        "access_log",
        "body",
        "client",
        "default_headers",
        "disconnected",
        "flow",
        "headers",
        "keep_alive",
        "message_event",
        "method",
        "more_body",
        "on_response",
        "path",
        "previous",
        "query_string",
        "response_complete",
        "response_started",
        "transport",
        "waiting_for_100_continue",
    )

    def __init__(
        self, protocol: DirectProtocol, method: str, target: bytes, keep_alive: bool
    ) -> None:
        path, _, query = target.partition(b"?")
        self.method = method
        self.path = path.decode("ascii")
        self.query_string = query
        self.headers: list[tuple[bytes, bytes]] = protocol.headers
        self.client: tuple[str, int] | None = protocol.client
        self.body = bytearray()
        self.more_body = True
        self.previous: RequestResponseCycle | None = protocol.cycle
        """The connection's cycle before this one (answered, or None), until the body is
        complete."""
        # What uvicorn's protocol and ``answer_at_once`` read of a cycle.
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.default_headers = protocol.server_state.default_headers
        self.on_response = protocol.on_response_complete
        self.keep_alive = keep_alive
        self.message_event = _NO_EVENT
        self.access_log = False
        self.waiting_for_100_continue = False
        self.disconnected = False
        self.response_started = False
        self.response_complete = False

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Write the whole answer at once (after the client has read enough, if it is slow)."""
        while not answer_at_once(self, status, headers, body):
            await self.flow.drain()  # paused for writing; a disconnect resumes it too


class DirectProtocol(LimitedHttpToolsProtocol):
    """The daemon's HTTP protocol: the limits of its base class, and :attr:`route`'s requests
    served without ASGI."""

    route: ClassVar[DirectRoute | None] = None

    def on_message_begin(self) -> None:
        # uvicorn's, without the ASGI scope: only a request going through ASGI needs one
        # (``_start_cycle`` makes it).
        self._head_started = True
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _start_cycle(self) -> None:
        # The scope uvicorn would have made at the request's start, with the head read since.
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        super()._start_cycle()

    def on_headers_complete(self) -> None:
        route = self.route
        parser = self.parser
        previous = self.cycle
        method = parser.get_method()
        if (
            route is None
            or self.expect_100_continue
            or (previous is not None and not previous.response_complete)
            or parser.should_upgrade()
            or self.url.find(b"%") >= 0  # not "in": see wfsched.httpjson
            or not route.takes(method, self.url)
        ):
            super().on_headers_complete()
            return
        self._head_complete()
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        exchange = Exchange(self, method.decode("ascii"), self.url, keep_alive)
        self.cycle = exchange  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        exchange: Any = self.cycle
        if type(exchange) is not Exchange:
            super().on_message_complete()
            return
        self._message_complete()
        exchange.more_body = False
        exchange.previous = None  # no going back to ASGI now; nor a chain of every exchange
        route = self.route
        assert route is not None
        task = self.loop.create_task(route.serve(exchange))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        exchange: Any = self.cycle
        if (
            type(exchange) is Exchange
            and exchange.more_body
            and not exchange.disconnected
            and not self.transport.is_closing()
        ):
            # The body did not come with the head: ASGI reads the rest, with its deadline.
            self.cycle = exchange.previous  # type: ignore[assignment]  # uvicorn: None at start
            self._start_cycle()
            cycle = self.cycle
            if cycle is not None:
                cycle.body += exchange.body
                cycle.message_event.set()


def protocol_class(limits: HttpLimits, route: DirectRoute | None) -> type[DirectProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for ``limits`` and ``route``."""
    return type("WfschedHttp", (DirectProtocol,), {"limits": limits, "route": route})
