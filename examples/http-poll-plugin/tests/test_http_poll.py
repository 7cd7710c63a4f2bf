"""The http-poll trigger against a real local HTTP server, on ``wfsched.testing``'s FakeContext."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from wfsched_http_poll import USER_AGENT, HttpPollTrigger

from wfsched import SpecError
from wfsched.plugins import configure
from wfsched.testing import FakeContext


class Resource:
    """A document served with an ETag; a conditional GET with the current ETag gets 304."""

    def __init__(self) -> None:
        self.body = b'{"v": 1}'
        self.etag: str | None = '"v1"'
        self.status = 200
        self.requests: list[dict[str, str]] = []


@pytest.fixture
def served() -> Iterator[tuple[str, Resource]]:
    resource = Resource()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            resource.requests.append(dict(self.headers))
            if resource.status != 200:
                self.send_response(resource.status)
                self.end_headers()
                return
            if resource.etag and self.headers.get("If-None-Match") == resource.etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(resource.body)))
            if resource.etag:
                self.send_header("ETag", resource.etag)
            self.end_headers()
            self.wfile.write(resource.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/doc", resource
    finally:
        server.shutdown()
        server.server_close()


def test_validation_names_the_field() -> None:
    with pytest.raises(SpecError) as err:
        HttpPollTrigger.validate({"url": "ftp://x"})
    assert err.value.field == "url"
    with pytest.raises(SpecError) as err:
        HttpPollTrigger.validate({"url": "http://x", "interval": "0.5s"})
    assert err.value.field == "interval"
    with pytest.raises(SpecError) as err:
        HttpPollTrigger.validate({"url": "http://x", "intervall": "5m"})
    assert err.value.field == "intervall" and "interval" in err.value.message
    assert HttpPollTrigger.validate({"url": "http://x"})["interval"] == 60.0


def test_it_fires_once_per_new_version_and_uses_conditional_requests(
    served: tuple[str, Resource],
) -> None:
    url, resource = served

    async def main() -> None:
        ctx = FakeContext(settings={"http_poll": {"user_agent": "tests/1"}})
        trigger = ctx.make(HttpPollTrigger, {"url": url, "interval": "1s"})
        async with httpx.AsyncClient(headers=trigger._headers()) as client:
            assert await trigger.poll_once(client) is None  # the first version is the baseline
            assert await trigger.poll_once(client) is None  # 304: unchanged
            assert resource.requests[-1]["If-None-Match"] == '"v1"'
            assert resource.requests[-1]["User-Agent"] == "tests/1"  # from the plugin's section
            resource.body, resource.etag = b'{"v": 2}', '"v2"'
            fired = await trigger.poll_once(client)
            assert fired is not None and fired.created
            assert await trigger.poll_once(client) is None
        [event] = ctx.fires
        assert event.dedupe_key == 'etag:"v2"'
        assert event.payload["body"] == {"v": 2}
        assert event.payload["sha256"] == hashlib.sha256(b'{"v": 2}').hexdigest()
        assert ctx.health == ("healthy", None)

    anyio.run(main)


def test_without_an_etag_the_body_hash_decides_and_errors_degrade_health(
    served: tuple[str, Resource],
) -> None:
    url, resource = served
    resource.etag = None

    async def main() -> None:
        ctx = FakeContext()
        trigger = ctx.make(HttpPollTrigger, {"url": url, "fire_existing": True})
        async with httpx.AsyncClient() as client:
            assert await trigger.poll_once(client) is not None  # fire_existing: the first fires
            assert await trigger.poll_once(client) is None  # same body, same hash
            resource.status = 503
            assert await trigger.poll_once(client) is None
            assert ctx.health == ("degraded", f"{url} answered 503")
            resource.status, resource.body = 200, b'{"v": 3}'
            assert await trigger.poll_once(client) is not None
        assert [f.payload["body"] for f in ctx.fires] == [{"v": 1}, {"v": 3}]
        assert ctx.health_reports[-1][0] == "healthy"

    anyio.run(main)


def test_the_running_trigger_fires_on_change(served: tuple[str, Resource]) -> None:
    url, resource = served

    async def main() -> None:
        ctx = FakeContext()
        trigger = ctx.make(HttpPollTrigger, {"url": url, "interval": "1s"})
        async with anyio.create_task_group() as tg:
            tg.start_soon(trigger.run)
            with anyio.fail_after(5):
                while not resource.requests:
                    await anyio.sleep(0.02)
            resource.body, resource.etag = b'{"v": 9}', '"v9"'
            [event] = await ctx.wait_for_fires(1, timeout=5)
            assert event.payload["etag"] == '"v9"'
            tg.cancel_scope.cancel()

    anyio.run(main)


# its settings section, as wfsched loads it -----------------------------------------------------


def test_its_section_is_read_from_wfsched_toml_and_its_variable(tmp_path: Path) -> None:
    config = tmp_path / "wfsched.toml"
    config.write_text('[http_poll]\nuser_agent = "acme-ops/1.0"\n')
    settings, registry = configure(str(config), environ={})
    assert registry.get("http-poll") is HttpPollTrigger
    assert settings.get("http_poll.user_agent") == "acme-ops/1.0"
    # The daemon hands the validated sections to the trigger's context, as FakeContext does here.
    trigger = FakeContext(settings=settings.sections).make(HttpPollTrigger, {"url": "http://x"})
    assert trigger._headers()["User-Agent"] == "acme-ops/1.0"
    environ = {"WFSCHED_HTTP_POLL_USER_AGENT": "from-env/2"}
    assert configure(str(config), environ=environ).settings.get("http_poll.user_agent") == (
        "from-env/2"
    )
    config.write_text("")
    assert configure(str(config), environ={}).settings.get("http_poll.user_agent") == USER_AGENT


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[http_poll]\nuser_agent = 5\n", "http_poll.user_agent = 5: must be a string"),
        ("[http_poll]\nuser_agnet = 'x'\n", "did you mean 'user_agent'"),
    ],
)
def test_a_bad_value_in_its_section_is_a_one_line_error_naming_it(
    tmp_path: Path, text: str, needle: str
) -> None:
    config = tmp_path / "wfsched.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFSCHED_")}
    result = subprocess.run(
        [sys.executable, "-m", "wfsched", "plugins", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(config) in lines[0] and needle in lines[0], lines[0]
