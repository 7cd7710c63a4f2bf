"""Limits on HTTP connections, on top of uvicorn's httptools protocol.

Left to itself uvicorn bounds none of these: httptools buffers a header of any size, a
connection that never sends a request is never closed (the keep-alive timer starts only after
a response), and ``limit_concurrency`` still accepts every connection and answers 503 only
once a request has been read. Here, per connection:

- the request head (request line and headers) may hold ``max_header_bytes``; past that the
  answer is 431 and a close, without reading the rest. Bytes are counted as they arrive, so a
  request pipelined behind another may get up to one socket read (256 KiB) more;
- a request head must be complete within ``header_timeout`` of its first byte (408 and a
  close), and a new connection must send one within ``header_timeout`` (closed);
- an idle keep-alive connection is closed after ``keep_alive`` seconds (uvicorn's setting, but
  one timer per connection that re-arms itself for what is left of the idle time, instead of
  uvicorn's new timer after every answer, cancelled by the next request);
- at most ``max_connections`` are open at once: one more is answered 503 and closed as soon as
  it is accepted, so it costs neither a request read nor a slot.

The common case pays nothing extra: a request that arrives in one read arms no timer, not even
the body's deadline (the scope says the body is all there, ``BODY_RECEIVED``). Each answer's
head is written with its body (:mod:`wfsched.httpwrites`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wfsched.config import Settings
from wfsched.httpwrites import HeldHead, flush_held

log = logging.getLogger("wfsched.http")
BODY_RECEIVED = "wfsched.body_received"
"""Scope key this protocol sets (true) once it holds a request's whole body. Reading such a
body cannot wait, so the app's body reader reads it without a deadline (a timer costs more
than the rest of the read)."""
CYCLE = "wfsched.cycle"
"""Scope key this protocol sets to a weak reference to the request's uvicorn cycle, for the
webhook route to read a whole body (:func:`whole_body`) and write its answer at once
(``httpwrites.answer_at_once``)."""
MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT = 10.0
KEEP_ALIVE = 30
"""Seconds; above uvicorn's 5 so that a proxy's pooled connection is rarely closed under it."""
TEST_HOOK = "_WFSCHED_HTTP_TIMEOUTS"
"""Private, for tests only: ``"HEADER_SECONDS,KEEP_ALIVE_SECONDS"`` instead of the defaults."""
FD_RESERVE = 256
"""Open files the daemon needs besides its HTTP connections (store, locks, IMAP, dispatch)."""
WARN_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The connection limits of the daemon's HTTP server."""

    max_header_bytes: int = MAX_HEADER_BYTES
    header_timeout: float = HEADER_TIMEOUT
    keep_alive: int = KEEP_ALIVE
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        header, keep_alive = HEADER_TIMEOUT, KEEP_ALIVE
        hook = os.environ.get(TEST_HOOK)
        if hook:
            first, second = hook.split(",")
            header, keep_alive = float(first), round(float(second))
        return cls(
            header_timeout=header,
            keep_alive=keep_alive,
            max_connections=max(1, int(settings.get("server.max_connections"))),
        )


def _plain(status: bytes, text: str, *extra: bytes) -> bytes:
    body = text.encode()
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\n",
            *[h + b"\r\n" for h in extra],
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


REFUSED = _plain(b"503 Service Unavailable", "too many open connections", b"retry-after: 1")
TOO_SLOW = _plain(b"408 Request Timeout", "the request headers did not arrive in time")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`HttpLimits`."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    _warned_at: ClassVar[float] = -WARN_EVERY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._in_head = True
        """Between requests or inside a request's head: the bytes arriving count."""
        self._head_started = False
        self._head_bytes = 0
        self._heads = 0
        """Request heads completed on this connection."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None
        """Loop time of the last answer while idle between requests; None while busy."""
        self._idle_timer: asyncio.TimerHandle | None = None
        self._holding: list[HeldHead] = []
        """Answer heads held (:mod:`wfsched.httpwrites`): written before the protocol's own
        writes and closes (``_reject``, uvicorn's 400, keep-alive timeout and shutdown)."""

    # connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.server_state.connections) >= self.limits.max_connections:
            self._refused = True
            self._warn_refused()
            transport.write(REFUSED)
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if not self._refused:
            super().connection_lost(exc)

    # keep-alive: one timer per connection -----------------------------------------------
    def on_response_complete(self) -> None:
        # uvicorn's, except for the keep-alive timer (``_idle_check``).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(
                self._idle_since + self.timeout_keep_alive, self._idle_check
            )

    def _unset_keepalive_if_required(self) -> None:
        # Called by uvicorn as bytes arrive: the connection is busy, its timer stays armed.
        self._idle_since = None

    def timeout_keep_alive_handler(self) -> None:
        flush_held(self._holding)
        super().timeout_keep_alive_handler()

    def shutdown(self) -> None:
        flush_held(self._holding)
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        flush_held(self._holding)
        super().send_400_response(msg)

    def handle_websocket_upgrade(self) -> None:
        flush_held(self._holding)
        super().handle_websocket_upgrade()

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._idle_since is None or self.transport.is_closing():
            return  # busy: the next answer arms the timer again
        deadline = self._idle_since + self.timeout_keep_alive
        if self.loop.time() >= deadline:
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_at(deadline, self._idle_check)

    def _warn_refused(self) -> None:
        now = time.monotonic()
        if now - LimitedHttpToolsProtocol._warned_at >= WARN_EVERY:
            LimitedHttpToolsProtocol._warned_at = now
            log.warning(
                f"refusing HTTP connections: {self.limits.max_connections} are open "
                "(server.max_connections)"
            )

    # the request head: size ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._received_past_budget(data)
                return
        super().data_received(data)
        if self._in_head and self._head_started and self._head_timer is None:
            self._arm_head_timer()  # a head split over reads: it has its deadline now

    def _received_past_budget(self, data: bytes) -> None:
        """Feed only what fits the head's budget; if the head is still open, answer 431."""
        budget = len(data) - (self._head_bytes - self.limits.max_header_bytes)
        heads = self._heads
        super().data_received(data[:budget])
        if self.transport.is_closing():
            return
        if self._heads == heads:
            self._reject(
                _plain(
                    b"431 Request Header Fields Too Large",
                    f"the request headers exceed {self.limits.max_header_bytes} bytes",
                )
            )
            return
        super().data_received(data[budget:])  # the head ended in time; the rest is body

    # the request head: time ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_complete()
        self._start_cycle()

    def _head_complete(self) -> None:
        self._heads += 1
        self._in_head = False
        self._head_started = False
        self._cancel_head_timer()

    def _start_cycle(self) -> None:
        """uvicorn's: the request's ASGI cycle, its app started (or queued behind the one
        under way), its answer written in one write."""
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:
            # One write per answer (head and body together); see wfsched.httpwrites.
            self.cycle.transport = HeldHead(  # type: ignore[assignment]
                self.transport, self.cycle, self.loop, self._holding
            )
            # Weakly: a scope holding its cycle (which holds the scope) would be a reference
            # cycle, every request's scope, headers and body left to the cyclic GC.
            self.cycle.scope[CYCLE] = weakref.ref(self.cycle)  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        self._message_complete()
        super().on_message_complete()
        if self.cycle is not None:
            # The whole body is here: the app reads it without arming a deadline.
            self.cycle.scope[BODY_RECEIVED] = True  # type: ignore[literal-required]

    def _message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # Still answering the previous request: the client is not the slow one.
            self._arm_head_timer()
            return
        if self._head_started:
            self._reject(TOO_SLOW)
        else:
            flush_held(self._holding)
            self.transport.close()  # connected and silent: nobody to answer

    def _reject(self, response: bytes) -> None:
        self._in_head = False
        self._cancel_head_timer()
        flush_held(self._holding)
        self.transport.write(response)
        self.transport.close()


def whole_body(cycle: Any) -> bytes | None:
    """The request's body if the protocol holds all of it (None: read it through ``receive``),
    taken as uvicorn's ``receive`` takes it."""
    if cycle.more_body or cycle.disconnected or cycle.response_complete:
        return None
    body = bytes(cycle.body)
    cycle.body = bytearray()
    return body


def protocol_class(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for ``limits``."""
    return type("LimitedHttpTools", (LimitedHttpToolsProtocol,), {"limits": limits})


def ensure_open_files(limits: HttpLimits) -> None:
    """Raise the soft open-file limit so that ``max_connections`` fit, or warn that they don't.

    With the common default of 1024 files, 1000 connections plus the daemon's own files hit
    the limit, and then the server stops accepting for everyone.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < wanted:
            log.warning(
                f"server.max_connections = {limits.max_connections} needs about {wanted} open "
                f"files, but the hard limit is {hard}: raise it (ulimit -n, LimitNOFILE=)"
            )
