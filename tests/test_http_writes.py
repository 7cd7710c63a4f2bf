"""One socket write per answer (wfsched.httpwrites), on a real uvicorn server with the daemon's
protocol: the head goes with its body, a stream's head is not held back, ``100 Continue`` is
written at once, an app that fails after starting its answer still gets its head out, and a
head held to the end of a loop turn (a ``HEAD`` answer) is written before whatever the protocol
writes or closes on its own in that turn."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from tests.daemon_proc import wait_for
from tests.uvicorn_thread import uvicorn_thread
from wfsched.httplimits import HttpLimits, LimitedHttpToolsProtocol, protocol_class
from wfsched.httpwrites import HeldHead, answer_at_once

BODY = b'{"status":"accepted"}'


class Spy:
    """The connection's real transport, with every write it is given kept in order."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class App:
    """``/small``: one JSON answer, then ``after`` is called (in the same loop turn); ``/wait``:
    the same once ``go`` is set; ``/stream``: the head, then a chunk once ``go`` is set;
    ``/fail``: the head, then an exception; anything else echoes the body's length."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.after: Callable[[], None] = lambda: None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while not self.go.is_set():
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"late", "more_body": False})
            return
        if path == "/fail":
            headers = [(b"content-length", b"10")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            raise RuntimeError("the app failed after starting its answer")
        if path == "/wait":
            while not self.go.is_set():
                await asyncio.sleep(0.01)
        body = BODY
        if path not in ("/small", "/wait"):
            size = 0
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = b'{"size":%d}' % size
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.after()


@contextmanager
def serve(app: App, writes: list[bytes], **options: Any) -> Iterator[uvicorn.Server]:
    """A uvicorn server with the daemon's protocol on uvloop (as the daemon runs it)."""
    base = protocol_class(HttpLimits())

    class Recording(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(Spy(transport, writes))  # type: ignore[arg-type]

    with uvicorn_thread(app, Recording, before_stop=lambda loop: app.go.set(), **options) as (
        server,
        _,
    ):
        yield server


def port_of(server: uvicorn.Server) -> int:
    return int(server.config.port)


@pytest.fixture
def served() -> Iterator[tuple[int, App, list[bytes]]]:
    app = App()
    writes: list[bytes] = []
    with serve(app, writes) as server:
        yield port_of(server), app, writes


def connections_of(server: uvicorn.Server) -> set[LimitedHttpToolsProtocol]:
    """The server's open connections: each one of the daemon's protocol (``serve``)."""
    return cast("set[LimitedHttpToolsProtocol]", server.server_state.connections)


def receive_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_small_answer_is_one_write_of_head_and_body(served: tuple[int, App, list[bytes]]) -> None:
    port, _, writes = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(2):  # and again on the same keep-alive connection
            sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = receive_until(sock, BODY)
            assert answer.startswith(b"HTTP/1.1 202 ")
            assert answer.endswith(b"\r\n\r\n" + BODY)
    assert len(writes) == 2
    assert all(w.startswith(b"HTTP/1.1 202 ") and w.endswith(BODY) for w in writes)


def test_a_stream_gets_its_head_before_its_body(served: tuple[int, App, list[bytes]]) -> None:
    port, app, writes = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = receive_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"late" not in head
        app.go.set()
        assert b"late" in receive_until(sock, b"0\r\n\r\n")
    assert writes[0] == head


def test_100_continue_is_written_before_the_body_is_read(
    served: tuple[int, App, list[bytes]],
) -> None:
    port, _, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        # The client sends its body only once told to continue: a held 100 would hang here.
        assert receive_until(sock, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert receive_until(sock, b"}").endswith(b'{"size":5}')


def test_an_app_failing_after_its_head_still_sends_the_head(
    served: tuple[int, App, list[bytes]],
) -> None:
    port, _, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = receive_until(sock, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert sock.recv(65536) == b""  # then uvicorn closes the connection


def test_answered_cycles_are_freed_without_the_cyclic_gc(
    served: tuple[int, App, list[bytes]],
) -> None:
    # The held head's transport lets go of its cycle: no reference cycle keeps each request's
    # cycle (scope, headers, body) alive until a collection.
    port, _, writes = served
    gc.collect()
    gc.disable()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for _ in range(5):
                sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
                receive_until(sock, BODY)
            wait_for(lambda: len(writes) == 5, message="five answers written")
            alive = [o for o in gc.get_objects() if isinstance(o, RequestResponseCycle)]
            assert len(alive) == 1  # the connection's current one
    finally:
        gc.enable()


HEAD_SMALL = b"HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n"


def receive_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("ending", ["shutdown", "timeout_keep_alive_handler"])
def test_a_head_answer_then_the_connection_ending_in_the_same_turn_still_gets_its_head_out(
    ending: str,
) -> None:
    # A HEAD answer writes no body: its head is held to the end of the loop turn. A shutdown or
    # the keep-alive timeout closing the (idle) connection in that turn writes it first.
    app = App()
    writes: list[bytes] = []
    with serve(app, writes) as server:

        def end_connections() -> None:
            for connection in list(server.server_state.connections):
                getattr(connection, ending)()

        app.after = end_connections
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as sock:
            sock.sendall(HEAD_SMALL)
            answer = receive_all(sock)
    assert answer.startswith(b"HTTP/1.1 202 ")
    assert answer.endswith(b"\r\n\r\n") and BODY not in answer


def test_a_bad_request_pipelined_after_a_head_answer_is_answered_after_it() -> None:
    app = App()
    writes: list[bytes] = []
    with serve(app, writes) as server:
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as sock:
            sock.sendall(b"HEAD /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            # The GET waits its turn, and the server reads nothing more meanwhile: the bad
            # request is read in the turn that answers the HEAD.
            wait_for(
                lambda: any(c.pipeline for c in connections_of(server)),
                message="the GET queued behind the HEAD",
            )
            sock.sendall(b"NOT HTTP\r\n\r\n")
            app.go.set()
            answer = receive_all(sock)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202 ")
    assert rest.startswith(b"HTTP/1.1 400 ")


def test_a_head_held_while_its_connection_closes_with_bytes_buffered_still_goes_out() -> None:
    # As uvicorn's own write would have: a closing transport sends what it still buffers, and
    # what is written to it before it is done.
    async def exchange() -> bytes:
        loop = asyncio.get_running_loop()
        made: asyncio.Future[asyncio.Transport] = loop.create_future()

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.set_result(transport)  # type: ignore[arg-type]

        listener = await loop.create_server(Server, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        transport = await made

        class Cycle:
            response_started = True

        held = HeldHead(transport, Cycle(), loop, [])
        transport.write(b"x" * 8_000_000)  # more than the sockets' buffers take
        held.write(b"HEAD")
        assert transport.get_write_buffer_size() > 0
        transport.close()
        held.flush()
        data = await reader.read()
        writer.close()
        listener.close()
        return data[-4:]

    assert uvloop.run(exchange()) == b"HEAD"


def test_a_whole_answer_written_at_once_is_not_held_back() -> None:
    # answer_at_once writes through the cycle's HeldHead: the bytes must reach the transport
    # before it returns (a head-and-body written as a started answer's first write was held
    # to the end of the loop turn, one more callback per request).
    loop = asyncio.new_event_loop()
    writes: list[bytes] = []
    completed: list[bool] = []

    class Transport:
        def write(self, data: bytes) -> None:
            writes.append(data)

        def close(self) -> None:
            writes.append(b"<closed>")

    cycle = SimpleNamespace(
        response_started=False,
        response_complete=False,
        flow=SimpleNamespace(write_paused=False),
        access_log=False,
        waiting_for_100_continue=False,
        disconnected=False,
        default_headers=[(b"server", b"wfsched")],
        keep_alive=True,
        message_event=asyncio.Event(),
        on_response=lambda: completed.append(True),
    )
    holding: list[HeldHead] = []
    cycle.transport = HeldHead(Transport(), cycle, loop, holding)  # type: ignore[arg-type]
    try:
        assert answer_at_once(cycle, 202, [(b"content-length", b"2")], b"{}")
    finally:
        loop.close()
    assert writes == [b"HTTP/1.1 202 Accepted\r\nserver: wfsched\r\ncontent-length: 2\r\n\r\n{}"]
    assert holding == [] and completed == [True]
    assert cycle.response_started and cycle.response_complete
    # Not kept alive: the answer says so and the connection is closed after it.
    writes.clear()
    cycle.response_started = cycle.response_complete = False
    cycle.keep_alive = False
    loop = asyncio.new_event_loop()
    cycle.transport = HeldHead(Transport(), cycle, loop, holding)  # type: ignore[arg-type]
    try:
        assert answer_at_once(cycle, 202, [(b"content-length", b"2")], b"{}")
    finally:
        loop.close()
    closing = (
        b"HTTP/1.1 202 Accepted\r\nserver: wfsched\r\ncontent-length: 2\r\nconnection: close\r\n"
    )
    assert writes == [closing + b"\r\n{}", b"<closed>"]
