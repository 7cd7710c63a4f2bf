"""TriggerManager: runs deployed triggers and keeps them equal to the store (reconciliation).

The store is the source of truth. ``reconcile`` compares deployed specs with running triggers
and starts, stops or restarts the difference, by each trigger's own hash, so editing one
trigger leaves the others of the workflow running.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup

from wfsched.bulkload import Head, deployment_ids, environment, scan, timer_only
from wfsched.config import Settings
from wfsched.context import TriggerCtx, build_trigger
from wfsched.errors import Conflict, NotFound, WfschedError
from wfsched.events import Recorder
from wfsched.locks import LockManager
from wfsched.metrics import DEPLOYMENTS
from wfsched.models import Deployment, Health, TriggerSpec
from wfsched.plugins import Registry
from wfsched.spec import canonical_json, parse_spec
from wfsched.store import Store
from wfsched.timers import Timer
from wfsched.timerstate import CURSOR_FIELDS, restore
from wfsched.trigger import BaseTrigger, FireResult

log = logging.getLogger("wfsched.triggers")
__all__ = ["Running", "TriggerCtx", "TriggerManager", "build_trigger", "invoke", "trigger_hash"]


def trigger_hash(spec: TriggerSpec) -> str:
    """Identity of a trigger's definition: a change restarts that trigger only."""
    return canonical_json(
        {
            "type": spec.type,
            "enabled": spec.enabled,
            "payload": dict(spec.payload),
            "config": dict(spec.config),
        }
    )


@dataclass(eq=False)
class Running:
    """One running trigger instance (a watcher, an ingress, or a manual trigger).

    Pure timer triggers have none: the timer's compact member is all they need.
    """

    trigger: BaseTrigger
    ctx: TriggerCtx
    hash: str
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event | None = None


_NOTHING: tuple[str, str, tuple[str, ...]] = ("", "", ())
BULK = 10_000
"""Triggers armed in one pass from which the GC freezes them (see ``reconcile``)."""


class TriggerManager:
    """Runs the triggers of active deployments inside the daemon's task group."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        recorder: Recorder,
        settings: Settings,
        locks: LockManager,
        timer: Timer,
    ) -> None:
        self.registry = registry
        self.store = store
        self.recorder = recorder
        self.settings = settings
        self.locks = locks
        self.timer = timer
        self.running: dict[tuple[str, str], Running] = {}
        # Per workflow: the spec hash and state last reconciled, and the triggers started.
        self._deployed: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self._specs: dict[str, tuple[str, tuple[TriggerSpec, ...]]] = {}
        self._envs: dict[str, str | None] = {}
        self._tg: TaskGroup | None = None
        self._lock = anyio.Lock()
        self.revision = -1
        timer.arm_env = self.environment

    def attach(self, tg: TaskGroup) -> None:
        """Give the manager the task group its watchers run in."""
        self._tg = tg

    def environment(self, kind: str) -> str | None:
        """Digest of what besides the spec shapes a trigger of type ``kind`` (for arm records)."""
        if kind not in self._envs:
            self._envs[kind] = (
                environment(self.settings, self.registry.get(kind))
                if kind in self.registry
                else None
            )
        return self._envs[kind]

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

    def is_live(self, workflow_id: str, trigger_id: str) -> bool:
        """True when the trigger runs here, as an instance or as an armed timer."""
        return (workflow_id, trigger_id) in self.running or (workflow_id, trigger_id) in self.timer

    def next_fire(self, workflow_id: str, trigger_id: str) -> datetime | None:
        return self.timer.next_fire(workflow_id, trigger_id)

    # reconciliation ------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Bring running triggers in line with the store.

        Only deployments whose spec hash or state changed since the last pass are touched; on
        a cold start, timer triggers re-arm from their stored arm records without parsing.
        """
        async with self._lock:
            revision = await self.store.revision()
            cold = not self._deployed
            # Arming many thousand members would run the cyclic GC over them again and again;
            # they live as long as the daemon, so the GC is paused and then told to skip them.
            collecting = gc.isenabled()
            armed = 0
            if cold:
                gc.disable()
            try:
                armed = await self._reconcile(cold, revision)
            finally:
                if cold and collecting:
                    gc.enable()
                    if armed >= BULK:
                        gc.freeze()
            self.revision = revision

    async def _reconcile(self, cold: bool, revision: int) -> int:
        """One reconciliation pass; return the number of timers armed.

        A cold pass reads every deployment, with the arm records of its triggers. A later one
        reads only those changed since the revision last reconciled, and every id to notice
        removals, where the store can list ids; else it reads every deployment again.
        ``revision`` is the store's, read before this pass.
        """
        present = None if cold else await deployment_ids(self.store)
        # Only what changed since the last pass; everything where the store cannot list ids,
        # or after its revision went back (a store replaced under the daemon).
        changed_since = None
        if present is not None and 0 <= self.revision <= revision:
            changed_since = self.revision
        seen: set[str] = set()
        armed = 0
        slow: list[Head] = []
        async for page in scan(
            self.store, cursors=CURSOR_FIELDS if cold else (), changed_since=changed_since
        ):
            for head in page:
                before = _NOTHING
                if not cold:  # a cold pass starts from nothing: every head is new
                    seen.add(head.workflow_id)
                    before = self._deployed.get(head.workflow_id, _NOTHING)
                    if before[0] == head.spec_hash and before[1] == head.state:
                        continue
                if head.state != "active":
                    await self._stop_workflow(head.workflow_id)
                    self._deployed[head.workflow_id] = (head.spec_hash, head.state, ())
                    continue
                if not cold:
                    head.triggers = [
                        (s.trigger_id, s.type, s.cursor, s.health)
                        for s in await self.store.trigger_states(head.workflow_id)
                    ]
                restored = self._restore(head) if not before[2] else 0
                if restored:
                    armed += restored
                else:
                    slow.append(head)
        if not cold:  # a cold pass started from nothing: all it holds it has just seen
            # ``seen``: one deployed after the ids were read may have been armed in this pass.
            known = seen if present is None else present | seen
            for workflow_id in [w for w in self._deployed if w not in known]:
                await self._stop_workflow(workflow_id)
                del self._deployed[workflow_id]
        armed += await self._start_parsed(slow)
        if armed:
            log.info(f"{armed} timers armed", extra={"status": "armed"})
        states = Counter(entry[1] for entry in self._deployed.values())
        for state in ("active", "paused"):
            DEPLOYMENTS.labels(state).set(states[state])
        return armed

    def _restore(self, head: Head) -> int:
        """Arm every trigger of ``head`` from its arm record; 0 (nothing armed) unless all
        of them have a valid one."""
        restored = []
        for trigger_id, kind, cursor, _ in head.triggers:
            found = restore(cursor, head.spec_hash, self.environment)
            if found is None or found[0] != kind:
                return 0
            restored.append((trigger_id, cursor, found))
        for trigger_id, cursor, (kind, payload, spec) in restored:
            self.timer.add(
                head.workflow_id,
                trigger_id,
                kind,
                spec,
                payload,
                since=head.active_since,
                cursor=cursor,
                stamp=head.spec_hash,
            )
        if restored:
            ids = tuple([r[0] for r in restored])
            self._deployed[head.workflow_id] = (head.spec_hash, head.state, ids)
        return len(restored)

    async def _start_parsed(self, heads: list[Head]) -> int:
        """Parse the specs of ``heads`` and start, restart or stop their triggers."""
        if not heads:
            return 0
        documents: dict[str, Deployment] = {
            h.workflow_id: h.deployment for h in heads if h.deployment is not None
        }
        missing = [h.workflow_id for h in heads if h.workflow_id not in documents]
        if len(missing) > 200:
            needed = set(missing)
            documents.update(
                (d.workflow_id, d)
                for d in await self.store.list_deployments()
                if d.workflow_id in needed
            )
        else:
            for workflow_id in missing:
                try:
                    documents[workflow_id] = await self.store.get_deployment(workflow_id)
                except NotFound:
                    continue
        armed = 0
        for head in heads:
            deployment = documents.get(head.workflow_id)
            if deployment is None or deployment.spec_hash != head.spec_hash:
                continue  # changed meanwhile: the next reconcile sees the new revision
            stored = {t: (c, h) for t, _, c, h in head.triggers}
            wanted = {t.id: t for t in self._triggers_of(deployment) if t.enabled}
            previous = self._deployed.get(head.workflow_id, _NOTHING)[2]
            for trigger_id in previous:
                if trigger_id not in wanted:
                    await self._stop((head.workflow_id, trigger_id))
            started = []
            for spec in wanted.values():
                outcome = await self._start(deployment, spec, *stored.get(spec.id, (None, "")))
                if outcome:
                    started.append(spec.id)
                    armed += outcome == "armed"
            self._deployed[head.workflow_id] = (head.spec_hash, head.state, tuple(started))
        return armed

    def _triggers_of(self, deployment: Deployment) -> tuple[TriggerSpec, ...]:
        cached = self._specs.get(deployment.workflow_id)
        if cached is not None and cached[0] == deployment.spec_hash:
            return cached[1]
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
        if any(not timer_only(self.registry, t.type) for t in spec.triggers):
            self._specs[deployment.workflow_id] = (deployment.spec_hash, spec.triggers)
        return spec.triggers

    async def _start(
        self, deployment: Deployment, spec: TriggerSpec, cursor: Any, health: str
    ) -> str:
        """Start one trigger; return ``"armed"`` (timer only), ``"running"`` or ``""``.

        ``cursor`` and ``health`` are what the store holds for it.
        """
        key = (deployment.workflow_id, spec.id)
        try:
            trigger, ctx = build_trigger(
                self.registry,
                deployment.workflow_id,
                spec,
                store=self.store,
                recorder=self.recorder,
                settings=self.settings,
                locks=self.locks,
            )
            timer = trigger.timer()
        except Exception as exc:  # one broken trigger must not stop the others
            log.exception(
                "trigger failed to start",
                extra={"workflow_id": deployment.workflow_id, "trigger_id": spec.id},
            )
            await self._stop(key)
            await self.store.set_health(deployment.workflow_id, spec.id, "failing", str(exc))
            return ""
        payload = dict(spec.payload)
        if timer is not None and not trigger.has_run and trigger.ingress is None:
            # A pure timer trigger needs no instance: the timer's member is all of it.
            if key in self.running:
                await self._stop(key)
            member = self.timer.get(*key)
            if (
                member is not None
                and member.trigger_type == spec.type
                and member.spec == timer
                and dict(member.payload) == payload
            ):
                self.timer.restamp(*key, deployment.spec_hash)
                return "armed"
            self.timer.add(
                deployment.workflow_id,
                spec.id,
                spec.type,
                timer,
                payload,
                since=deployment.active_since,
                cursor=cursor,
                stamp=deployment.spec_hash,
                fresh_arm=True,
            )
            ctx.log.debug("timer armed")
            if health not in ("healthy", ""):
                await self.store.set_health(deployment.workflow_id, spec.id, "healthy", None)
            return "armed"
        h = trigger_hash(spec)
        run = self.running.get(key)
        if run is not None and run.hash == h:
            return "running"
        await self._stop(key)
        run = Running(trigger=trigger, ctx=ctx, hash=h)
        self.running[key] = run
        if timer is not None:
            self.timer.add(
                deployment.workflow_id,
                spec.id,
                spec.type,
                timer,
                payload,
                since=deployment.active_since,
                cursor=cursor,
            )
        if trigger.has_run and self._tg is not None:
            run.scope = anyio.CancelScope()
            run.stopped = anyio.Event()
            self._tg.start_soon(self._supervise, run, name=f"trigger:{key[0]}/{key[1]}")
        ctx.log.info("trigger started")
        return "running"

    async def _supervise(self, run: Running) -> None:
        """Run a watcher; restart it with backoff when it fails, reporting its health."""
        assert run.scope is not None and run.stopped is not None
        delay = 1.0
        with run.scope:
            try:
                while True:
                    started = anyio.current_time()
                    try:
                        await run.trigger.run()
                        return
                    except Exception as exc:  # reported, then restarted
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
        self.timer.remove(*key)
        run = self.running.pop(key, None)
        if run is None:
            return
        if run.scope is not None:
            run.scope.cancel()
            if run.stopped is not None:
                with anyio.move_on_after(10):
                    await run.stopped.wait()
        run.ctx.log.info("trigger stopped")

    async def _stop_workflow(self, workflow_id: str) -> None:
        previous = self._deployed.get(workflow_id, _NOTHING)
        for trigger_id in previous[2]:
            await self._stop((workflow_id, trigger_id))
        if previous[2]:
            self._deployed[workflow_id] = (*previous[:2], ())

    async def flush_health(self) -> None:
        """Persist changed trigger health."""
        for run in list(self.running.values()):
            await run.ctx.flush_health()

    async def stop_all(self) -> None:
        for workflow_id in list(self._deployed):
            await self._stop_workflow(workflow_id)
        for key in list(self.running):
            await self._stop(key)


async def invoke(trigger: BaseTrigger, data: Any, *, user: str, confirmed: bool) -> FireResult:
    """Fire a trigger by hand, enforcing its confirmation rule."""
    if trigger.requires_confirmation and not confirmed:
        raise Conflict("confirmation_required")
    return await trigger.invoke(data, user=user)
