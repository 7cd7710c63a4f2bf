"""The ``github`` trigger: a GitHub App's webhook deliveries fire the workflows they match.

Every github trigger shares one route, ``POST /api/v1/public/webhooks/github`` (see
``_github_ingress``); each delivery gives every deployed workflow whose trigger matches one event
(dedupe key ``github:<X-GitHub-Delivery>``, so a redelivery records nothing new). Filters:
``repository``, ``events`` (default ``push``), ``actions``, ``branches``, ``tags``, ``paths``,
``authors``, ``labels`` (``_github_filters``). With App credentials, ``fetch_context`` adds the
changed files, commits and pull-request metadata under ``payload.context``, and one process per
deployment recovers failed deliveries by asking GitHub to redeliver them (``_github_redeliver``).
The core hands a delivery to the ingress only once every deployed github trigger runs; while
triggers start, stop or are redeployed it answers 503 with Retry-After, so ``"matched": []``
always means that no deployed trigger matched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import anyio

from wfsched import (
    BaseTrigger,
    Check,
    DispatchTarget,
    Inbound,
    Outbound,
    Setting,
    SharedTriggers,
    SpecError,
    TriggerContext,
    TriggerSpec,
    hookimpl,
)
from wfsched.triggers.github import openapi, section
from wfsched.triggers.github.config import validate_config
from wfsched.triggers.github.filters import FILTER_KEYS, Filters

# The App client, the ingress and the redelivery loop (httpx, pyjwt, cryptography: about
# 80 ms of imports) load when a github trigger first runs or receives, not with the plugin:
# every CLI command and every daemon without a github trigger starts without them.

PATH = "/api/v1/public/webhooks/github"
SETTINGS_RETRY = 60.0
# The triggers of one process elect one contender here; only it polls the shared lock.
_CONTENDER = anyio.Lock()


class GitHubTrigger(BaseTrigger):
    """Fires on GitHub App webhook deliveries that pass the trigger's filters."""

    type = "github"
    ingress = "github"
    # run(): reports configuration problems, and one of them recovers failed deliveries.
    has_run = True

    def __init__(self, spec: TriggerSpec, ctx: TriggerContext) -> None:
        super().__init__(spec, ctx)
        self.filters = Filters.from_config(self.config)
        self.fetch_context = bool(self.config.get("fetch_context", False))

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return validate_config(config)

    @classmethod
    def openapi_paths(cls) -> dict[str, Any]:
        return openapi.paths(PATH)

    @classmethod
    def checks(cls, settings: Mapping[str, Mapping[str, Any]]) -> list[Check]:
        return section.checks(settings)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": PATH}
        out.update({k: list(self.config[k]) for k in FILTER_KEYS if self.config.get(k)})
        out["fetch_context"] = self.fetch_context
        return out

    def routing_keys(self) -> Collection[str] | None:
        # Deliveries are routed by repository: one for org/a never looks at org/b's triggers.
        return self.filters.repositories()

    @classmethod
    async def receive_shared(
        cls, request: Inbound, triggers: SharedTriggers, settings: Mapping[str, Any]
    ) -> Outbound:
        from wfsched.triggers.github.ingress import receive

        def route(repository: str | None) -> list[GitHubTrigger]:
            found = triggers.candidates([repository] if repository else [])
            return [t for t in found if isinstance(t, GitHubTrigger)]

        return await receive(request, route, settings)

    def _wants_pull_files(self) -> bool:
        events = self.config.get("events", ["push"])
        return bool(self.config.get("paths")) and any(
            e.startswith("pull_request") or "*" in e for e in events
        )

    async def run(self) -> None:
        # Loaded here, when the trigger starts, so the first delivery does not pay for it.
        import wfsched.triggers.github.ingress  # noqa: F401
        from wfsched.triggers.github.app import app_for, client, load_settings
        from wfsched.triggers.github.redeliver import (
            Redeliverer,
            recover_forever,
            wait_for_listener,
        )

        while True:
            try:
                settings = load_settings(self.ctx.settings(section.SECTION))
                app = app_for(settings) if settings.has_app else None
            except SpecError as exc:
                self.ctx.report_health("failing", str(exc))
                await anyio.sleep(SETTINGS_RETRY)
                continue
            if not settings.webhook_secrets:
                self.ctx.report_health(
                    "failing",
                    "github.webhook_secret is not set: every delivery is refused until it is",
                )
                await anyio.sleep(SETTINGS_RETRY)
                continue
            if app is None and (self._wants_pull_files() or self.fetch_context):
                self.ctx.report_health(
                    "degraded",
                    "paths on pull requests and fetch_context "
                    "need github.app_id and github.private_key",
                )
            else:
                self.ctx.report_health("healthy")
            if app is None:
                await anyio.sleep_forever()
                return
            # One recovery loop per deployment: the first github trigger to take the lock.
            async with _CONTENDER, self.ctx.lock("github-redelivery", ttl=30.0) as lease:
                server = self.ctx.settings("server")
                await wait_for_listener(
                    str(server.get("host", "127.0.0.1")), int(server.get("port", 8003))
                )
                self.ctx.log.info("recovering failed GitHub deliveries")
                redeliverer = Redeliverer(app, settings.redelivery_window, self.ctx.log)
                await recover_forever(
                    redeliverer, lease, self.ctx.report_health, client=lambda: client(30.0)
                )
            self.ctx.log.warning("lost the github-redelivery lock; taking it again")


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(GitHubTrigger)


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in section.SETTINGS:
        register(setting)


@hookimpl
def register_dispatch_targets(register: Callable[[type[DispatchTarget]], None]) -> None:
    # The github-actions target shares this plugin's App client and [github] section.
    from wfsched.triggers.github.actions import GitHubActionsTarget

    register(GitHubActionsTarget)
