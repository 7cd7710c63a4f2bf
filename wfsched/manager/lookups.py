"""What the web layer and the deployment views ask the manager: which trigger serves a
request, whether the running triggers reflect the store yet, how each trigger is doing.

Ingress never sees a gap: a restarted trigger's new instance takes its place in ``running``
before the old one stops, and a removed trigger stops only after the workflow's new ones run;
an on-demand trigger is routed from the moment it starts and built by its first request.
What the running set cannot answer alone (was this workflow just deployed? did a delivery
match nothing because nothing is deployed, or because the change is not applied yet?) is
answered by ``settled`` and ``ingress_after_miss``, which wait briefly for the store's latest
revision to be applied and else raise ``Unavailable`` (503) rather than a wrong 404 or 2xx.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup

from wfsched.config import Settings
from wfsched.context import TriggerCtx, build_trigger
from wfsched.errors import NotFound, Unavailable, WfschedError
from wfsched.locks import LockManager
from wfsched.manager.instances import Running, trigger_hash
from wfsched.models import Deployment, Health, TriggerSpec
from wfsched.occurrences import OccurrenceLog
from wfsched.plugins import Registry
from wfsched.recorder import Recorder
from wfsched.routing import Routing, SharedTriggers
from wfsched.spec import parse_spec
from wfsched.store import Store
from wfsched.timer import Timer
from wfsched.timer.rearm import environment
from wfsched.trigger import BaseTrigger

log = logging.getLogger("wfsched.triggers")
NOTHING: tuple[str, str, tuple[str, ...]] = ("", "", ())
"""A workflow's record before it is reconciled: no hash, no state, no trigger started."""
SETTLE_WAIT = 2.0
"""Seconds a request waits for deployment changes to be applied before it gets 503: long
enough for a reconcile of a few changed deployments, short enough for GitHub's 10 s."""


class Lookups(ABC):
    """The manager's state and every question asked of it; :class:`TriggerManager` changes
    the state (reconciliation)."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        recorder: Recorder,
        settings: Settings,
        locks: LockManager,
        timer: Timer,
        ledger: OccurrenceLog | None = None,
    ) -> None:
        self.registry = registry
        self.ledger = ledger
        self.store = store
        self.recorder = recorder
        self.settings = settings
        self.locks = locks
        self.timer = timer
        self.running: dict[tuple[str, str], Running] = {}
        # What requests look triggers up in (kept in step with ``running``): never a walk of
        # every running trigger on a request.
        self._routing = Routing()
        # Per workflow: the spec hash and state last reconciled, and the triggers started.
        self._deployed: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        # The on-demand triggers started but not yet built (their type): no instance at all.
        self._idle: dict[tuple[str, str], str] = {}
        self._tg: TaskGroup | None = None
        self._lock = anyio.Lock()
        self.revision = -1
        """The store revision the running triggers reflect (-1: before the first reconcile)."""
        self.stopping = False
        # Requests waiting for a revision to be applied (``settled``): the highest asked for,
        # whether a pass is already queued for it, and the event that ends the next pass.
        self._wanted = -1
        self._asked = False
        self._passed = anyio.Event()
        self._failed = False
        self._envs: dict[str, str | None] = {}
        self._cold = False
        """In a cold pass, which logs one line for all on-demand triggers, not one each."""
        timer.arm_env = self.environment

    def environment(self, kind: str) -> str | None:
        """Digest of what besides the spec shapes a trigger of type ``kind`` (for arm records)."""
        if kind not in self._envs:
            self._envs[kind] = (
                environment(self.settings, self.registry.get(kind))
                if kind in self.registry
                else None
            )
        return self._envs[kind]

    def ingress_trigger(self, workflow_id: str) -> BaseTrigger:
        """Return the built trigger of a workflow served on the per-workflow ingress
        (NotFound also when it is started but not built yet: see ``ingress_after_miss``)."""
        trigger = self._routing.webhook(workflow_id)
        if trigger is not None:
            return trigger
        raise NotFound(f"workflow {workflow_id!r} has no active webhook trigger")

    def routes_webhook(self, workflow_id: str) -> bool:
        """True when the per-workflow ingress of ``workflow_id`` has a started trigger, built
        or not."""
        return (
            self._routing.webhook(workflow_id) is not None
            or self._idle_webhook(workflow_id) is not None
        )

    def _idle_webhook(self, workflow_id: str) -> str | None:
        """The id of the first started, not yet built per-workflow ingress trigger."""
        for trigger_id in self._deployed.get(workflow_id, NOTHING)[2]:
            kind = self._idle.get((workflow_id, trigger_id))
            if kind is not None and self.registry.get(kind).ingress == "workflow":
                return trigger_id
        return None

    async def ingress_after_miss(self, workflow_id: str) -> BaseTrigger:
        """The per-workflow ingress found no built trigger for ``workflow_id``.

        A started one is built now, from the stored spec (its first request). Else NotFound
        (404) when the store holds none either: unknown, paused, or without an enabled
        webhook trigger; one indexed read, as cheap as a 404 can be. Else the trigger once
        pending changes are applied, or Unavailable (503) while it is starting, stopping or
        being replaced (or failed to start: its status says why).
        """
        trigger = await self._build(workflow_id)
        if trigger is not None:
            return trigger
        if not await self._serves(workflow_id, "workflow"):
            raise NotFound(f"no active webhook trigger for {workflow_id!r}")
        if await self.settled():
            with contextlib.suppress(NotFound):
                return self.ingress_trigger(workflow_id)
            trigger = await self._build(workflow_id)
            if trigger is not None:
                return trigger
        raise Unavailable(
            f"the webhook trigger of {workflow_id!r} is starting, stopping or being "
            "replaced; nothing was recorded, retry shortly"
        )

    async def _build(self, workflow_id: str) -> BaseTrigger | None:
        """The started per-workflow ingress trigger of ``workflow_id``, built now."""
        trigger_id = self._idle_webhook(workflow_id)
        return None if trigger_id is None else await self.built(workflow_id, trigger_id)

    async def built(self, workflow_id: str, trigger_id: str) -> BaseTrigger | None:
        """The instance of a trigger started here, built from its stored spec if it is idle
        (and kept); None when it is not started here, or the store holds a spec not applied
        yet."""
        key = (workflow_id, trigger_id)
        if key not in self._idle:
            run = self.running.get(key)
            return None if run is None else run.trigger
        try:
            deployment = await self.store.get_deployment(workflow_id)
        except NotFound:
            return None
        run = self.running.get(key)
        if run is not None:  # built by a request that read it first
            return run.trigger
        applied = self._deployed.get(workflow_id, NOTHING)[0]
        if key not in self._idle or applied != deployment.spec_hash:
            return None
        spec = next((t for t in self._triggers_of(deployment) if t.id == trigger_id), None)
        if spec is None or spec.type != self._idle[key]:
            return None
        run = await self._build_idle(key, spec)
        return None if run is None else run.trigger

    async def _build_idle(self, key: tuple[str, str], spec: TriggerSpec) -> Running | None:
        """Build the idle trigger ``key`` from ``spec`` and keep it (routed, running)."""
        try:
            trigger, ctx = self._instance(key[0], spec)
        except Exception as exc:  # as when a trigger fails to start
            log.exception(
                "trigger failed to start", extra={"workflow_id": key[0], "trigger_id": spec.id}
            )
            await self.store.set_health(key[0], spec.id, "failing", str(exc))
            return None
        del self._idle[key]
        run = self.running[key] = Running(trigger=trigger, ctx=ctx, hash=trigger_hash(spec))
        self._routing.put(key, trigger)
        return run

    def _instance(self, workflow_id: str, spec: TriggerSpec) -> tuple[BaseTrigger, TriggerCtx]:
        return build_trigger(
            self.registry,
            workflow_id,
            spec,
            store=self.store,
            recorder=self.recorder,
            settings=self.settings,
            locks=self.locks,
            ledger=self.ledger,
        )

    def started(self) -> int:
        """How many triggers run here as instances, built or not (timers aside)."""
        return len(self.running) + len(self._idle)

    def instances(self) -> list[tuple[str, str, str, Health, str | None]]:
        """``(workflow id, trigger id, type, health, last error)`` of every trigger started
        as an instance, built or not, in workflow and trigger order."""
        rows = [(w, t, run.trigger.type, *run.ctx.health) for (w, t), run in self.running.items()]
        rows += [(w, t, kind, "healthy", None) for (w, t), kind in self._idle.items()]
        rows.sort()
        return rows

    def ingress_routes(self) -> list[tuple[str, str, str, str, Health]]:
        """``(workflow id, trigger id, type, ingress, health)`` of every started trigger that
        serves an ingress route, built or not, in workflow and trigger order."""
        rows = [
            (w, t, run.trigger.type, run.trigger.ingress, run.ctx.health[0])
            for (w, t), run in self.running.items()
            if run.trigger.ingress is not None
        ]
        for (w, t), kind in self._idle.items():
            ingress = self.registry.get(kind).ingress
            if ingress is not None:
                rows.append((w, t, kind, ingress, "healthy"))
        rows.sort()
        return rows

    async def _serves(self, workflow_id: str, ingress: str) -> bool:
        """True when the store holds ``workflow_id`` active with an enabled trigger served on
        ``ingress``."""
        try:
            deployment = await self.store.get_deployment(workflow_id)
        except NotFound:
            return False
        return deployment.state == "active" and any(
            t.enabled and t.type in self.registry and self.registry.get(t.type).ingress == ingress
            for t in self._triggers_of(deployment)
        )

    async def settled(self, wait: float = SETTLE_WAIT) -> bool:
        """True when the running triggers reflect every deployment change committed before
        this call, so a shared ingress may say that a delivery matched nothing.

        The daemon learns of changes by a poll or a notification, a moment late: a pass is
        asked for at once and awaited up to ``wait`` seconds. False while stopping, before
        the first reconcile, or when the pass fails or takes longer.
        """
        if self.stopping:
            return False
        wanted = await self.store.revision()
        with anyio.move_on_after(wait):
            while not self.stopping and self.revision < wanted:
                passed = self._passed
                self._wanted = max(self._wanted, wanted)
                if not self._asked:
                    self._asked = True
                    await self._ask()
                await passed.wait()
                if self._failed:
                    break
        return not self.stopping and self.revision >= wanted

    async def _ask(self) -> None:
        if self._tg is not None:
            # In the daemon's task group: a request that gives up does not cancel the pass.
            self._tg.start_soon(self._reconcile_asked, name="reconcile")
            return
        with anyio.CancelScope(shield=True):  # no task group (tests): in the caller
            await self._reconcile_asked()

    async def _reconcile_asked(self) -> None:
        try:
            async with self._lock:
                self._asked = False
                if self.revision < self._wanted:  # else a pass since the ask did it
                    await self._pass()
        except WfschedError as exc:
            log.warning("reconcile failed", extra={"error": str(exc)})

    def shared_triggers(self, name: str) -> SharedTriggers:
        """Return the running triggers of the types served on shared ingress ``name``, indexed
        by routing key (the index itself, kept current: a request takes its candidates)."""
        return self._routing.shared(name)

    def shared_ingress_type(self, name: str) -> type[BaseTrigger]:
        for t in self.registry.all():
            if t.cls.ingress == name:
                return t.cls
        raise NotFound(f"no trigger type serves the {name!r} ingress")

    def health(self, workflow_id: str, trigger_id: str) -> tuple[Health, str | None] | None:
        run = self.running.get((workflow_id, trigger_id))
        return run.ctx.health if run else None

    def describe(self, workflow_id: str, trigger_id: str) -> dict[str, Any]:
        run = self.running.get((workflow_id, trigger_id))
        return run.trigger.describe() if run else {}

    def is_live(self, workflow_id: str, trigger_id: str) -> bool:
        """True when the trigger runs here, as an instance or as an armed timer."""
        return (workflow_id, trigger_id) in self.running or (workflow_id, trigger_id) in self.timer

    def next_fire(self, workflow_id: str, trigger_id: str) -> datetime | None:
        return self.timer.next_fire(workflow_id, trigger_id)

    def _triggers_of(self, deployment: Deployment) -> tuple[TriggerSpec, ...]:
        # Parsed on every call, not kept: only changed deployments and requests that found
        # no built trigger come here, and a kept spec would cost every deployed workflow.
        try:
            spec = parse_spec(
                deployment.document, self.registry, source=f"deployment {deployment.workflow_id}"
            )
        except WfschedError as exc:
            # A spec valid when deployed may fail now (plugin removed): keep the rest running.
            log.error(
                "deployed spec no longer valid",
                extra={"workflow_id": deployment.workflow_id, "error": str(exc)},
            )
            return ()
        return spec.triggers

    @abstractmethod
    async def _pass(self) -> None:
        """One reconciliation, under ``_lock``; wakes the requests waiting in ``settled``."""
