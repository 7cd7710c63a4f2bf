"""The ``http-poll`` trigger type: fires when an HTTP resource changes.

A third-party plugin for wfsched, installed as its own distribution: it registers through the
``wfsched`` entry-point group and uses only the public ``wfsched`` API. Each trigger polls
``url`` every ``interval`` with a conditional request (``If-None-Match`` / ``If-Modified-Since``)
and fires once per new version of the resource, identified by its ETag or, when the server sends
none, by the SHA-256 of its body.

Payload: ``url``, ``status``, ``etag``, ``last_modified``, ``content_type``, ``sha256`` and
``body`` (the text, when it is at most ``max_body_bytes``; JSON bodies parsed).

It also brings a dispatch target, ``jsonl-file`` (:mod:`wfsched_http_poll.jsonl`), registered
with the ``register_dispatch_targets`` hook.

Its own config section, ``[http_poll]``, is declared with the ``register_settings`` hook: wfsched
validates it when it loads the config, reads ``WFSCHED_HTTP_POLL_USER_AGENT`` over it and writes
it into ``wfsched init``'s file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from wfsched import (
    BaseTrigger,
    DispatchTarget,
    Fields,
    FireRequest,
    FireResult,
    Setting,
    SpecError,
    hookimpl,
    parse_duration,
)

if TYPE_CHECKING:
    import httpx

__version__ = "0.1.0"
SECTION = "http_poll"
USER_AGENT = f"wfsched-http-poll/{__version__}"
SETTINGS = (
    Setting(
        SECTION,
        "user_agent",
        "WFSCHED_HTTP_POLL_USER_AGENT",
        USER_AGENT,
        "str",
        "User-Agent header of every poll (a trigger's own headers win)",
    ),
)


@dataclass(frozen=True, slots=True)
class Version:
    """What identifies one version of the resource."""

    etag: str | None
    last_modified: str | None
    sha256: str

    @property
    def key(self) -> str:
        return f"etag:{self.etag}" if self.etag else f"sha256:{self.sha256}"


class HttpPollTrigger(BaseTrigger):
    """Polls ``url`` and fires when it changes."""

    type = "http-poll"
    has_run = True

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        fields = Fields(
            config,
            allowed={"url", "interval", "headers", "fire_existing", "max_body_bytes", "timeout"},
        )
        url = fields.str("url")
        if not url.startswith(("http://", "https://")):
            raise SpecError("must be an http:// or https:// URL", field="url")
        interval = parse_duration(config.get("interval", "60s"), field="interval")
        if interval < 1:
            raise SpecError("must be at least 1s", field="interval")
        headers = fields.table_("headers", {})
        for name, value in headers.items():
            if not isinstance(value, str):
                raise SpecError("must be a string", field=f"headers.{name}")
        return {
            "url": url,
            "interval": interval,
            "headers": dict(headers),
            "fire_existing": fields.bool("fire_existing", False),
            "max_body_bytes": fields.int("max_body_bytes", 65536, minimum=0),
            "timeout": parse_duration(config.get("timeout", "10s"), field="timeout"),
        }

    def describe(self) -> dict[str, Any]:
        return {"url": self.config["url"], "every": f"{self.config['interval']:g}s"}

    async def run(self) -> None:
        # Imported here: loading the plugin (every CLI command does) should not load a client.
        import httpx

        async with httpx.AsyncClient(
            timeout=self.config["timeout"], headers=self._headers()
        ) as client:
            while True:
                await self.poll_once(client)
                await anyio.sleep(self.config["interval"])

    def _headers(self) -> dict[str, str]:
        # A daemon gives every declared key (default filled in); a test's FakeContext may not.
        agent = str(self.ctx.settings(SECTION).get("user_agent") or USER_AGENT)
        return {"User-Agent": agent, **self.config["headers"]}

    async def poll_once(self, client: httpx.AsyncClient) -> FireResult | None:
        """Make one conditional request; fire if the resource changed. Returns the fire."""
        import httpx

        cursor = await self.ctx.get_cursor()
        known: dict[str, Any] | None = cursor if isinstance(cursor, dict) else None
        conditional: dict[str, str] = {}
        if known and known.get("etag"):
            conditional["If-None-Match"] = known["etag"]
        elif known and known.get("last_modified"):
            conditional["If-Modified-Since"] = known["last_modified"]
        try:
            response = await client.get(self.config["url"], headers=conditional)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            self.ctx.report_health("degraded", f"{self.config['url']}: {reason}")
            return None
        if response.status_code == 304:
            self.ctx.report_health("healthy")
            return None
        if response.status_code >= 400:
            status = response.status_code
            self.ctx.report_health("degraded", f"{self.config['url']} answered {status}")
            return None
        self.ctx.report_health("healthy")
        version = Version(
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            sha256=hashlib.sha256(response.content).hexdigest(),
        )
        first_poll = known is None
        if known is not None and known.get("key") == version.key:
            return None
        await self.ctx.set_cursor(
            {"key": version.key, "etag": version.etag, "last_modified": version.last_modified}
        )
        if first_poll and not self.config["fire_existing"]:
            return None  # the version found at the first poll is the baseline, not a change
        return await self.ctx.fire(
            FireRequest(payload=self._payload(response, version), dedupe_key=version.key)
        )

    def _payload(self, response: httpx.Response, version: Version) -> dict[str, Any]:
        content_type = response.headers.get("content-type", "")
        body: Any = None
        if len(response.content) <= self.config["max_body_bytes"]:
            text = response.content.decode(response.encoding or "utf-8", errors="replace")
            body = text
            if "json" in content_type:
                try:
                    body = json.loads(text)
                except ValueError:
                    body = text
        return {
            "url": self.config["url"],
            "status": response.status_code,
            "etag": version.etag,
            "last_modified": version.last_modified,
            "content_type": content_type,
            "sha256": version.sha256,
            "body": body,
        }


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(HttpPollTrigger)


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in SETTINGS:
        register(setting)


@hookimpl
def register_dispatch_targets(register: Callable[[type[DispatchTarget]], None]) -> None:
    # A plugin may bring dispatch targets too: jsonl-file appends events to a file.
    from wfsched_http_poll.jsonl import JsonlFileTarget

    register(JsonlFileTarget)
