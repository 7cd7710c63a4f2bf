"""What the CLI can do, as one interface over either side: the store on this host, or a
daemon's HTTP API (``wfsched.client``). The commands call a :class:`Control` and never know
which one they were given, so both give the same answers in the same shapes and raise the same
errors (the remote one maps the API's JSON errors back to them).
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wfsched.errors import InvalidInput, SpecError
from wfsched.models import EventStatus, utcnow

if TYPE_CHECKING:
    from wfsched.deployments import DeploymentService
    from wfsched.plugins import Configured


@dataclass(frozen=True, slots=True)
class Deployed:
    """What a deploy did (``[{"workflow_id", "action"}]``) and its advice."""

    results: list[dict[str, str]]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters and paging of ``history``: events newest first."""

    limit: int
    workflow_id: str | None = None
    trigger_id: str | None = None
    status: EventStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None


class Control(Protocol):
    """Every operation of the CLI but ``serve``, ``init`` and ``cron``."""

    async def aclose(self) -> None: ...

    async def deploy(self, paths: Sequence[Path], *, dry_run: bool) -> Deployed: ...

    async def undeploy(self, ids: Sequence[str]) -> None: ...

    async def pause(self, ids: Sequence[str]) -> None: ...

    async def resume(self, ids: Sequence[str]) -> None: ...

    async def workflows(
        self, *, limit: int | None, cursor: str | None, state: str | None, q: str | None
    ) -> dict[str, Any]:
        """``{"items": [the list shape], "next_cursor"}``; every one when ``limit`` is None."""

    async def status(self, workflow_id: str) -> dict[str, Any]: ...

    async def export(self, workflow_id: str) -> str:
        """The deployed spec as TOML."""

    async def document(self, workflow_id: str) -> dict[str, Any]:
        """The deployed spec as a document (``export --json``)."""

    async def fire(
        self, workflow_id: str, data: Any, *, confirmed: bool, trigger_id: str | None
    ) -> dict[str, Any]:
        """Fire a manual trigger: ``{"execution_id", "workflow_id", "status"}``; raises
        ``Conflict("confirmation_required")`` when it needs ``confirmed``."""

    async def executions(self, query: EventQuery) -> dict[str, Any]:
        """``{"items": [event], "next_cursor"}``."""

    async def redeliver(self, execution_ids: Sequence[str]) -> list[dict[str, Any]]: ...

    async def prune(self, older_than: float | None, *, dry_run: bool) -> dict[str, Any]:
        """``{"deleted": N}`` (with ``"dry_run": true`` when counting only)."""

    async def check(self) -> dict[str, Any]:
        """``{"ok", "config", "checks": [{"name", "ok", "detail"}]}``."""

    async def plugins(self) -> list[dict[str, str]]: ...

    async def daemon(self) -> dict[str, Any]:
        """``{"running", "last_seen", "replicas"}`` from the daemons' heartbeats."""

    async def density(self, hours: int) -> dict[str, Any]:
        """Fires per minute of every active time trigger over the next ``hours``."""

    async def explain(
        self,
        workflow_id: str,
        *,
        trigger_id: str | None,
        at: str | None,
        since: str | None,
        until: str | None,
    ) -> dict[str, Any]:
        """The occurrence ledger's answer for a window (``wfsched explain``)."""


class LocalControl:
    """The operations on the configured store, with the plugins loaded here."""

    def __init__(self, configured: Configured) -> None:
        self.settings, self.registry = configured
        self._svc: DeploymentService | None = None
        self._close: Any = None

    async def _service(self) -> DeploymentService:
        if self._svc is None:
            from contextlib import AsyncExitStack

            from wfsched.backends import connected
            from wfsched.deployments import DeploymentService

            stack = AsyncExitStack()
            store = await stack.enter_async_context(connected(self.settings))
            self._close = stack.aclose
            self._svc = DeploymentService(
                store=store, registry=self.registry, settings=self.settings
            )
        return self._svc

    async def aclose(self) -> None:
        if self._close is not None:
            await self._close()
            self._close = self._svc = None

    async def deploy(self, paths: Sequence[Path], *, dry_run: bool) -> Deployed:
        from wfsched.spec import load_specs

        specs = load_specs(paths, self.registry)  # invalid specs fail before the store opens
        svc = await self._service()
        results = await svc.deploy(specs, dry_run=dry_run)
        return Deployed(results, svc.warnings(specs))

    async def undeploy(self, ids: Sequence[str]) -> None:
        await (await self._service()).undeploy(ids)

    async def pause(self, ids: Sequence[str]) -> None:
        await (await self._service()).pause(ids)

    async def resume(self, ids: Sequence[str]) -> None:
        await (await self._service()).resume(ids)

    async def workflows(
        self, *, limit: int | None, cursor: str | None, state: str | None, q: str | None
    ) -> dict[str, Any]:
        svc = await self._service()
        return await svc.page(limit=limit, cursor=cursor, state=state, q=q)

    async def status(self, workflow_id: str) -> dict[str, Any]:
        return await (await self._service()).status(workflow_id)

    async def export(self, workflow_id: str) -> str:
        return await (await self._service()).export(workflow_id)

    async def document(self, workflow_id: str) -> dict[str, Any]:
        return await (await self._service()).document(workflow_id)

    async def fire(
        self, workflow_id: str, data: Any, *, confirmed: bool, trigger_id: str | None
    ) -> dict[str, Any]:
        svc = await self._service()
        result = await svc.fire_manual(
            workflow_id, data, user=getpass.getuser(), confirmed=confirmed, trigger_id=trigger_id
        )
        return {
            "execution_id": result.execution_id,
            "workflow_id": result.workflow_id,
            "status": result.status,
        }

    async def executions(self, query: EventQuery) -> dict[str, Any]:
        svc = await self._service()
        return await svc.executions(
            limit=query.limit,
            workflow_id=query.workflow_id,
            trigger_id=query.trigger_id,
            status=query.status,
            since=query.since,
            until=query.until,
            cursor=query.cursor,
        )

    async def redeliver(self, execution_ids: Sequence[str]) -> list[dict[str, Any]]:
        events = await (await self._service()).redeliver(execution_ids)
        return [{"execution_id": e.execution_id, "status": e.status} for e in events]

    async def prune(self, older_than: float | None, *, dry_run: bool) -> dict[str, Any]:
        from wfsched.store import Retention
        from wfsched.store.retention import prune_all

        now = utcnow()
        if older_than is not None:
            cutoff = now - timedelta(seconds=older_than)
            retention = Retention(cutoff, cutoff)
        else:
            retention = Retention.at(
                now,
                self.settings.get("history.retention"),
                self.settings.get("history.failed_retention"),
            )
        store = (await self._service()).store
        if dry_run:
            return {"deleted": int(await store.count_prunable(retention)), "dry_run": True}
        # Exact and without rests: an operator asked for it now; steps stay short, so a
        # daemon sharing the store still gets its turns.
        return {"deleted": await prune_all(store, retention, rest=False)}

    async def check(self) -> dict[str, Any]:
        from wfsched.checks import run_checks

        results = await run_checks(self.settings, self.registry)
        return {
            "ok": all(r["ok"] for r in results),
            "config": self.settings.path,
            "checks": results,
        }

    async def plugins(self) -> list[dict[str, str]]:
        from wfsched.plugins import plugin_rows

        return plugin_rows(self.registry)

    async def density(self, hours: int) -> dict[str, Any]:
        from wfsched.density import density, time_triggers

        triggers = await time_triggers(await self._service())
        return density(triggers, now=utcnow(), hours=hours).to_json()

    async def daemon(self) -> dict[str, Any]:
        return await (await self._service()).daemon()

    async def explain(
        self,
        workflow_id: str,
        *,
        trigger_id: str | None,
        at: str | None,
        since: str | None,
        until: str | None,
    ) -> dict[str, Any]:
        from wfsched.explain import ExplainService, window

        try:
            win = window(at=at, since=since, until=until)
        except SpecError as exc:
            raise InvalidInput(f"--{exc.field}: {exc.message}") from None
        svc = await self._service()
        return await ExplainService(svc).explain(workflow_id, win, trigger_id=trigger_id)
