"""What the deployment service shows: the list, one page of it and a workflow's status, with
live state from the manager when inside the daemon; secrets redacted; opaque page cursors.
"""

from __future__ import annotations

import base64
import binascii
import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from wfsched.config import Settings
from wfsched.errors import InvalidInput, WfschedError
from wfsched.heartbeat import LOOK_BACK, summarize
from wfsched.ledger import Downtime
from wfsched.manager import TriggerManager, build_trigger
from wfsched.models import (
    DaemonRun,
    Deployment,
    TriggerEvent,
    TriggerSpec,
    TriggerState,
    iso,
    utcnow,
)
from wfsched.plugins import Registry
from wfsched.recorder import Recorder
from wfsched.secretrefs import is_reference
from wfsched.spec import parse_spec
from wfsched.store import Store
from wfsched.timer.instants import last_instant, next_fire_time, quantize
from wfsched.trigger import BaseTrigger, TimerSpec

SECRET_KEYS = ("secret", "password", "token", "private_key", "api_token", "public_key")


def redact_secrets(value: Any) -> Any:
    """Replace literal secrets in a spec document by ``***`` (references stay visible)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if any(s in str(k).lower() for s in SECRET_KEYS) and not _is_reference(v):
                out[k] = "***" if not isinstance(v, list) else ["***" for _ in v]
            else:
                out[k] = redact_secrets(v)
        return out
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


def _is_reference(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_reference(v) for v in value)
    return is_reference(value)


class DeploymentViews:
    """The read side of :class:`~wfsched.deployments.DeploymentService`; ``manager`` adds live
    state when inside the daemon."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        settings: Settings,
        recorder: Recorder | None = None,
        manager: TriggerManager | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.recorder = recorder or store
        self.manager = manager

    def triggers_of(self, deployment: Deployment) -> tuple[TriggerSpec, ...]:
        """The deployment's triggers as validated now (empty if its spec no longer is)."""
        return self._triggers(deployment)

    def _triggers(self, deployment: Deployment) -> tuple[TriggerSpec, ...]:
        try:
            return parse_spec(deployment.document, self.registry).triggers
        except WfschedError:
            return ()

    def instance(self, workflow_id: str, spec: TriggerSpec) -> BaseTrigger:
        """A throwaway trigger instance working on the store (views and manual fires)."""
        trigger, _ = build_trigger(
            self.registry,
            workflow_id,
            spec,
            store=self.store,
            recorder=self.recorder,
            settings=self.settings,
        )
        return trigger

    def timer_spec(self, workflow_id: str, spec: TriggerSpec) -> TimerSpec | None:
        """The schedule of a time trigger (None: not a time trigger, or it cannot start)."""
        try:
            return self.instance(workflow_id, spec).timer()
        except Exception:  # noqa: BLE001 - a view must not fail on one bad trigger
            return None

    async def daemon(self) -> dict[str, Any]:
        """``{"running", "last_seen", "replicas"}`` from the daemons' heartbeats."""
        now = utcnow()
        return summarize(await self.store.daemon_runs(now - LOOK_BACK), now)

    def _late(
        self,
        deployment: Deployment,
        spec: TriggerSpec,
        last: TriggerEvent | None,
        running_since: datetime,
        now: datetime,
    ) -> datetime | None:
        """The due instant a time trigger is late for, or None.

        Late: an instant due more than ``scheduler.late_after`` ago, after both the
        activation of the deployment and the start of the running daemon, with no event.
        """
        if deployment.state != "active" or not spec.enabled:
            return None
        timer = self.timer_spec(deployment.workflow_id, spec)
        if timer is None:
            return None
        late_after = float(self.settings.get("scheduler.late_after"))
        spread = timedelta(seconds=quantize(timer.spread))
        since = max(deployment.active_since, running_since) - spread
        due = last_instant(timer, since, now - timedelta(seconds=late_after) - spread)
        if due is None:
            return None
        if last is not None and last.scheduled_at is not None and last.scheduled_at >= due:
            return None
        return due

    def _next_fire(self, deployment: Deployment, spec: TriggerSpec) -> datetime | None:
        if deployment.state != "active" or not spec.enabled:
            return None
        if self.manager is not None and self.manager.is_live(deployment.workflow_id, spec.id):
            return self.manager.next_fire(deployment.workflow_id, spec.id)
        try:
            trigger = self.instance(deployment.workflow_id, spec)
            timer = trigger.timer()
        except Exception:  # noqa: BLE001 - a view must not fail on one bad trigger
            return None
        if timer is None:
            return None
        return next_fire_time(timer, utcnow())

    def _view(self, deployment: Deployment) -> dict[str, Any]:
        triggers = []
        for spec in self._triggers(deployment):
            state = "disabled" if not spec.enabled else deployment.state
            triggers.append(
                {
                    "id": spec.id,
                    "type": spec.type,
                    "state": state,
                    "next_fire": iso(self._next_fire(deployment, spec)),
                }
            )
        return {
            "workflow_id": deployment.workflow_id,
            "name": deployment.name,
            "state": deployment.state,
            "revision": deployment.revision,
            "updated_at": iso(deployment.updated_at),
            "triggers": triggers,
        }

    async def list(self) -> list[dict[str, Any]]:
        """The ``list --json`` shape."""
        return [self._view(d) for d in await self.store.list_deployments()]

    async def page(
        self,
        *,
        limit: int | None,
        cursor: str | None = None,
        state: str | None = None,
        q: str | None = None,
    ) -> dict[str, Any]:
        """One page of the list shape, by workflow id: ``{"items", "next_cursor"}``.

        ``state``: active or paused; ``q``: a case-insensitive substring of the id or name.
        ``cursor`` is the ``next_cursor`` of the page before (opaque: the last id it showed).
        """
        after = decode_cursor(cursor)
        needle = (q or "").casefold()
        rows = [
            d
            for d in await self.store.list_deployments()
            if (after is None or d.workflow_id > after)
            and (state is None or d.state == state)
            and (needle in d.workflow_id.casefold() or needle in d.name.casefold())
        ]
        if limit is None:
            return {"items": [self._view(d) for d in rows], "next_cursor": None}
        more = len(rows) > limit
        return {
            "items": [self._view(d) for d in rows[:limit]],
            "next_cursor": encode_cursor(rows[limit - 1].workflow_id) if more else None,
        }

    def reading(self) -> DeploymentViews:
        """These views reading through the store's reader (``Store.reader``), which does not
        wait behind the store's writes: for pages, never for changes."""
        return DeploymentViews(
            store=self.store.reader(),
            registry=self.registry,
            settings=self.settings,
            recorder=self.recorder,
            manager=self.manager,
        )

    async def status(self, workflow_id: str) -> dict[str, Any]:
        """The ``status ID --json`` shape: the list shape plus health and last events."""
        deployment = await self.store.get_deployment(workflow_id)  # NotFound names it
        [view] = await self._statuses([deployment])
        return view

    async def statuses(self, workflow_ids: Sequence[str]) -> builtins.list[dict[str, Any] | None]:
        """``status`` of each workflow (None for one not deployed), in the order given."""
        found = {d.workflow_id: d for d in await self.store.get_deployments(workflow_ids)}
        views = iter(await self._statuses([found[w] for w in workflow_ids if w in found]))
        return [next(views) if w in found else None for w in workflow_ids]

    async def _statuses(self, deployments: Sequence[Deployment]) -> builtins.list[dict[str, Any]]:
        """The status of each deployment, from four reads of the store whatever their number
        (five with no daemon running: the pending events too)."""
        ids = [d.workflow_id for d in deployments]
        states: dict[str, list[TriggerState]] = {}
        for state in await self.store.trigger_states_of(ids):
            states.setdefault(state.workflow_id, []).append(state)
        last = await self.store.last_events_of(ids)
        now = utcnow()
        runs = await self.store.daemon_runs(now - LOOK_BACK)
        pending = None
        if not summarize(runs, now)["running"]:
            pending = await self.store.pending_events_of(ids)
        return [
            self._status(
                d,
                states.get(d.workflow_id, []),
                last.get(d.workflow_id, {}),
                runs,
                now,
                None if pending is None else pending.get(d.workflow_id, (0, None)),
            )
            for d in deployments
        ]

    def _status(
        self,
        deployment: Deployment,
        trigger_states: Sequence[TriggerState],
        last: Mapping[str, TriggerEvent],
        runs: Sequence[DaemonRun],
        now: datetime,
        pending: tuple[int, datetime | None] | None,
    ) -> dict[str, Any]:
        """One workflow's status; ``pending`` (its waiting events) is read only while no
        daemon runs, and shown then."""
        workflow_id = deployment.workflow_id
        view = self._view(deployment)
        states = {s.trigger_id: s for s in trigger_states}
        specs = {s.id: s for s in self._triggers(deployment)}
        daemon = summarize(runs, now)
        view["daemon"] = daemon
        running_since = _running_since(Downtime(runs, now), now)
        if pending is not None:
            # Nothing dispatches without a daemon: say what waits, and since when.
            count, oldest = pending
            view["pending"] = {"count": count, "since": iso(oldest)}
        for trigger in view["triggers"]:
            tid = trigger["id"]
            state = states.get(tid)
            health: str = state.health if state else "healthy"
            error = state.last_error if state else None
            if self.manager is not None:
                live = self.manager.health(workflow_id, tid)
                if live is not None:
                    health, error = live
            event = last.get(tid)
            if not daemon["running"]:
                # Only a running daemon knows how a trigger is doing.
                health = "unknown"
            elif health == "healthy" and running_since is not None and tid in specs:
                due = self._late(deployment, specs[tid], event, running_since, now)
                if due is not None:
                    health = "late"
                    error = error or f"due at {iso(due)}, no event recorded yet"
            trigger["health"] = health
            trigger["last_error"] = error or (event.last_error if event else None)
            trigger["last_event"] = _event_summary(event)
            trigger["config"] = redact_secrets(dict(specs[tid].config)) if tid in specs else {}
            trigger["details"] = self._describe(deployment, specs.get(tid))
        return view

    def _describe(self, deployment: Deployment, spec: TriggerSpec | None) -> dict[str, Any]:
        if spec is None:
            return {}
        if self.manager is not None and (deployment.workflow_id, spec.id) in self.manager.running:
            return self.manager.describe(deployment.workflow_id, spec.id)
        try:
            trigger = self.instance(deployment.workflow_id, spec)
            return trigger.describe()
        except Exception:  # noqa: BLE001
            return {}


def _running_since(downtime: Downtime, now: datetime) -> datetime | None:
    """Since when daemons have run without a gap, up to now (None: none runs)."""
    if not downtime.spans or not downtime.running_at(now):
        return None
    return downtime.spans[-1][0]


def encode_cursor(key: str) -> str:
    """An opaque page cursor for ``key`` (URL-safe, no padding)."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The key behind a cursor of :func:`encode_cursor`; InvalidInput for anything else."""
    if cursor is None:
        return None
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key = ""
    if not key or not key.isprintable():
        raise InvalidInput(f"cursor {cursor!r} is not one this server gave out")
    return key


def _event_summary(event: TriggerEvent | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {
        "execution_id": event.execution_id,
        "fired_at": iso(event.fired_at),
        "scheduled_at": iso(event.scheduled_at),
        "status": event.status,
        "attempts": event.attempts,
    }
