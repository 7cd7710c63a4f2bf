"""The dashboard's index of the fleet: every deployment's id, name, state and time-trigger
expressions, kept in step with the store by revision, so a page at fleet size (100k
deployments) searches memory instead of decoding every document on every request.

The store's revision grows with every deployment change. A refresh that sees a new revision
re-reads only the deployments changed since the last one it saw (``Store.scan_deployed`` with
``changed_since``) and drops the undeployed; the first refresh reads them all. Fire density
takes each trigger's schedule from the daemon's own timer (what it will really fire: active,
enabled, armed triggers), and only the expression as written from the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from wfsched.density import Group, TimeTrigger, groups_of
from wfsched.errors import NotFound
from wfsched.models import Deployment
from wfsched.schedules.series import CronSeries, EverySeries
from wfsched.timer.rearm import scan
from wfsched.web.services import WebServices


@dataclass(frozen=True, slots=True)
class Entry:
    """One deployment as the dashboard lists it."""

    workflow_id: str
    name: str
    state: str
    expressions: Mapping[str, str]
    """Trigger id → its ``cron`` as written, for the triggers that have one."""
    trigger_ids: tuple[str, ...]


def _entry(deployment: Deployment) -> Entry:
    raw = deployment.document.get("triggers")
    triggers = [t for t in raw if isinstance(t, Mapping)] if isinstance(raw, list) else []
    ids = tuple(str(t.get("id", "")) for t in triggers)
    expressions = {
        str(t.get("id", "")): " ".join(t["cron"].split())
        for t in triggers
        if isinstance(t.get("cron"), str)
    }
    return Entry(deployment.workflow_id, deployment.name, deployment.state, expressions, ids)


class FleetIndex:
    """Deployments by id, refreshed from the store when its revision moves."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.ordered: list[Entry] = []
        self.revision: int | None = None
        self._lock = anyio.Lock()
        self._groups: tuple[tuple[int | None, int], list[Group]] | None = None

    async def refresh(self, services: WebServices) -> None:
        store = services.store
        async with self._lock:
            revision = await store.revision()
            if revision == self.revision:
                return
            if self.revision is None:
                self.entries = {d.workflow_id: _entry(d) for d in await store.list_deployments()}
            else:
                await self._apply_changes(services, self.revision)
            # Read before the changes: a change landing meanwhile is re-read next time.
            self.revision = revision
            self.ordered = [self.entries[k] for k in sorted(self.entries)]

    async def _apply_changes(self, services: WebServices, since: int) -> None:
        store = services.store
        async for page in scan(store, changed_since=since):
            for head in page:
                try:
                    self.entries[head.workflow_id] = _entry(
                        await store.get_deployment(head.workflow_id)
                    )
                except NotFound:
                    self.entries.pop(head.workflow_id, None)
        present = await store.deployment_ids()
        for gone in [k for k in self.entries if k not in present]:
            del self.entries[gone]

    def search(self, needle: str) -> list[Entry]:
        """Entries whose id or name contains ``needle`` (case-insensitive), by id."""
        if not needle:
            return self.ordered
        needle = needle.lower()
        return [
            e for e in self.ordered if needle in e.workflow_id.lower() or needle in e.name.lower()
        ]

    def groups(self, services: WebServices) -> list[Group]:
        """The fleet's time triggers grouped for fire density, kept while neither the store's
        revision nor the number of armed triggers moves (the timer arms a change after the
        store records it)."""
        key = (self.revision, len(services.manager.timer))
        if self._groups is None or self._groups[0] != key:
            self._groups = (key, groups_of(self.time_triggers(services)))
        return self._groups[1]

    def time_triggers(self, services: WebServices) -> list[TimeTrigger]:
        """Every trigger armed in the daemon's timer, with its expression as written."""
        timer = services.manager.timer
        found = []
        for entry in self.ordered:
            if entry.state != "active":
                continue
            for trigger_id in entry.trigger_ids:
                member = timer.get(entry.workflow_id, trigger_id)
                if member is not None:
                    written = entry.expressions.get(trigger_id) or _resolved(member.spec.schedule)
                    found.append(TimeTrigger(entry.workflow_id, trigger_id, written, member.spec))
        return found


def _resolved(schedule: Any) -> str:
    if isinstance(schedule, CronSeries):
        return schedule.resolved
    if isinstance(schedule, EverySeries):
        return f"every {schedule.seconds:g}s"
    return str(schedule.key)


def index_of(app: Any) -> FleetIndex:
    """The app's index, made on first use."""
    index: FleetIndex | None = getattr(app.state, "ui_index", None)
    if index is None:
        index = app.state.ui_index = FleetIndex()
    return index
