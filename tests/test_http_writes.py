"""One socket write per answer (wfsched.httpwrites), on a real uvicorn server with the daemon's
protocol: the head goes with its body, a stream's head is not held back, ``100 Continue`` is
written at once, and an app that fails after starting its answer still gets its head out."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from tests.daemon_proc import wait_for
from wfsched.httplimits import HttpLimits, protocol_class

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
    """``/small``: one JSON answer; ``/stream``: the head, then a chunk once ``go`` is set;
    ``/fail``: the head, then an exception; anything else echoes the body's length."""

    def __init__(self) -> None:
        self.go = threading.Event()

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
        body = BODY
        if path != "/small":
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


@pytest.fixture
def served() -> Iterator[tuple[int, App, list[bytes]]]:
    writes: list[bytes] = []
    base = protocol_class(HttpLimits())

    class Recording(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(Spy(transport, writes))  # type: ignore[arg-type]

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = App()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=Recording, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(server.serve()))
    thread.start()
    wait_for(lambda: server.started, message="uvicorn started")
    yield port, app, writes
    app.go.set()
    server.should_exit = True
    thread.join(10)
    loop.close()


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
