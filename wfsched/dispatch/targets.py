"""The built-in dispatch targets ``log``, ``engine``, ``notify`` and ``cloudevents``.

Registered through the project's own ``[project.entry-points.wfsched]`` table, like the
built-in trigger types and like any third-party target. Each reads its own settings (engine:
``dispatch.engine_url``, cloudevents: ``dispatch.cloudevents_url``, notify: ``[notify]``) and
says what a workflow's ``[dispatch]`` table may hold (engine and cloudevents: ``url``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from yarl import URL

from wfsched.dispatch import LogSender
from wfsched.errors import ConfigError, SpecError
from wfsched.fields import Fields
from wfsched.hookspecs import hookimpl
from wfsched.secretrefs import resolve_secret
from wfsched.target import DispatchTarget, Sender, TargetContext, require


class LogTarget(DispatchTarget):
    """``log``: the event counts as dispatched; the dispatcher's log line is its record."""

    name = "log"

    @classmethod
    def open(cls, ctx: TargetContext, options: Mapping[str, Any]) -> Sender:
        return LogSender()


def _url_option(options: Mapping[str, Any], setting: str) -> dict[str, Any]:
    """Validate the ``url`` field a workflow may give engine and cloudevents targets."""
    from wfsched.dispatch.engine import parse_engine_url

    fields = Fields(options, allowed={"url"})
    url = fields.str("url", "")
    if not url:
        return {}
    try:
        parse_engine_url(url, setting)
    except ConfigError as exc:
        raise SpecError(str(exc).removeprefix(f"{setting}: "), field="url") from None
    return {"url": url}


def _allowed(url: URL, prefix: URL) -> bool:
    """``url`` is at or below ``prefix``: same scheme, host and port, and a path that continues
    the prefix's at a segment boundary (``https://e.example/api`` allows ``…/api/v1`` but not
    ``…/api-evil`` nor ``https://e.example.evil.net``). Raw paths: an encoded slash is no
    boundary."""
    if (url.scheme, url.host, url.port) != (prefix.scheme, prefix.host, prefix.port):
        return False
    base = prefix.raw_path.rstrip("/")
    return url.raw_path == base or url.raw_path.startswith(base + "/")


def _url_untrusted(
    options: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]]
) -> list[SpecError]:
    """Over the HTTP API a ``url`` must lie under one of ``dispatch.allowed_urls``: the daemon
    would send every event of the workflow (mail, GitHub deliveries fetched with the App) and
    POST from inside the operator's network to wherever the caller chose."""
    from wfsched.dispatch.engine import parse_engine_url

    url = options.get("url")
    if not url:
        return []
    raw = str(settings.get("dispatch", {}).get("allowed_urls", ""))
    prefixes = []
    for part in raw.split(","):
        if part.strip():
            prefixes.append(parse_engine_url(part, "dispatch.allowed_urls")[0])
    target = parse_engine_url(url, "url")[0]
    if any(_allowed(target, prefix) for prefix in prefixes):
        return []
    allowed = ", ".join(str(p) for p in prefixes) or "nothing: it is empty"
    return [
        SpecError(
            "over the HTTP API a url must start with one of dispatch.allowed_urls"
            f" (WFSCHED_DISPATCH_ALLOWED_URLS), which allows {allowed}",
            field="url",
        )
    ]


class _UrlTarget(DispatchTarget):
    """An HTTP target: a workflow's own ``url``, else the ``dispatch.<setting>`` setting."""

    setting: ClassVar[str]
    env: ClassVar[str]

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return _url_option(options, "dispatch.url")

    @classmethod
    def check_settings(
        cls, settings: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any]
    ) -> None:
        from wfsched.dispatch.engine import parse_engine_url

        if not options.get("url"):
            name = f"dispatch.{cls.setting}"
            require(settings, name, cls.env, cls.name)
            parse_engine_url(settings["dispatch"][cls.setting], name)

    @classmethod
    def untrusted_problems(
        cls, options: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]]
    ) -> list[SpecError]:
        return _url_untrusted(options, settings)


class EngineTarget(_UrlTarget):
    """``engine``: POST the event to ``{url}/v1/workflows/{id}/execute``."""

    name = "engine"
    setting = "engine_url"
    env = "WORKFLOW_ENGINE_URL"

    @classmethod
    def open(cls, ctx: TargetContext, options: Mapping[str, Any]) -> Sender:
        from wfsched.dispatch.engine import EngineSender

        url = options.get("url") or ctx.section("dispatch")[cls.setting]
        return EngineSender(url, timeout=ctx.timeout, max_connections=ctx.max_connections)


class CloudEventsTarget(_UrlTarget):
    """``cloudevents``: the event as a binary-mode CloudEvent."""

    name = "cloudevents"
    setting = "cloudevents_url"
    env = "WFSCHED_CLOUDEVENTS_URL"

    @classmethod
    def open(cls, ctx: TargetContext, options: Mapping[str, Any]) -> Sender:
        from wfsched.dispatch.cloudevents import CloudEventsSender

        url = options.get("url")
        setting = "[dispatch] url" if url else "dispatch.cloudevents_url"
        return CloudEventsSender(
            url or ctx.section("dispatch")["cloudevents_url"],
            setting=setting,
            timeout=ctx.timeout,
            max_connections=ctx.max_connections,
        )


class NotifyTarget(DispatchTarget):
    """``notify``: one email per event to ``notify.to`` through ``notify.smtp_url``."""

    name = "notify"

    @classmethod
    def check_settings(
        cls, settings: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any]
    ) -> None:
        require(settings, "notify.smtp_url", "WFSCHED_SMTP_URL", cls.name)
        require(settings, "notify.to", "WFSCHED_NOTIFY_TO", cls.name)

    @classmethod
    def open(cls, ctx: TargetContext, options: Mapping[str, Any]) -> Sender:
        from wfsched.dispatch.notify import NotifySender

        notify = ctx.section("notify")
        try:
            smtp_url = resolve_secret(notify["smtp_url"]) if notify["smtp_url"] else ""
        except SpecError as exc:
            raise ConfigError(f"notify.smtp_url: {exc.message}") from None
        return NotifySender(
            smtp_url,
            sender=notify["from"],
            recipients=notify["to"],
            timeout=ctx.timeout,
        )


BUILTIN = (LogTarget, EngineTarget, NotifyTarget, CloudEventsTarget)


@hookimpl
def register_dispatch_targets(register: Callable[[type[DispatchTarget]], None]) -> None:
    for target in BUILTIN:
        register(target)
