"""TriggerManager: runs deployed triggers and keeps them equal to the store (reconciliation).

The store is the source of truth. ``reconcile`` compares deployed specs with running triggers
and starts, stops or restarts the difference, by each trigger's own hash, so editing one
trigger leaves the others of the workflow running.

Time triggers become members of the shared timer (re-armed from their arm records on a cold
start, without parsing), watchers and shared-ingress triggers instances, and on-demand
triggers (webhook, manual) an entry of a few hundred bytes until first used. A cold pass reads
the documents it needs a page at a time. What requests ask is in :mod:`.lookups`.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from typing import Any

import anyio
from anyio.abc import TaskGroup

from wfsched.manager.instances import Running, on_demand, retire, supervise, trigger_hash
from wfsched.manager.lookups import NOTHING, Lookups
from wfsched.metrics import DEPLOYMENTS
from wfsched.models import Deployment, TriggerSpec
from wfsched.secretrefs import unresolved_secret
from wfsched.timer.cursors import CURSOR_FIELDS, restore
from wfsched.timer.rearm import PAGE, Head, scan

log = logging.getLogger("wfsched.triggers")
BULK = 10_000
"""Timers armed plus instances started by a cold pass from which the GC freezes them (see
``_pass``)."""
STOP_LOCK_WAIT = 10.0
"""Seconds ``stop_all`` waits for a reconcile pass under way (one hung on the store)."""


class TriggerManager(Lookups):
    """Runs the triggers of active deployments inside the daemon's task group."""

    def attach(self, tg: TaskGroup) -> None:
        """Give the manager the task group its watchers run in."""
        self._tg = tg

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
            cold = self._cold = not self._deployed
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
                    # (Measured: 10k github triggers' deliveries cost about 30 % less CPU.)
                    if armed + len(self.running) >= BULK:
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
                before = NOTHING
                if not cold:  # a cold pass starts from nothing: every head is new
                    seen.add(head.workflow_id)
                    before = self._deployed.get(head.workflow_id, NOTHING)
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
        if cold and self._idle:
            log.info(f"{len(self._idle)} triggers ready on demand", extra={"status": "started"})
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
            previous = self._deployed.get(head.workflow_id, NOTHING)[2]
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
        self._idle.pop(key, None)  # (its type changed)
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
            self._tg.start_soon(supervise, run, name=f"trigger:{key[0]}/{key[1]}")
        ctx.log.info("trigger started")
        if old is not None:
            await retire(old)
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
            await retire(old)
        problem = unresolved_secret(spec.config, self.registry.get(spec.type).secret_fields)
        if problem is not None:
            # A secret that will never resolve is said at once, not by a sender's first 503:
            # the trigger is built now and reports failing (its requests get 503 until fixed).
            run = await self._build_idle(key, spec)
            if run is not None:
                run.ctx.report_health("failing", problem)
        elif health not in ("healthy", ""):
            # What an earlier instance reported; this one has said nothing yet.
            await self.store.set_health(key[0], spec.id, "healthy", None)
        if not self._cold:
            fields = {"workflow_id": key[0], "trigger_id": key[1], "trigger_type": spec.type}
            log.info("trigger started", extra=fields)
        return "running"

    async def _stop(self, key: tuple[str, str]) -> None:
        self.timer.remove(*key)
        self._idle.pop(key, None)
        run = self.running.pop(key, None)
        if run is not None:
            self._routing.discard(key, run.trigger)
            await retire(run)

    async def _stop_workflow(self, workflow_id: str) -> None:
        previous = self._deployed.get(workflow_id, NOTHING)
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
