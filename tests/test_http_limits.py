"""Connection limits of a real daemon: header size and read time, idle keep-alive, and how many
connections may be open at once."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, wait_for
from wfsched.plugins import configure

pytestmark = pytest.mark.slow
SHORT = 1.5
KEEP_ALIVE = 2
"""The header and keep-alive timeouts of the test daemon (through its private test hook)."""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    env = {"_WFSCHED_HTTP_TIMEOUTS": f"{SHORT},{KEEP_ALIVE}"}
    with Daemon(tmp_path_factory.mktemp("limits"), env=env) as d:
        yield d


def connect(d: Daemon) -> socket.socket:
    return socket.create_connection(("127.0.0.1", d.port), timeout=10)


def request(headers: str = "") -> bytes:
    return f"GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()


def read_response(sock: socket.socket) -> bytes:
    """One response (status line, headers and a Content-Length body), or what came before EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (EOF or reset); fail after ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {seconds} s") from None
    return time.monotonic() - started


def test_the_defaults_are_64_kib_10_s_30_s_and_max_connections() -> None:
    from wfsched.daemon import _server
    from wfsched.httplimits import HttpLimits

    limits = HttpLimits.from_settings(configure(None, environ={}).settings)
    assert limits == HttpLimits(
        max_header_bytes=64 * 1024, header_timeout=10.0, keep_alive=30, max_connections=1000
    )
    assert HttpLimits.from_settings(
        configure(None, environ={"WFSCHED_MAX_CONNECTIONS": "20"}).settings
    ) == HttpLimits(max_connections=20)
    server = _server(object(), "127.0.0.1", 0, limits=limits)
    assert server.config.timeout_keep_alive == 30
    assert server.config.http.limits == limits


def test_headers_up_to_64_kib_are_served(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(request(f"X-Pad: {'a' * 60_000}\r\n"))
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("shape", ["one header", "many headers"])
def test_headers_over_64_kib_in_total_get_431(daemon: Daemon, shape: str) -> None:
    if shape == "one header":
        extra = f"X-Big: {'a' * 66_000}\r\n"
    else:
        extra = "".join(f"X-Pad-{i}: {'b' * 1000}\r\n" for i in range(70))
    with connect(daemon) as sock:
        sock.sendall(request(extra))
        assert read_response(sock).startswith(b"HTTP/1.1 431 ")
        closed_within(sock, 2)


def test_a_64_mib_header_is_refused_without_reading_it_whole(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        sent = 0
        chunk = b"a" * 65536
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 64 * 1024 * 1024:
                sent += sock.send(chunk)
        # Whatever the kernel buffered before the close, the daemon stopped far short of it.
        assert sent < 32 * 1024 * 1024
        with contextlib.suppress(ConnectionResetError):
            answer = sock.recv(65536)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert daemon.get("/health").status_code == 200


def test_headers_not_complete_in_time_get_408_and_a_close(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert read_response(sock).startswith(b"HTTP/1.1 408 ")
        assert SHORT - 0.2 < time.monotonic() - started < SHORT + 2
        closed_within(sock, 2)


def test_a_connection_that_never_sends_is_closed(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        assert closed_within(sock, SHORT + 2) > SHORT - 0.2


def test_an_idle_keep_alive_connection_is_closed(daemon: Daemon) -> None:
    with connect(daemon) as sock:
        for _ in range(2):  # keep-alive works: a second request on the same connection
            sock.sendall(request())
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        assert closed_within(sock, KEEP_ALIVE + 2) > KEEP_ALIVE - 0.2


def test_a_connection_in_use_is_closed_keep_alive_after_its_last_answer(daemon: Daemon) -> None:
    # Requests 0.6 x KEEP_ALIVE apart: the connection outlives one keep-alive period after its
    # first answer (its timer re-arms for the idle time left), then idles out after the last.
    with connect(daemon) as sock:
        started = time.monotonic()
        for i in range(3):
            if i:
                time.sleep(KEEP_ALIVE * 0.6)  # the client's pause between requests
            sock.sendall(request())
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started > KEEP_ALIVE
        assert closed_within(sock, KEEP_ALIVE + 2) > KEEP_ALIVE - 0.2


def test_past_max_connections_new_ones_are_refused_until_some_close(tmp_path: Path) -> None:
    with Daemon(tmp_path, env={"WFSCHED_MAX_CONNECTIONS": "20"}) as d:
        held = [connect(d) for _ in range(20)]
        try:
            with connect(d) as extra:
                extra.settimeout(5)
                with contextlib.suppress(ConnectionResetError):
                    answer = read_response(extra)
                    assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
                closed_within(extra, 2)
            # The held ones still work.
            held[0].sendall(request())
            assert read_response(held[0]).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in held:
                sock.close()
        wait_for(lambda: d.get("/health").status_code == 200, 5, message="served again")
        assert d.stop() == 0
