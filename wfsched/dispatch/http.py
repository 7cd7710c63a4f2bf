"""A small HTTP/1.1 client for the HTTP dispatch targets: POST over a keep-alive pool.

Built on an asyncio ``Protocol`` and httptools' response parser (llhttp, the parser uvicorn
uses) because the POST itself was most of a dispatch's CPU with aiohttp's ``ClientSession``.
It does only what a dispatch needs: one origin per pool, ``POST`` with a small body that is
already in memory, no redirects followed, no cookies, no proxies, no decompression on the way
(``Accept-Encoding`` is not sent; an error body is inflated only to show it).

A connection goes back to the pool only after a complete response the server did not end with
``Connection: close`` (HTTP/1.0 answers without ``keep-alive`` close too), and is closed after
``keepalive`` seconds idle. A caller cancelled mid-exchange (a timeout) closes its connection.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import aiohappyeyeballs
import httptools
from yarl import URL

__all__ = ["BODY_KEPT", "ConnectionPool", "Disconnected", "HTTPError", "Response"]

BODY_KEPT = 4096
"""Bytes of a response body kept (the rest is read and dropped): enough to show an error."""
HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried in parallel (RFC 8305, as aiohttp)."""


class HTTPError(Exception):
    """No complete answer: the host could not be reached or the exchange broke off."""


class Disconnected(HTTPError):
    """The connection closed before any byte of an answer came back (nothing was answered)."""

    def __init__(self) -> None:
        super().__init__("ServerDisconnectedError: Server disconnected")


class Response:
    """A complete answer: status, reason, headers and the first :data:`BODY_KEPT` body bytes."""

    __slots__ = ("body", "raw_headers", "reason", "status")

    def __init__(
        self, status: int, reason: str, raw_headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self.status = status
        self.reason = reason
        self.raw_headers = raw_headers
        self.body = body

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def text(self, limit: int = BODY_KEPT) -> str:
        """The start of the body as text, inflated first if it came gzip- or deflate-encoded."""
        body = self.body
        encoding = (self.header("Content-Encoding") or "").strip().lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            # wbits 47: a gzip or zlib header, detected; a body cut at BODY_KEPT inflates partly.
            try:
                body = zlib.decompressobj(47).decompress(body, limit)
            except zlib.error:
                pass
        return body[:limit].decode("utf-8", "replace")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time (no pipelining)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.idle_since = 0.0
        self.dropped = False
        self._reset()

    def _reset(self) -> None:
        self.answered = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.kept = 0
        self.headers_done = False
        self.keep_alive = False

    async def exchange(self, request: bytes) -> Response:
        """Write ``request`` and wait for the complete response."""
        if self.dropped or self.transport is None:
            raise Disconnected()
        self._reset()
        waiter: asyncio.Future[Response] = self.pool.loop.create_future()
        self.waiter = waiter
        self.transport.write(request)
        try:
            return await waiter
        except asyncio.CancelledError:
            if self.waiter is waiter:  # cut off mid-exchange: the connection is unusable
                self.close()
            raise

    def close(self) -> None:
        self.pool._drop(self)
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: HTTPError) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    # asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPError(f"invalid HTTP response: {exc}"))
        except httptools.HttpParserUpgrade:  # nothing asked for one
            self._fail(HTTPError("invalid HTTP response: an unrequested protocol upgrade"))

    def eof_received(self) -> bool:
        return False  # close; connection_lost settles a pending exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._drop(self)
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if not self.answered:
            waiter.set_exception(Disconnected())
        elif self.headers_done and self._delimited_by_close():
            waiter.set_result(self._response())
        else:
            waiter.set_exception(
                HTTPError("Response payload is not completed: the connection closed mid-response")
            )

    def _delimited_by_close(self) -> bool:
        """Whether the body ends with the connection: no Content-Length, not chunked."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    # httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.waiter is None:  # a second answer to one request
            self.close()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, chunk: bytes) -> None:
        if self.kept < BODY_KEPT:
            self.body.append(chunk)
            self.kept += len(chunk)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        if waiter is None:
            return
        if self.parser.get_status_code() < 200:  # 1xx: informational, the answer follows
            self._reset()
            self.answered = True
            return
        self.waiter = None
        if self.keep_alive:
            self.pool._release(self)
        else:
            self.close()
        if not waiter.done():
            waiter.set_result(self._response())

    def _response(self) -> Response:
        return Response(
            self.parser.get_status_code(),
            self.reason.decode("latin-1"),
            self.headers,
            b"".join(self.body)[:BODY_KEPT],
        )


class ConnectionPool:
    """Keep-alive connections to the origin of ``url``, at most ``limit`` open at once.

    ``headers`` go with every request (``Host`` and ``Content-Length`` are added). Create and
    use it inside one running event loop.
    """

    def __init__(
        self,
        url: URL,
        *,
        limit: int,
        keepalive: float,
        headers: Mapping[str, str],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host = url.raw_host or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = None
        if url.scheme == "https":
            self.ssl = ssl_context or _trust(
                os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
            )
        self.limit = limit
        self.keepalive = keepalive
        self._fixed = f"Host: {url.host_port_subcomponent}\r\n" + _lines(headers)
        self._idle: list[_Connection] = []  # oldest first; taken from the end
        self._connections: set[_Connection] = set()
        self._open = 0  # connections open or being opened, counted against ``limit``
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections open or being opened."""
        return self._open

    async def post(self, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """POST ``body`` to ``target`` (an encoded path and query) with ``headers`` added."""
        lines = _lines(headers)
        request = (
            f"POST {target} HTTP/1.1\r\n{self._fixed}{lines}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        connection = await self._acquire()
        return await connection.exchange(request)

    def close(self) -> None:
        """Close every connection; pending requests fail, later ones are refused."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._connections):
            connection.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(HTTPError("the connection pool is closed"))

    # connections ------------------------------------------------------------------------
    async def _acquire(self) -> _Connection:
        if self._closed:
            raise HTTPError("the connection pool is closed")
        idle = self._idle
        if idle:
            now = self.loop.time()
            while idle:
                connection = idle.pop()
                if now - connection.idle_since < self.keepalive:
                    return connection
                connection.close()
        if self._open >= self.limit:
            waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._give_back(waiter.result())
                raise
            if handed is not None:
                return handed
            # None: a connection closed, and its place was kept for this waiter.
        else:
            self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._give_back(None)
            raise

    async def _connect(self) -> _Connection:
        try:
            infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            sock = await aiohappyeyeballs.start_connection(
                infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, loop=self.loop
            )
            try:
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    sock=sock,
                    ssl=self.ssl,
                    server_hostname=self.host.rstrip(".") if self.ssl else None,
                )
            except BaseException:
                sock.close()
                raise
        except (OSError, RuntimeError) as exc:  # RuntimeError: uvloop's, for some failures
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise HTTPError(reason) from None
        if connection.dropped:  # closed by the server before it was handed out
            raise Disconnected()
        if self._closed:
            connection.close()
            raise HTTPError("the connection pool is closed")
        self._connections.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        """Return a connection whose exchange completed and may be reused."""
        if self._closed or connection.dropped:
            connection.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = self.loop.time()
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(connection.idle_since + self.keepalive, self._sweep)

    def _give_back(self, connection: _Connection | None) -> None:
        """A waiter handed ``connection`` (or a kept place, None) can no longer use it."""
        if connection is not None:
            self._release(connection)
            return
        self._open -= 1
        self._wake()

    def _drop(self, connection: _Connection) -> None:
        """``connection`` is closed (by either side): free its place."""
        if connection.dropped:
            return
        connection.dropped = True
        if connection not in self._connections:
            return  # not handed out yet: _connect fails, and its caller frees the place
        self._connections.remove(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        """Give a free place to the first waiter, which opens a connection in it."""
        if self._open >= self.limit or self._closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        idle = self._idle
        now = self.loop.time()
        while idle and now - idle[0].idle_since >= self.keepalive:
            idle.pop(0).close()
        if idle:
            self._sweeper = self.loop.call_at(idle[0].idle_since + self.keepalive, self._sweep)


@functools.cache
def _trust(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """The system trust store's verifying context, shared by every pool: a context holds the
    parsed CA certificates, and a daemon may dispatch to many https URLs. OpenSSL reads
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` itself; they key the cache only."""
    return ssl.create_default_context()


def _lines(headers: Mapping[str, Any]) -> str:
    """``headers`` as request header lines; a CR or LF in a name or value is refused."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        raise ValueError("a CR or LF in an HTTP header name or value")
    return lines
