"""Requests the daemon's protocol serves without ASGI (wfsched.httpdirect), on a real uvicorn.

The route here serves ``/direct/...``; everything else, and every request the protocol hands
to ASGI instead (body after its head, pipelined, 100-continue, percent-encoded path), is
answered by a Starlette app that says so.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import weakref
from collections.abc import Coroutine, Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.daemon_proc import Daemon, wait_for
from tests.uvicorn_thread import uvicorn_thread
from wfsched.daemon import _server
from wfsched.httpdirect import Exchange, protocol_class
from wfsched.httplimits import HttpLimits
from wfsched.triggers.webhook.auth import sign_hmac_sha256_hex


class Direct:
    """A DirectRoute answering ``{"direct": true, ...}``; ``hold`` keeps answers waiting."""

    def __init__(self) -> None:
        self.hold: asyncio.Event | None = None
        self.held = 0
        self.answered: list[bool] = []  # per exchange: written (False: client was gone)
        self.exchanges: list[weakref.ref[Exchange]] = []

    def takes(self, method: bytes, target: bytes) -> bool:
        return target.startswith(b"/direct/")

    def serve(self, exchange: Exchange) -> Coroutine[Any, Any, None]:
        return self._serve(exchange)

    async def _serve(self, exchange: Exchange) -> None:
        self.exchanges.append(weakref.ref(exchange))
        if self.hold is not None:
            self.held += 1
            await self.hold.wait()
        body = json.dumps(
            {
                "direct": True,
                "method": exchange.method,
                "path": exchange.path,
                "query": exchange.query_string.decode(),
                "size": len(exchange.body),
                "headers": {k.decode(): v.decode() for k, v in exchange.headers},
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await exchange.answer(202, headers, body)
        self.answered.append(not exchange.disconnected)


calls: list[str] = []


async def through_asgi(request: Request) -> Response:
    calls.append(request.url.path)
    body = await request.body()
    return JSONResponse({"direct": False, "path": request.url.path, "size": len(body)}, 202)


class Served:
    def __init__(self, server: uvicorn.Server, route: Direct, loop: asyncio.AbstractEventLoop):
        self.server, self.route, self.loop = server, route, loop
        self.port = int(server.config.port)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


@pytest.fixture
def served() -> Iterator[Served]:
    calls.clear()
    route = Direct()
    app = Starlette(routes=[Route("/{path:path}", through_asgi, methods=["POST", "GET"])])

    def release(loop: asyncio.AbstractEventLoop) -> None:
        if route.hold is not None:
            loop.call_soon_threadsafe(route.hold.set)

    with uvicorn_thread(
        app,
        protocol_class(HttpLimits(), route),
        before_stop=release,
        timeout_graceful_shutdown=10,
    ) as (server, loop):
        yield Served(server, route, loop)


def read_answer(sock: socket.socket, buffered: bytearray | None = None) -> tuple[bytes, Any]:
    """One answer's head and JSON body; ``buffered`` carries bytes read past it."""
    data = buffered if buffered is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {bytes(data)!r}"
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    data[:] = rest[length:]
    return head, json.loads(rest[:length])


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    lines = [
        f"POST {path} HTTP/{version}",
        "Host: 127.0.0.1",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_request_in_one_read_is_served_directly_with_uvicorns_headers(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/direct/a?x=1", b'{"k": 1}', "X-Thing: yes"))
        head, body = read_answer(sock)
    assert head.startswith(b"HTTP/1.1 202 Accepted\r\n")
    names = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]]
    assert b"date" in names and b"server" in names  # uvicorn's default headers, as via ASGI
    assert b"connection" not in names  # kept alive
    assert body["direct"] is True
    assert (body["method"], body["path"], body["query"], body["size"]) == (
        "POST",
        "/direct/a",
        "x=1",
        8,
    )
    assert body["headers"]["x-thing"] == "yes"
    assert calls == []


def test_many_requests_on_one_connection_each_get_their_answer(served: Served) -> None:
    with served.connect() as sock:
        for i in range(50):
            sock.sendall(post(f"/direct/{i}", b"x" * i))
            _, body = read_answer(sock)
            assert (body["direct"], body["path"], body["size"]) == (True, f"/direct/{i}", i)


def test_answered_exchanges_are_freed_on_a_kept_alive_connection(served: Served) -> None:
    gc.disable()  # freed by reference counting alone, as uvicorn's own cycles are
    try:
        with served.connect() as sock:
            for i in range(3):
                sock.sendall(post(f"/direct/{i}", b"{}"))
                read_answer(sock)
            # The last one is the connection's current cycle until the next request.
            assert [ref() is None for ref in served.route.exchanges] == [True, True, False]
    finally:
        gc.enable()


def test_a_body_after_its_head_goes_through_asgi_whole(served: Served) -> None:
    body = b"y" * 1000
    request = post("/direct/split", body)
    with served.connect() as sock:
        sock.sendall(request[:-600])
        # The protocol handed the request to ASGI when the read ended without the whole body.
        wait_for(lambda: calls == ["/direct/split"], message="the ASGI app called")
        sock.sendall(request[-600:])
        _, answer = read_answer(sock)
    assert answer == {"direct": False, "path": "/direct/split", "size": 1000}


def test_a_request_pipelined_behind_a_direct_one_is_answered_after_it(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(
            post("/direct/first", b"1") + post("/direct/second", b"22") + post("/other", b"333")
        )
        buffered = bytearray()
        answers = [read_answer(sock, buffered)[1] for _ in range(3)]
    assert [(a["path"], a["size"]) for a in answers] == [
        ("/direct/first", 1),
        ("/direct/second", 2),
        ("/other", 3),
    ]
    assert answers[0]["direct"] is True  # the others waited behind it, through ASGI


def test_connection_close_and_http_1_0_close_after_the_answer(served: Served) -> None:
    for request in (
        post("/direct/c", b"{}", "Connection: close"),
        post("/direct/old", b"{}", version="1.0"),
    ):
        with served.connect() as sock:
            sock.sendall(request)
            head, body = read_answer(sock)
            assert body["direct"] is True
            assert b"\r\nconnection: close" in head.lower()
            assert sock.recv(100) == b""  # closed by the server


def test_100_continue_and_percent_encoded_paths_go_through_asgi(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/direct/c", b"abc", "Expect: 100-continue")[:-3])
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(100)
        assert data.startswith(b"HTTP/1.1 100 Continue"), data
        sock.sendall(b"abc")
        _, body = read_answer(sock, bytearray(data.partition(b"\r\n\r\n")[2]))
        assert body == {"direct": False, "path": "/direct/c", "size": 3}
        sock.sendall(post("/direct/%41", b"abc"))
        _, body = read_answer(sock)
        assert body == {"direct": False, "path": "/direct/A", "size": 3}


def test_a_client_gone_before_its_answer_breaks_nothing(served: Served) -> None:
    served.route.hold = asyncio.Event()
    with served.connect() as sock:
        sock.sendall(post("/direct/gone", b"{}"))
        wait_for(lambda: served.route.held == 1, message="the request held")
    served.loop.call_soon_threadsafe(served.route.hold.set)
    wait_for(lambda: served.route.answered == [False], message="the held request finished")
    served.route.hold = None
    with served.connect() as sock:
        sock.sendall(post("/direct/next", b"{}"))
        assert read_answer(sock)[1]["direct"] is True


def test_shutdown_waits_for_a_request_under_way_and_answers_it_with_close(served: Served) -> None:
    hold = served.route.hold = asyncio.Event()
    with served.connect() as sock:
        sock.sendall(post("/direct/slow", b"{}"))
        wait_for(lambda: served.route.held == 1, message="the request held")
        served.server.should_exit = True
        # Listeners closed: the server is draining, the held request still under way.
        wait_for(lambda: not served.server.servers or not served.server.servers[0].is_serving())
        served.loop.call_soon_threadsafe(hold.set)
        head, body = read_answer(sock)
        assert body["direct"] is True
        assert b"\r\nconnection: close" in head.lower()
        assert sock.recv(100) == b""


# --- the daemon: its webhook route answers the same directly and through ASGI --------------

SECRET = "direct-test-secret"


def daemon_answers(tmp_path: Path, env: dict[str, str]) -> list[tuple[int, Any, list[bytes]]]:
    """Status, JSON body (execution ids masked) and header names of a set of requests."""
    tmp_path.mkdir()
    spec = tmp_path / "hook.toml"
    spec.write_text(
        'id = "hook"\n[[triggers]]\ntype = "webhook"\nmethods = ["POST"]\nmax_body_bytes = 64\n'
        'auth = {type = "hmac", secret = "env:HOOK_SECRET"}\n'
    )
    body = b'{"n": 1}'
    good = f"X-Signature-256: {sign_hmac_sha256_hex(SECRET, body)}"
    hook = "/api/v1/public/webhook/workflow/hook"
    requests = [
        post(hook, body, good, "Content-Type: application/json"),
        post(hook, body, good, "Content-Type: application/json", "Webhook-Id: d-1"),
        post(hook, body, good, "Content-Type: application/json", "Webhook-Id: d-1"),
        post(hook + "?a=b", body, good),
        post(hook, body, "X-Signature-256: sha256=" + "0" * 64),
        post(
            hook,
            b"{not json",
            f"X-Signature-256: {sign_hmac_sha256_hex(SECRET, b'{not json')}",
            "Content-Type: application/json",
        ),
        post(hook, b"x" * 65, good),
        post(hook, body, good, "Content-Type: text/plain", "Content-Type: text/plain"),
        post("/api/v1/public/webhook/workflow/nope", body, good),
        post(hook + "/more", body, good),
        post(hook, body, good).replace(b"POST", b"PUT", 1),
    ]
    answers = []
    with Daemon(tmp_path, env={"HOOK_SECRET": SECRET, **env}) as d:
        d.cli("deploy", str(spec))
        wait_for(lambda: d.get("/api/v1/public/webhooks/status").json()["webhooks"])
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as sock:
            for request in requests:
                sock.sendall(request)
                head, answer = read_answer(sock)
                if isinstance(answer, dict) and "execution_id" in answer:
                    answer["execution_id"] = "…"
                lines = head.split(b"\r\n")
                names = sorted(line.split(b":")[0].lower() for line in lines[1:])
                answers.append((int(lines[0].split()[1]), answer, names))
    return answers


def test_the_daemons_webhook_answers_the_same_directly_and_through_asgi(tmp_path: Path) -> None:
    direct = daemon_answers(tmp_path / "direct", {})
    # With a trusted proxy, every request goes through ASGI (uvicorn's proxy-headers middleware).
    asgi = daemon_answers(tmp_path / "asgi", {"WFSCHED_TRUSTED_PROXIES": "192.0.2.1/32"})
    assert direct == asgi
    statuses = [status for status, _, _ in direct]
    assert statuses == [202, 202, 202, 202, 401, 400, 413, 400, 404, 404, 405]
    assert direct[2][1]["duplicate"] is True


def test_the_daemon_serves_its_webhook_route_directly_unless_a_proxy_is_trusted() -> None:
    route = Direct()
    server = _server(object(), "127.0.0.1", 0, direct=route)
    assert server.config.http.route is route
    proxied = _server(
        object(), "127.0.0.1", 0, direct=route, trusted_proxies=[ip_network("10.0.0.0/8")]
    )
    assert proxied.config.http.route is None
