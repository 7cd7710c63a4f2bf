"""TriggerManager: runs deployed triggers and keeps them equal to the store (reconciliation).

The store is the source of truth. ``reconcile`` compares deployed specs with running triggers
and starts, stops or restarts the difference, by each trigger's own hash, so editing one
trigger leaves the others of the workflow running.

Ingress never sees a gap: a restarted trigger's new instance takes its place in ``running``
before the old one stops, and a removed trigger stops only after the workflow's new ones run.
What the running set cannot answer alone (was this workflow just deployed? did a delivery
match nothing because nothing is deployed, or because the change is not applied yet?) is
answered by ``settled`` and ``ingress_after_miss``, which wait briefly for the store's latest
revision to be applied and else raise ``Unavailable`` (503) rather than a wrong 404 or 2xx.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from anyio.abc import TaskGroup

from wfsched.config import Settings
from wfsched.context import TriggerCtx, build_trigger
from wfsched.errors import Conflict, NotFound, Unavailable, WfschedError
from wfsched.locks import LockManager
from wfsched.metrics import DEPLOYMENTS
from wfsched.models import Deployment, Health, TriggerSpec
from wfsched.occurrences import OccurrenceLog
from wfsched.plugins import Registry
from wfsched.recorder import Recorder
from wfsched.routing import Routing, SharedTriggers
from wfsched.spec import canonical_json, parse_spec
from wfsched.store import Store
from wfsched.timer import Timer
from wfsched.timer.cursors import CURSOR_FIELDS, restore
from wfsched.timer.rearm import PAGE, Head, environment, scan
from wfsched.trigger import BaseTrigger, FireResult

log = logging.getLogger("wfsched.triggers")
__all__ = ["Running", "TriggerCtx", "TriggerManager", "build_trigger", "invoke", "trigger_hash"]


def trigger_hash(spec: TriggerSpec) -> bytes:
    """Identity of a trigger's definition: a change restarts that trigger only."""
    text = canonical_json(
        {
            "type": spec.type,
            "enabled": spec.enabled,
            "payload": dict(spec.payload),
            "config": dict(spec.config),
        }
    )
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def on_demand(cls: type[BaseTrigger]) -> bool:
    """True when a trigger of type ``cls`` needs no instance until it is used: no watcher,
    no timer, no shared ingress index (a webhook, a manual trigger). The manager builds one
    from the stored spec on the first request and keeps it while the trigger is unchanged."""
    return not cls.has_run and cls.ingress in (None, "workflow") and cls.timer is BaseTrigger.timer


@dataclass(eq=False, slots=True)
class Running:
    """One running trigger instance (a watcher, a shared ingress, or an on-demand trigger
    built by its first request).

    Pure timer triggers have none: the timer's compact member is all they need; on-demand
    triggers (:func:`on_demand`) have none until a request needs one.
    """

    trigger: BaseTrigger
    ctx: TriggerCtx
    hash: bytes
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event | None = None


_NOTHING: tuple[str, str, tuple[str, ...]] = ("", "", ())
BULK = 10_000
"""Triggers armed in one pass from which the GC freezes them (see ``reconcile``)."""
SETTLE_WAIT = 2.0
"""Seconds a request waits for deployment changes to be applied before it gets 503: long
enough for a reconcile of a few changed deployments, short enough for GitHub's 10 s."""
STOP_LOCK_WAIT = 10.0
"""Seconds ``stop_all`` waits for a reconcile pass under way (one hung on the store)."""


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
        self._envs: dict[str, str | None] = {}
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
        for trigger_id in self._deployed.get(workflow_id, _NOTHING)[2]:
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
        applied = self._deployed.get(workflow_id, _NOTHING)[0]
        if key not in self._idle or applied != deployment.spec_hash:
            return None
        spec = next((t for t in self._triggers_of(deployment) if t.id == trigger_id), None)
        if spec is None or spec.type != self._idle[key]:
            return None
        try:
            trigger, ctx = self._instance(workflow_id, spec)
        except Exception as exc:  # as when a trigger fails to start
            log.exception(
                "trigger failed to start", extra={"workflow_id": workflow_id, "trigger_id": spec.id}
            )
            await self.store.set_health(workflow_id, spec.id, "failing", str(exc))
            return None
        del self._idle[key]
        self.running[key] = Running(trigger=trigger, ctx=ctx, hash=trigger_hash(spec))
        self._routing.put(key, trigger)
        return trigger

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

    # reconciliation ------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Bring running triggers in line with the store.

        Only deployments whose spec hash or state changed since the last pass are touched; on
        a cold start, timer triggers re-arm from their stored arm records without parsing.
        """
        async with self._lock:
            await self._pass()

    async def _pass(self) -> None:
        """One reconciliation, under ``_lock``; wakes the requests waiting in ``settled``."""
        self._asked = False  # this pass reads a revision at least as new as theirs
        self._failed = True
        try:
            if self.stopping:
                return
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
            self._failed = False
        finally:
            self._passed.set()
            self._passed = anyio.Event()

    async def _reconcile(self, cold: bool, revision: int) -> int:
        """One reconciliation pass; return the number of timers armed.

        A cold pass reads every deployment, with the arm records of its triggers. A later one
        reads only those changed since the revision last reconciled, and every id to notice
        removals. ``revision`` is the store's, read before this pass.
        """
        present = None if cold else await self.store.deployment_ids()
        # Only what changed since the last pass; everything after the store's revision went
        # back (a store replaced under the daemon).
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
            if cold:  # the documents of one page at a time: never all of them at once
                armed += await self._start_parsed(slow)
                slow = []
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
        armed = 0
        for first in range(0, len(heads), PAGE):
            armed += await self._start_page(heads[first : first + PAGE])
        return armed

    async def _start_page(self, heads: list[Head]) -> int:
        if not heads:
            return 0
        documents = {
            d.workflow_id: d
            for d in await self.store.get_deployments([h.workflow_id for h in heads])
        }
        armed = 0
        for head in heads:
            deployment = documents.get(head.workflow_id)
            if deployment is None or deployment.spec_hash != head.spec_hash:
                continue  # changed meanwhile: the next reconcile sees the new revision
            # The ids of the scan, shared with every deployment: the document's own copies
            # would be kept per trigger for the daemon's life.
            stored = {t: (t, c, h) for t, _, c, h in head.triggers}
            wanted = {t.id: t for t in self._triggers_of(deployment) if t.enabled}
            previous = self._deployed.get(head.workflow_id, _NOTHING)[2]
            started = []
            for spec in wanted.values():
                trigger_id, cursor, health = stored.get(spec.id, (spec.id, None, ""))
                key = (head.workflow_id, trigger_id)
                outcome = await self._start(key, deployment, spec, cursor, health)
                if outcome:
                    started.append(trigger_id)
                    armed += outcome == "armed"
            # Removed ones stop only now: a renamed trigger always has one of its names running.
            for trigger_id in previous:
                if trigger_id not in wanted:
                    await self._stop((head.workflow_id, trigger_id))
            self._deployed[head.workflow_id] = (head.spec_hash, head.state, tuple(started))
        return armed

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

    async def _start(
        self,
        key: tuple[str, str],
        deployment: Deployment,
        spec: TriggerSpec,
        cursor: Any,
        health: str,
    ) -> str:
        """Start one trigger; return ``"armed"`` (timer only), ``"running"`` or ``""``.

        ``cursor`` and ``health`` are what the store holds for it.
        """
        if on_demand(self.registry.get(spec.type)):
            return await self._start_idle(key, spec, health)
        try:
            trigger, ctx = self._instance(key[0], spec)
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
                *key,
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
        old = self.running.get(key)
        if old is not None and old.hash == h:
            return "running"
        self._idle.pop(key, None)
        run = Running(trigger=trigger, ctx=ctx, hash=h)
        if health not in ("healthy", ""):
            # The store still shows what an earlier instance reported: once this one has
            # said how it is doing (or has said nothing, so is healthy), the next flush
            # writes that, clearing a fixed problem's last_error.
            ctx.health_unsaved()
        # The new instance takes requests from here on, before the old one stops: stopping
        # waits for its task, and a request in between would find no trigger at all.
        self.running[key] = run
        if old is not None and old.trigger.ingress != trigger.ingress:
            self._routing.discard(key, old.trigger)
        self._routing.put(key, trigger)
        if timer is not None:  # (replaces the old member)
            self.timer.add(
                *key,
                spec.type,
                timer,
                payload,
                since=deployment.active_since,
                cursor=cursor,
            )
        else:
            self.timer.remove(*key)
        if trigger.has_run and self._tg is not None:
            run.scope = anyio.CancelScope()
            run.stopped = anyio.Event()
            self._tg.start_soon(self._supervise, run, name=f"trigger:{key[0]}/{key[1]}")
        ctx.log.info("trigger started")
        if old is not None:
            await self._retire(old)
        return "running"

    async def _start_idle(self, key: tuple[str, str], spec: TriggerSpec, health: str) -> str:
        """Start an on-demand trigger: nothing is built until a request needs it."""
        old = self.running.get(key)
        if old is not None and old.hash == trigger_hash(spec):
            return "running"  # built and unchanged: it keeps its state (a rate limit's)
        self.timer.remove(*key)
        # Requests find it from here on: replacing a built instance leaves no gap.
        self._idle[key] = spec.type
        if old is not None:
            del self.running[key]
            self._routing.discard(key, old.trigger)
            await self._retire(old)
        if health not in ("healthy", ""):
            # What an earlier instance reported; this one has said nothing yet.
            await self.store.set_health(key[0], spec.id, "healthy", None)
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
                    except WfschedError as exc:
                        # Something the operator fixes (an unset env: secret, an unreadable
                        # file, a refused login), not a bug: no traceback. The health report
                        # logs one line when the problem changes; retried until it is fixed.
                        run.ctx.report_health("failing", str(exc))
                        await run.ctx.flush_health()
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
        self._idle.pop(key, None)
        run = self.running.pop(key, None)
        if run is not None:
            self._routing.discard(key, run.trigger)
            await self._retire(run)

    async def _retire(self, run: Running) -> None:
        """Stop a trigger instance no longer in ``running``."""
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
        """Stop every trigger; from now on ingress gets 503 and reconciling does nothing."""
        self.stopping = True
        self._passed.set()  # requests waiting in ``settled`` answer 503 now
        # A pass under way finishes first (else it could start triggers after these stopped),
        # unless it hangs on an unreachable store.
        locked = False
        with anyio.move_on_after(STOP_LOCK_WAIT):
            await self._lock.acquire()
            locked = True
        try:
            for workflow_id in list(self._deployed):
                await self._stop_workflow(workflow_id)
            for key in list(self.running):
                await self._stop(key)
        finally:
            if locked:
                self._lock.release()


async def invoke(trigger: BaseTrigger, data: Any, *, user: str, confirmed: bool) -> FireResult:
    """Fire a trigger by hand, enforcing its confirmation rule."""
    if trigger.requires_confirmation and not confirmed:
        raise Conflict("confirmation_required")
    return await trigger.invoke(data, user=user)
