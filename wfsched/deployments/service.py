"""DeploymentService: deploy, update, undeploy, pause, resume, export, status, manual fires.

The CLI and the management API both call this; it only reads and writes the store, so it
works whether a daemon runs or not. A running daemon applies the change by reconciliation.
What it shows (list, status) is in :mod:`.views`.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from wfsched.deployments.views import DeploymentViews, decode_cursor, encode_cursor
from wfsched.errors import Conflict, NotFound, SpecError, WfschedError
from wfsched.manager import invoke
from wfsched.models import Deployment, EventStatus, TriggerEvent, WorkflowSpec, utcnow
from wfsched.spec import (
    InvalidSpecs,
    load_specs,
    parse_documents,
    parse_spec,
    refuse_host_secrets,
    refuse_untrusted_dispatch,
)
from wfsched.timer.rearm import arm_cursors
from wfsched.trigger import BaseTrigger, FireResult


class DeploymentService(DeploymentViews):
    """Operations on deployments; ``manager`` adds live state when inside the daemon."""

    def load(self, paths: Iterable[str | Path]) -> list[Any]:
        """Validate spec files; raise InvalidSpecs naming every file and field at fault."""
        specs = load_specs(paths, self.registry)
        errors = [e for e in map(self._dispatch_problem, specs) if e is not None]
        if errors:
            raise InvalidSpecs(errors)
        return specs

    def _dispatch_problem(self, spec: WorkflowSpec) -> SpecError | None:
        """Why a workflow's own ``[dispatch]`` target cannot work with this configuration
        (e.g. ``mode = "cloudevents"`` without a ``url`` nor dispatch.cloudevents_url)."""
        if spec.dispatch is None:
            return None
        options = {k: v for k, v in spec.dispatch.items() if k != "mode"}
        try:
            self.registry.target(spec.dispatch["mode"]).check_settings(
                self.settings.sections, options
            )
        except WfschedError as exc:
            return SpecError(str(exc), field="dispatch.mode", source=spec.source or None)
        return None

    def parse_document(
        self, document: Any, *, source: str = "request body", from_api: bool = False
    ) -> Any:
        """Validate one spec document; ``from_api``: it comes from an HTTP API caller.

        Such a caller has no access to the host, so its spec may not use ``env:``/``file:``
        secret references (nor otherwise reach the daemon's secrets; see ``refuse_host_secrets``).
        """
        if not isinstance(document, Mapping):
            raise InvalidSpecs([SpecError("a spec must be a JSON object", source=source)])
        try:
            spec = parse_spec(document, self.registry, source=source)
        except SpecError as exc:
            raise InvalidSpecs([exc]) from None
        if from_api:
            refuse_host_secrets(spec, self.registry, source=source)
            refuse_untrusted_dispatch(spec, self.registry, self.settings.sections, source=source)
        problem = self._dispatch_problem(spec)
        if problem is not None:
            raise InvalidSpecs([problem.located(source=source)])
        return spec

    def warnings(self, specs: Sequence[Any]) -> list[str]:
        """Return advice for the specs (e.g. public webhooks without auth)."""
        out = []
        for spec in specs:
            for trigger in spec.triggers:
                cls = self.registry.get(trigger.type)
                for text in cls.warnings(trigger.config):
                    out.append(f"{spec.id}: trigger {trigger.id!r}: {text}")
        return out

    async def deploy(self, specs: Sequence[Any], *, dry_run: bool = False) -> list[dict[str, str]]:
        """Create or update every spec in one transaction (all or nothing)."""
        if dry_run:
            existing = {d.workflow_id: d for d in await self.store.list_deployments()}
            return [
                {"workflow_id": s.id, "action": _dry_action(s, existing.get(s.id))} for s in specs
            ]
        actions = await self.store.apply(specs)
        created = [s for s, a in zip(specs, actions, strict=True) if a == "created"]
        if created:
            # Arm records let a daemon start these timers without parsing; only a speed-up.
            with contextlib.suppress(WfschedError):
                await self.store.set_cursors(
                    arm_cursors(
                        self.registry,
                        self.settings,
                        created,
                        store=self.store,
                        recorder=self.recorder,
                    )
                )
        return [{"workflow_id": s.id, "action": a} for s, a in zip(specs, actions, strict=True)]

    async def undeploy(self, ids: Sequence[str]) -> None:
        await self.store.undeploy(ids)

    async def pause(self, ids: Sequence[str]) -> None:
        await self.store.set_state(ids, "paused")

    async def resume(self, ids: Sequence[str]) -> None:
        await self.store.set_state(ids, "active")

    async def export(self, workflow_id: str) -> str:
        """Return the deployed spec as TOML, as it was written."""
        deployment = await self.store.get_deployment(workflow_id)
        return tomli_w.dumps(dict(deployment.document))

    async def document(self, workflow_id: str) -> dict[str, Any]:
        """Return the deployed spec document (``export --json``)."""
        return dict((await self.store.get_deployment(workflow_id)).document)

    def parse_batch(
        self, documents: Sequence[tuple[str, Mapping[str, Any]]], *, from_api: bool
    ) -> builtins.list[Any]:
        """Validate documents as one deployment (every error of every one, duplicate ids);
        ``from_api``: as :meth:`parse_document`, refuse references to the host's secrets."""
        specs = parse_documents(documents, self.registry)
        if from_api:
            for spec in specs:
                refuse_host_secrets(spec, self.registry, source=spec.source)
        return specs

    async def history(
        self, workflow_id: str | None, *, limit: int, status: EventStatus | None
    ) -> builtins.list[TriggerEvent]:
        """Return events newest first; NotFound for a workflow never seen."""
        events = await self.store.history(workflow_id, limit=limit, status=status)
        if workflow_id is not None and not events:
            await self.store.get_deployment(workflow_id)
        return events

    async def executions(
        self,
        *,
        limit: int,
        workflow_id: str | None = None,
        trigger_id: str | None = None,
        status: EventStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of events, newest first: ``{"items": [event], "next_cursor"}``.

        Keyset paging on the execution id: events recorded while a client pages sort above
        the pages it has read, so none is shown twice or skipped.
        """
        events = await self.store.history(
            workflow_id,
            limit=limit + 1,
            status=status,
            trigger_id=trigger_id,
            since=since,
            until=until,
            before=decode_cursor(cursor),
        )
        if workflow_id is not None and not events and cursor is None:
            await self.store.get_deployment(workflow_id)  # NotFound for a workflow never seen
        more = len(events) > limit
        return {
            "items": [e.to_json() for e in events[:limit]],
            "next_cursor": encode_cursor(events[limit - 1].execution_id) if more else None,
        }

    async def redeliver(self, execution_ids: Sequence[str]) -> builtins.list[TriggerEvent]:
        """Queue failed events for dispatch again, keeping their execution id (Idempotency-Key).

        Only failed events: requeueing a pending or dispatched one would send it twice.
        """
        for execution_id in execution_ids:
            event = await self.store.get_event(execution_id)
            if event.status != "failed":
                raise Conflict(
                    f"event {execution_id} is {event.status}; only failed events can be redelivered"
                )
        return await self.store.requeue(execution_ids, utcnow())

    async def find_trigger(
        self, workflow_id: str, *, kind: str, trigger_id: str | None = None
    ) -> BaseTrigger:
        """Return an instance of the workflow's trigger of type ``kind`` (or id)."""
        deployment = await self.store.get_deployment(workflow_id)
        if deployment.state != "active":
            raise Conflict(f"workflow {workflow_id!r} is paused; resume it first")
        for spec in self._triggers(deployment):
            if (trigger_id is None and spec.type == kind) or spec.id == trigger_id:
                if not spec.enabled:
                    raise Conflict(f"trigger {spec.id!r} of {workflow_id!r} is disabled")
                if self.manager is not None:
                    trigger = await self.manager.built(workflow_id, spec.id)
                    if trigger is not None:
                        return trigger
                return self.instance(workflow_id, spec)
        what = f"trigger {trigger_id!r}" if trigger_id else f"{kind} trigger"
        raise NotFound(f"workflow {workflow_id!r} has no {what}")

    async def fire_manual(
        self,
        workflow_id: str,
        data: Any,
        *,
        user: str,
        confirmed: bool,
        trigger_id: str | None = None,
    ) -> FireResult:
        trigger = await self.find_trigger(workflow_id, kind="manual", trigger_id=trigger_id)
        return await invoke(trigger, data, user=user, confirmed=confirmed)


def _dry_action(spec: Any, current: Deployment | None) -> str:
    if current is None:
        return "created"
    return "unchanged" if current.spec_hash == spec.spec_hash else "updated"
