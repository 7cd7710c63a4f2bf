"""The engine sender's own HTTP/1.1 client against a raw asyncio server that answers byte by
byte as scripted: framing (chunked, read to close), keep-alive and its ends, the resend of an
unanswered request, timeouts, TLS, the pool limit, redirects and Retry-After. Every test runs
on asyncio's loop and on uvloop (the daemon's)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.dovecot import _self_signed
from wfsched.dispatch import DispatchError
from wfsched.dispatch import engine as engine_module
from wfsched.dispatch.engine import EngineSender
from wfsched.models import TriggerEvent, new_execution_id, utcnow

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def event(workflow_id: str = "w") -> TriggerEvent:
    execution_id = new_execution_id()
    return TriggerEvent(
        execution_id=execution_id,
        workflow_id=workflow_id,
        trigger_id="t",
        trigger_type="cron",
        dedupe_key=execution_id,
        scheduled_at=None,
        fired_at=utcnow(),
        payload={"n": 1},
        status="pending",
    )


def answer(
    status: int = 200,
    reason: str = "OK",
    headers: dict[str, str] | None = None,
    body: bytes = b'{"status": "accepted"}',
    *,
    version: str = "1.1",
    chunked: bool = False,
    length: bool = True,
) -> bytes:
    """A raw HTTP response."""
    lines = [f"HTTP/{version} {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        parts = [body[:half], body[half:]]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
    elif length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Seen:
    """One request as the server read it."""

    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    raw: bytes | None = None
    """The bytes to answer (None: close the connection without answering)."""
    delay: float = 0.0
    close: bool = False
    """Close the connection after answering."""


@dataclass
class RawServer:
    """An HTTP/1.1 server on loopback that answers each request as ``script`` says."""

    script: Callable[[Seen, int], Reply] = lambda seen, n: Reply(answer())
    seen: list[Seen] = field(default_factory=list)
    opened: int = 0
    open_now: int = 0
    max_open: int = 0
    port: int = 0
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, host, 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def keys(self) -> list[str]:
        return [s.headers.get("idempotency-key", "") for s in self.seen]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.opened += 1
        connection = self.opened
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return
                first, *lines = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _ = first.split(" ")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(connection, method, target, headers, body)
                self.seen.append(seen)
                reply = self.script(seen, len(self.seen))
                if reply.delay and not await self._quiet(reader, reply.delay):
                    return  # the client closed the connection meanwhile
                if reply.raw is None:
                    return
                writer.write(reply.raw)
                await writer.drain()
                if reply.close:
                    return
        finally:
            self.open_now -= 1
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _quiet(reader: asyncio.StreamReader, delay: float) -> bool:
        """Wait ``delay`` seconds; False as soon as the client closes the connection."""
        try:
            await asyncio.wait_for(reader.read(1), delay)
        except TimeoutError:
            return True
        except (ConnectionError, asyncio.CancelledError):
            return False
        return False  # the client closed (or sent bytes it may not: out of step)


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    await raw.start()
    try:
        yield raw
    finally:
        await raw.stop()


@pytest.fixture
async def sender(server: RawServer) -> AsyncIterator[EngineSender]:
    engine = EngineSender(f"http://127.0.0.1:{server.port}", timeout=5.0, max_connections=4)
    try:
        yield engine
    finally:
        await engine.aclose()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def failure(send: Awaitable[None]) -> DispatchError:
    with pytest.raises(DispatchError) as caught:
        await send
    return caught.value


# framing and keep-alive ------------------------------------------------------------------
async def test_a_chunked_answer_is_read_whole_and_its_connection_reused(
    server: RawServer, sender: EngineSender
) -> None:
    server.script = lambda seen, n: Reply(
        answer(body=b'{"accepted": true}' * 50, chunked=True)
        if n < 3
        else answer(500, "Internal Server Error", body=b"the engine broke down", chunked=True)
    )
    await sender.send(event())
    await sender.send(event())
    error = await failure(sender.send(event()))
    assert [s.connection for s in server.seen] == [1, 1, 1]
    assert str(error) == "engine answered 500 Internal Server Error: the engine broke down"
    assert error.retry and error.code == 500


async def test_connection_close_and_http_1_0_answers_are_not_reused(
    server: RawServer, sender: EngineSender
) -> None:
    replies = [
        Reply(answer(headers={"Connection": "close"}), close=True),
        Reply(answer(headers={"Connection": "close"}), close=True),
        Reply(answer(version="1.0", length=False), close=True),  # a body ended by the close
        Reply(answer(version="1.0", length=False), close=True),
        Reply(answer(version="1.0", headers={"Connection": "keep-alive"})),
        Reply(answer(version="1.0", headers={"Connection": "keep-alive"})),
    ]
    server.script = lambda seen, n: replies[n - 1]
    for _ in replies:
        await sender.send(event())
    assert [s.connection for s in server.seen] == [1, 2, 3, 4, 5, 5]


async def test_a_request_on_a_connection_the_engine_closed_is_resent_once(
    server: RawServer, sender: EngineSender
) -> None:
    # The second request meets the kept connection being closed: nothing is answered, so
    # the same request goes again on a new connection, within the same send.
    server.script = lambda seen, n: Reply(None if n == 2 else answer())
    first, second = event(), event()
    await sender.send(first)
    await sender.send(second)
    assert server.keys() == [first.execution_id, second.execution_id, second.execution_id]
    assert [s.connection for s in server.seen] == [1, 1, 2]
    assert server.seen[1].body == server.seen[2].body
    # Once only: a second hang-up is an error for the dispatcher to retry later.
    server.script = lambda seen, n: Reply(None)
    error = await failure(sender.send(event()))
    assert str(error) == (
        f"cannot reach engine at http://127.0.0.1:{server.port}: "
        "ServerDisconnectedError: Server disconnected"
    )
    assert error.retry
    assert len(server.seen) == 5


async def test_a_connection_the_engine_closes_while_idle_leaves_the_pool(
    server: RawServer, sender: EngineSender
) -> None:
    server.script = lambda seen, n: Reply(answer(), close=True)  # no Connection: close said
    await sender.send(event())
    pool = sender._pool
    assert pool is not None
    await until(lambda: pool.connections == 0, "the pool to drop the closed connection")
    await sender.send(event())
    assert [s.connection for s in server.seen] == [1, 2]


async def test_a_connection_dropped_before_its_release_is_not_kept_idle(
    server: RawServer, sender: EngineSender
) -> None:
    # A dropped connection kept idle would never leave it: the sweep would close it forever.
    await sender.send(event())
    pool = sender._pool
    assert pool is not None and len(pool._idle) == 1
    connection = pool._idle.pop()
    connection.close()
    pool._release(connection)
    assert pool._idle == [] and pool.connections == 0
    await sender.send(event())
    assert [s.connection for s in server.seen] == [1, 2]


async def test_idle_connections_close_after_the_keepalive(
    server: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "KEEPALIVE_SECONDS", 0.3)
    sender = EngineSender(f"http://127.0.0.1:{server.port}", max_connections=4)
    try:
        await asyncio.gather(*(sender.send(event()) for _ in range(3)))
        assert server.open_now == 3
        await until(lambda: server.open_now == 0, "idle connections to be closed", 3.0)
        await sender.send(event())
        assert server.opened == 4
    finally:
        await sender.aclose()


async def test_a_silent_engine_times_out_and_its_connection_is_closed(server: RawServer) -> None:
    server.script = lambda seen, n: Reply(answer(), delay=60)
    sender = EngineSender(f"http://127.0.0.1:{server.port}", timeout=0.3)
    try:
        started = time.monotonic()
        error = await failure(sender.send(event()))
        assert time.monotonic() - started < 2
        assert str(error) == f"engine at http://127.0.0.1:{server.port} did not answer within 0.3s"
        assert error.retry
        await until(lambda: server.open_now == 0, "the timed-out connection to close")
    finally:
        await sender.aclose()


async def test_the_pool_never_opens_more_than_max_connections(server: RawServer) -> None:
    server.script = lambda seen, n: Reply(answer(), delay=0.02)
    sender = EngineSender(f"http://127.0.0.1:{server.port}", max_connections=3)
    try:
        events = [event() for _ in range(30)]
        await asyncio.gather(*(sender.send(e) for e in events))
    finally:
        await sender.aclose()
    assert server.max_open == 3 and server.opened == 3
    assert sorted(server.keys()) == sorted(e.execution_id for e in events)


# what the request carries ----------------------------------------------------------------
async def test_it_sends_host_auth_path_prefix_and_query(server: RawServer) -> None:
    sender = EngineSender(f"http://bot:s3cret@localhost:{server.port}/base/?tenant=7")
    e = event("a.b")
    try:
        await sender.send(e)
    finally:
        await sender.aclose()
    [seen] = server.seen
    assert (seen.method, seen.target) == ("POST", "/base/v1/workflows/a.b/execute?tenant=7")
    assert seen.headers["host"] == f"localhost:{server.port}"
    assert seen.headers["authorization"] == "Basic Ym90OnMzY3JldA=="
    assert seen.headers["idempotency-key"] == e.execution_id
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"].startswith("wfsched/")
    assert "accept-encoding" not in seen.headers
    assert int(seen.headers["content-length"]) == len(seen.body)


async def test_it_reaches_an_ipv6_literal() -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    raw = RawServer()
    await raw.start("::1")
    sender = EngineSender(f"http://[::1]:{raw.port}")
    try:
        await sender.send(event())
    finally:
        await sender.aclose()
        await raw.stop()
    assert raw.seen[0].headers["host"] == f"[::1]:{raw.port}"


async def test_https_with_a_trusted_self_signed_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    raw = RawServer()
    await raw.start(tls=tls)
    untrusted = EngineSender(f"https://localhost:{raw.port}")
    try:
        error = await failure(untrusted.send(event()))
        assert str(error).startswith(f"cannot reach engine at https://localhost:{raw.port}: ")
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)
        # OpenSSL's default trust store honours SSL_CERT_FILE, read when a sender connects.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = EngineSender(f"https://localhost:{raw.port}/api")
        try:
            await trusted.send(event())
            await trusted.send(event())
        finally:
            await trusted.aclose()
    finally:
        await untrusted.aclose()
        await raw.stop()
    assert [s.target for s in raw.seen] == ["/api/v1/workflows/w/execute"] * 2
    assert [s.connection for s in raw.seen] == [1, 1]
    assert raw.seen[0].headers["host"] == f"localhost:{raw.port}"


async def test_a_refused_connection_names_the_engine() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = EngineSender(f"http://127.0.0.1:{port}")
    try:
        error = await failure(sender.send(event()))
    finally:
        await sender.aclose()
    assert str(error) == (
        f"cannot reach engine at http://127.0.0.1:{port}: Connect call failed ('127.0.0.1', {port})"
    )
    assert error.retry


# answers ---------------------------------------------------------------------------------
async def test_a_redirect_is_not_followed_and_names_its_location(
    server: RawServer, sender: EngineSender
) -> None:
    server.script = lambda seen, n: Reply(
        answer(307, "Temporary Redirect", {"Location": "http://elsewhere/moved"}, b"")
    )
    error = await failure(sender.send(event()))
    assert str(error) == (
        "engine answered 307 Temporary Redirect: redirect to http://elsewhere/moved not "
        "followed; point dispatch.engine_url at the final address"
    )
    assert not error.retry and error.code == 307
    assert len(server.seen) == 1


async def test_a_503_with_retry_after_is_retried_after_that_delay(
    server: RawServer, sender: EngineSender
) -> None:
    body = gzip.compress(b"engine draining, " * 400)  # shown inflated, cut to 4 KiB then 200
    server.script = lambda seen, n: Reply(
        answer(
            503,
            "Service Unavailable",
            {"Retry-After": "7", "Content-Encoding": "gzip"},
            body,
        )
    )
    error = await failure(sender.send(event()))
    assert (error.retry, error.retry_after, error.code) == (True, 7.0, 503)
    assert str(error).startswith("engine answered 503 Service Unavailable: engine draining, ")
    # The connection stays usable after an error answer.
    server.script = lambda seen, n: Reply(answer())
    await sender.send(event())
    assert [s.connection for s in server.seen] == [1, 1]


async def test_a_cut_off_or_garbled_answer_is_an_error_to_retry(
    server: RawServer, sender: EngineSender
) -> None:
    server.script = lambda seen, n: Reply(answer()[:-3], close=True)
    error = await failure(sender.send(event()))
    assert error.retry and "Response payload is not completed" in str(error)
    server.script = lambda seen, n: Reply(b"garbage\r\n\r\n", close=True)
    error = await failure(sender.send(event()))
    assert error.retry and "invalid HTTP response" in str(error)
    server.script = lambda seen, n: Reply(answer())
    await sender.send(event())


async def test_an_informational_answer_before_the_final_one_is_skipped(
    server: RawServer, sender: EngineSender
) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    server.script = lambda seen, n: Reply(early + answer(202, "Accepted"))
    await sender.send(event())
    await sender.send(event())
    assert [s.connection for s in server.seen] == [1, 1]


async def test_sends_timing_out_while_they_wait_for_a_connection_free_their_places(
    server: RawServer,
) -> None:
    server.script = lambda seen, n: Reply(answer(), delay=0.5)
    sender = EngineSender(f"http://127.0.0.1:{server.port}", timeout=0.2, max_connections=1)
    try:
        results = await asyncio.gather(
            *(sender.send(event()) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, DispatchError) for r in results), results
        assert [str(r).endswith("did not answer within 0.2s") for r in results] == [True] * 3
        pool = sender._pool
        assert pool is not None and pool.connections == 0
        server.script = lambda seen, n: Reply(answer())
        await asyncio.gather(*(sender.send(event()) for _ in range(3)))
        assert pool.connections == 1
    finally:
        await sender.aclose()
    assert server.max_open == 1


async def test_an_unrequested_protocol_switch_is_an_error(
    server: RawServer, sender: EngineSender
) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\nxx"
    server.script = lambda seen, n: Reply(switch if n == 1 else answer())
    error = await failure(sender.send(event()))
    assert error.retry and "unrequested protocol upgrade" in str(error)
    await sender.send(event())
    assert [s.connection for s in server.seen] == [1, 2]


def test_a_user_name_with_a_colon_is_a_config_error() -> None:
    from wfsched.dispatch.engine import parse_engine_url
    from wfsched.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dispatch.engine_url: a user name may not contain"):
        parse_engine_url("http://a%3Ab:pw@engine.example")
    _, auth, shown = parse_engine_url("http://b%C3%A9a:p%C3%A4ss@engine.example")
    assert auth == "Basic YulhOnDkc3M="  # Latin-1, as aiohttp encoded it
    assert shown == "http://engine.example"


def test_the_basic_authorization_value_is_a_secret() -> None:
    from wfsched.dispatch.engine import parse_engine_url
    from wfsched.logs import redact

    _, auth, _ = parse_engine_url("http://bot:hunter22@engine.example")
    assert auth is not None
    assert redact(f"sent Authorization: {auth}") == "sent Authorization: ***"


async def test_https_senders_share_one_tls_context_per_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A context holds the parsed CA certificates: one per trust store, not one per target.
    monkeypatch.setenv("SSL_CERT_FILE", str(_self_signed(tmp_path)[0]))
    a, b = EngineSender("https://a.example"), EngineSender("https://b.example/x")
    pool_a, pool_b = a._open(), b._open()
    assert pool_a.ssl is not None and pool_a.ssl is pool_b.ssl
    assert pool_a.ssl.verify_mode == ssl.CERT_REQUIRED and pool_a.ssl.check_hostname
    await a.aclose()
    await b.aclose()


async def test_aclose_closes_every_connection_and_ends_pending_sends(server: RawServer) -> None:
    server.script = lambda seen, n: Reply(answer(), delay=30)
    sender = EngineSender(f"http://127.0.0.1:{server.port}", max_connections=1)
    sends = [asyncio.ensure_future(sender.send(event())) for _ in range(2)]
    await until(lambda: len(server.seen) == 1, "the first request at the server")
    started = time.monotonic()
    await sender.aclose()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert time.monotonic() - started < 2
    assert all(isinstance(r, DispatchError) and r.retry for r in results), results
    assert "the connection pool is closed" in str(results[1])
    await until(lambda: server.open_now == 0, "the server to see the connection closed")
    assert len(server.seen) == 1
