"""One socket write per HTTP answer: a response's head waits for the first part of its body.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body on ``http.response.body``: two ``send`` system calls and,
with ``TCP_NODELAY``, two TCP segments for every small JSON answer. On loopback and on a busy
server each such write costs as much as a good part of a webhook's own work.

:class:`HeldHead` stands between a request's uvicorn cycle and the connection's transport: it
holds the head until the next write, which then carries head and body together, so the bytes
on the wire are the same, in the same order, in one segment. A response whose body does not
follow in the same turn of the event loop (a stream that waits for its first chunk) gets its
head written at the end of that turn, as before; so does a ``HEAD`` answer (uvicorn writes no
body for it). Nothing else is held: a ``100 Continue`` comes before the response starts and is
written at once, and a close writes the held head first. The connection's protocol writes and
closes on its own too (a 400, a timeout, a shutdown): it calls :func:`flush_held` first, so a
held head still goes out, and before what the protocol writes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE


class Cycle(Protocol):
    """What :class:`HeldHead` reads of uvicorn's ``RequestResponseCycle``."""

    response_started: bool


class HeldHead:
    """The transport of one request's cycle, writing the response head with its body."""

    __slots__ = ("_cycle", "_held", "_holding", "_loop", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        cycle: Cycle,
        loop: asyncio.AbstractEventLoop,
        holding: list[HeldHead],
    ) -> None:
        self._transport = transport
        self._cycle: Cycle | None = cycle  # until its head is written
        self._loop = loop
        self._held: bytes | None = None
        self._holding = holding
        """The connection's heads held now (this one while it holds), oldest first."""

    def write(self, data: bytes) -> None:
        cycle = self._cycle
        if cycle is not None and cycle.response_started:
            # The cycle's first write since its response started: the status line and headers.
            # The cycle is let go: it holds this transport, and a reference cycle would leave
            # every request's cycle, scope and body to the cyclic GC instead of freeing them.
            self._cycle = None
            self._held = data
            self._holding.append(self)
            self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            self._holding.remove(self)
            data = held + data
        self._transport.write(data)

    def flush(self) -> None:
        """Write the held head, if still held (its body did not follow in the same turn)."""
        held = self._held
        if held is not None:
            self._held = None
            self._holding.remove(self)
            transport = self._transport
            # Closing with bytes still buffered, the transport sends what is written before it
            # closes (asyncio's and uvloop's alike), as it sent a head uvicorn wrote at once;
            # closing with nothing buffered, a write is dropped.
            if not transport.is_closing() or transport.get_write_buffer_size():
                transport.write(held)

    def close(self) -> None:
        self._cycle = None
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def flush_held(holding: list[HeldHead]) -> None:
    """Write a connection's held heads, oldest first: before the protocol's own write or close."""
    for head in holding.copy():  # each flush takes itself out of ``holding``
        head.flush()


def answer_at_once(
    cycle: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> bool:
    """Write a whole answer (``status``, ``headers``, ``body``) for uvicorn's request ``cycle``
    in one write, as its ``http.response.start`` and ``http.response.body`` would, without the
    two ASGI messages, their checks and the held head. The headers are the caller's own (valid
    names and values, a ``content-length``, no ``connection``); uvicorn's default headers and,
    on a connection that is not kept alive, ``connection: close`` are added as uvicorn does.

    Returns False, having done nothing, where this does not apply (the answer has started, the
    transport is paused for writing, an access log is on): the caller then sends through ASGI.
    """
    if cycle.response_started or cycle.flow.write_paused or cycle.access_log:
        return False
    cycle.waiting_for_100_continue = False
    if cycle.disconnected:
        cycle.response_started = True
        return True  # nobody to answer, as uvicorn's send
    parts = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *headers):
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    transport = cycle.transport
    # Written before the cycle counts as started: a HeldHead holds only a started answer's
    # first write (a head waiting for its body); this one is whole.
    transport.write(b"".join(parts))
    cycle.response_started = True
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()
    return True
