"""TriggerManager: runs deployed triggers and keeps them equal to the store (reconciliation).

The store is the source of truth. ``reconcile`` compares deployed specs with running triggers
and starts, stops or restarts the difference, by each trigger's own hash, so editing one
trigger leaves the others of the workflow running.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup

from wfsched.config import Settings
from wfsched.errors import Conflict, NotFound, WfschedError
from wfsched.events import Recorder
from wfsched.locks import Lease, LockManager
from wfsched.metrics import DEPLOYMENTS, TRIGGER_HEALTH
from wfsched.models import Deployment, Health, NewEvent, TriggerSpec, new_execution_id, utcnow
from wfsched.plugins import Registry
from wfsched.spec import canonical_json, parse_spec
from wfsched.store import Store
from wfsched.timers import Timer, parse_cursor
from wfsched.trigger import BaseTrigger, FireRequest, FireResult

log = logging.getLogger("wfsched.triggers")


class _Adapter(logging.LoggerAdapter[logging.Logger]):
    """Adds the trigger's fields to every record without dropping the call's own extras."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class TriggerCtx:
    """The TriggerContext the core hands each trigger."""

    def __init__(self, *, workflow_id: str, spec: TriggerSpec, store: Store, recorder: Recorder,
                 settings: Settings, locks: LockManager | None = None) -> None:
        self._workflow_id = workflow_id
        self._spec = spec
        self._store = store
        self._recorder = recorder
        self._settings = settings
        self._locks = locks
        self._health: tuple[Health, str | None] = ("healthy", None)
        self._log = _Adapter(log, {"workflow_id": workflow_id,
                                                "trigger_id": spec.id, "trigger_type": spec.type})

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    @property
    def trigger_id(self) -> str:
        return self._spec.id

    @property
    def seed(self) -> str:
        return f"{self._workflow_id}/{self._spec.id}"

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._log

    @property
    def health(self) -> tuple[Health, str | None]:
        return self._health

    def settings(self, section: str) -> Mapping[str, Any]:
        return self._settings.sections.get(section, {})

    def new_event(self, request: FireRequest) -> NewEvent:
        execution_id = new_execution_id()
        payload = {**self._spec.payload, **request.payload}
        return NewEvent(execution_id=execution_id, workflow_id=self._workflow_id,
                        trigger_id=self._spec.id, trigger_type=self._spec.type,
                        dedupe_key=request.dedupe_key or f"exec:{execution_id}",
                        payload=payload, fired_at=utcnow(), scheduled_at=request.scheduled_at)

    async def fire(self, request: FireRequest) -> FireResult:
        [(event, created)] = await self._recorder.record([self.new_event(request)])
        self._log.info("fired" if created else "duplicate fire ignored",
                       extra={"execution_id": event.execution_id, "status": event.status})
        return FireResult(execution_id=event.execution_id, workflow_id=event.workflow_id,
                          status=event.status, created=created)

    async def get_cursor(self) -> Any:
        return await self._store.get_cursor(self._workflow_id, self._spec.id)

    async def set_cursor(self, value: Any, *, fence: int | None = None) -> None:
        await self._store.set_cursor(self._workflow_id, self._spec.id, value, fence=fence)

    def report_health(self, health: Health, error: str | None = None) -> None:
        if (health, error) == self._health:
            return
        old = self._health[0]
        self._health = (health, error)
        TRIGGER_HEALTH.labels(self._workflow_id, self._spec.id, old).set(0)
        TRIGGER_HEALTH.labels(self._workflow_id, self._spec.id, health).set(1)
        level = logging.INFO if health == "healthy" else logging.WARNING
        self._log.log(level, f"trigger {health}", extra={"status": health, "error": error})
        self._pending_health = True

    def lock(self, name: str, *, ttl: float = 15.0) -> AbstractAsyncContextManager[Lease]:
        if self._locks is None:
            raise WfschedError("locks are only available inside the daemon")
        return self._locks.hold(name, ttl=ttl)

    _pending_health = False

    async def flush_health(self) -> None:
        """Write a changed health to the store (so the CLI's ``status`` sees it)."""
        if self._pending_health:
            self._pending_health = False
            await self._store.set_health(self._workflow_id, self._spec.id, *self._health)


def trigger_hash(spec: TriggerSpec) -> str:
    """Identity of a trigger's definition: a change restarts that trigger only."""
    return canonical_json({"type": spec.type, "enabled": spec.enabled,
                           "payload": dict(spec.payload), "config": dict(spec.config)})


@dataclass(eq=False)
class Running:
    """One running trigger."""

    trigger: BaseTrigger
    ctx: TriggerCtx
    hash: str
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event = field(default_factory=anyio.Event)


def build_trigger(registry: Registry, workflow_id: str, spec: TriggerSpec, *, store: Store,
                  recorder: Recorder, settings: Settings,
                  locks: LockManager | None = None) -> tuple[BaseTrigger, TriggerCtx]:
    """Instantiate a trigger with its context."""
    ctx = TriggerCtx(workflow_id=workflow_id, spec=spec, store=store, recorder=recorder,
                     settings=settings, locks=locks)
    return registry.get(spec.type)(spec, ctx), ctx


class TriggerManager:
    """Runs the triggers of active deployments inside the daemon's task group."""

    def __init__(self, *, registry: Registry, store: Store, recorder: Recorder, settings: Settings,
                 locks: LockManager, timer: Timer) -> None:
        self.registry = registry
        self.store = store
        self.recorder = recorder
        self.settings = settings
        self.locks = locks
        self.timer = timer
        self.running: dict[tuple[str, str], Running] = {}
        self.deployments: dict[str, Deployment] = {}
        self._specs: dict[str, tuple[str, tuple[TriggerSpec, ...]]] = {}
        self._tg: TaskGroup | None = None
        self._lock = anyio.Lock()
        self.revision = -1

    def attach(self, tg: TaskGroup) -> None:
        """Give the manager the task group its watchers run in."""
        self._tg = tg

    # lookups used by the web layer ---------------------------------------------------------
    def ingress_trigger(self, workflow_id: str) -> BaseTrigger:
        """Return the running trigger of a workflow served on the per-workflow ingress."""
        for (wf, _), run in self.running.items():
            if wf == workflow_id and run.trigger.ingress == "workflow":
                return run.trigger
        raise NotFound(f"workflow {workflow_id!r} has no active webhook trigger")

    def shared_triggers(self, name: str) -> list[BaseTrigger]:
        """Return every running trigger of the types served on shared ingress ``name``."""
        return [r.trigger for r in self.running.values() if r.trigger.ingress == name]

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

    def next_fire(self, workflow_id: str, trigger_id: str) -> datetime | None:
        return self.timer.next_fire(workflow_id, trigger_id)

    # reconciliation ------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Bring running triggers in line with the store."""
        async with self._lock:
            revision = await self.store.revision()
            deployments = {d.workflow_id: d for d in await self.store.list_deployments()}
            states = {(s.workflow_id, s.trigger_id): s.cursor
                      for s in await self.store.trigger_states()}
            wanted: dict[tuple[str, str], tuple[Deployment, TriggerSpec]] = {}
            for deployment in deployments.values():
                if deployment.state != "active":
                    continue
                for spec in self._triggers_of(deployment):
                    if spec.enabled:
                        wanted[(deployment.workflow_id, spec.id)] = (deployment, spec)
            for key in [k for k in self.running if k not in wanted]:
                await self._stop(key)
            now = utcnow()
            for key, (deployment, spec) in wanted.items():
                run = self.running.get(key)
                h = trigger_hash(spec)
                if run is not None and run.hash == h:
                    continue
                if run is not None:
                    await self._stop(key)
                await self._start(deployment, spec, h, states.get(key), now)
            self.deployments = deployments
            self.revision = revision
            for state in ("active", "paused"):
                DEPLOYMENTS.labels(state).set(
                    sum(1 for d in deployments.values() if d.state == state))

    def _triggers_of(self, deployment: Deployment) -> tuple[TriggerSpec, ...]:
        cached = self._specs.get(deployment.workflow_id)
        if cached is not None and cached[0] == deployment.spec_hash:
            return cached[1]
        try:
            spec = parse_spec(deployment.document, self.registry,
                              source=f"deployment {deployment.workflow_id}")
        except WfschedError as exc:
            # A spec valid when deployed may fail now (plugin removed): keep the rest running.
            log.error("deployed spec no longer valid", extra={
                "workflow_id": deployment.workflow_id, "error": str(exc)})
            return ()
        self._specs[deployment.workflow_id] = (deployment.spec_hash, spec.triggers)
        return spec.triggers

    async def _start(self, deployment: Deployment, spec: TriggerSpec, h: str, cursor: Any,
                     now: datetime) -> None:
        key = (deployment.workflow_id, spec.id)
        try:
            trigger, ctx = build_trigger(self.registry, deployment.workflow_id, spec,
                                         store=self.store, recorder=self.recorder,
                                         settings=self.settings, locks=self.locks)
            timer = trigger.timer()
        except Exception as exc:  # noqa: BLE001 - one broken trigger must not stop the others
            log.exception("trigger failed to start", extra={
                "workflow_id": deployment.workflow_id, "trigger_id": spec.id})
            await self.store.set_health(deployment.workflow_id, spec.id, "failing", str(exc))
            return
        run = Running(trigger=trigger, ctx=ctx, hash=h)
        self.running[key] = run
        if timer is not None:
            self.timer.add(deployment.workflow_id, spec.id, spec.type, timer,
                           {**spec.payload}, now)
            cursor_key, last = parse_cursor(cursor)
            since = deployment.active_since
            if cursor_key == timer.schedule.key and last is not None and last > since:
                since = last
            elif cursor_key is not None and cursor_key != timer.schedule.key:
                since = now  # a changed schedule never produces a burst of catch-up fires
            await self.timer.catch_up(key, since, now)
        if trigger.has_run and self._tg is not None:
            run.scope = anyio.CancelScope()
            self._tg.start_soon(self._supervise, run, name=f"trigger:{key[0]}/{key[1]}")
        else:
            run.stopped.set()
        ctx.log.info("trigger started")

    async def _supervise(self, run: Running) -> None:
        """Run a watcher; restart it with backoff when it fails, reporting its health."""
        assert run.scope is not None
        delay = 1.0
        with run.scope:
            try:
                while True:
                    started = anyio.current_time()
                    try:
                        await run.trigger.run()
                        return
                    except Exception as exc:  # noqa: BLE001 - reported, then restarted
                        run.ctx.report_health("failing", f"{type(exc).__name__}: {exc}")
                        run.ctx.log.exception("trigger crashed; restarting")
                        await run.ctx.flush_health()
                    if anyio.current_time() - started > 60:
                        delay = 1.0
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 60.0)
            finally:
                run.stopped.set()

    async def _stop(self, key: tuple[str, str]) -> None:
        run = self.running.pop(key, None)
        if run is None:
            return
        self.timer.remove(*key)
        if run.scope is not None:
            run.scope.cancel()
            with anyio.move_on_after(10):
                await run.stopped.wait()
        run.ctx.log.info("trigger stopped")

    async def flush_health(self) -> None:
        """Persist changed trigger health."""
        for run in list(self.running.values()):
            await run.ctx.flush_health()

    async def stop_all(self) -> None:
        for key in list(self.running):
            await self._stop(key)


async def invoke(trigger: BaseTrigger, data: Any, *, user: str, confirmed: bool) -> FireResult:
    """Fire a trigger by hand, enforcing its confirmation rule."""
    if trigger.requires_confirmation and not confirmed:
        raise Conflict("confirmation_required")
    return await trigger.invoke(data, user=user)
