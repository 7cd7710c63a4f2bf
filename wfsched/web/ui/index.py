"""What the dashboard keeps of the fleet for fire density: each time trigger's expression as
written, by deployment, kept in step with the store by revision.

Fire density counts what the daemon's timer holds (active, enabled, armed triggers), reading
the timer's own groups, which ``add`` and ``remove`` keep in step: a change of deployments
costs nothing there. Only the peaks name expressions as written (the ``H`` rewrites are made
from them), and those live in the documents. They are read by the database
(``Store.scan_trigger_field``), a page of deployments at a time, so neither the event loop nor
the store's connection is held for long; the daemon starts that first read as it starts
(:func:`prepare`), and later refreshes read only the deployments changed since.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio

from wfsched.density import TimeTrigger
from wfsched.schedules.series import CronSeries, EverySeries
from wfsched.spec import default_trigger_id
from wfsched.store import Store
from wfsched.timer.members import Group
from wfsched.trigger import TimerSpec
from wfsched.web.services import services_of

log = logging.getLogger("wfsched.web")
SCAN_PAGE = 2000
"""Deployments per read of ``scan_trigger_field``."""


class Expressions:
    """The ``cron`` of each trigger as written, by workflow id and trigger id."""

    def __init__(self) -> None:
        self.written: dict[str, dict[str, str]] = {}
        """Every deployment read (those without a cron trigger too) → trigger id → cron."""
        self.revision: int | None = None
        self._lock = anyio.Lock()

    async def refresh(self, store: Store) -> None:
        """Read what changed since the last refresh (everything, the first time)."""
        async with self._lock:
            revision = await store.revision()
            if revision == self.revision:
                return
            since = self.revision
            if since is None or since > revision:  # first read, or a store replaced
                since, self.written = None, {}
            after = ""
            while True:
                rows = await store.scan_trigger_field("cron", after, SCAN_PAGE, changed_since=since)
                read = 0
                for workflow_id, crons in _by_workflow(rows):
                    self.written[workflow_id] = crons
                    read += 1
                if read < SCAN_PAGE:
                    break
                after = rows[-1][0]
            if since is not None:
                await self._drop_undeployed(store)
            # Read before the changes: a change landing meanwhile is re-read next time.
            self.revision = revision

    async def _drop_undeployed(self, store: Store) -> None:
        # Every deployment is in ``written``: more entries than deployments means some left.
        _, total = await store.find_deployments("", offset=0, limit=0)
        if len(self.written) > total:
            present = await store.deployment_ids()
            for gone in [k for k in self.written if k not in present]:
                del self.written[gone]

    def of(self, workflow_id: str, trigger_id: str) -> str | None:
        return self.written.get(workflow_id, {}).get(trigger_id)


def _by_workflow(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[str, dict[str, str]]]:
    """Rows of ``scan_trigger_field`` as workflow id → {trigger id: cron}; a table without
    an id gets the one the spec parser gives it."""
    for workflow_id, tables in itertools.groupby(rows, key=lambda row: row[0]):
        seen: set[str] = set()
        crons: dict[str, str] = {}
        for _, trigger_id, kind, cron in tables:
            if trigger_id is None and kind is None:
                continue  # no triggers at all (or a table no spec would hold)
            if not isinstance(trigger_id, str):
                trigger_id = default_trigger_id(str(kind), seen)
            seen.add(trigger_id)
            if isinstance(cron, str):
                crons[trigger_id] = " ".join(cron.split())
        yield workflow_id, crons


@dataclass(frozen=True, slots=True)
class ArmedGroup:
    """One of the timer's groups as fire density counts it (a ``density.Grouped``)."""

    group: Group
    expressions: Expressions

    @property
    def timer(self) -> TimerSpec:
        return self.group.spec

    @property
    def spread(self) -> float:
        return self.group.spread

    @property
    def size(self) -> int:
        return len(self.group.members)

    def triggers(self) -> Iterator[TimeTrigger]:
        spec = self.group.spec
        fallback = _resolved(spec.schedule)
        for workflow_id, trigger_id in self.group.members:
            written = self.expressions.of(workflow_id, trigger_id) or fallback
            yield TimeTrigger(workflow_id, trigger_id, written, spec)


def _resolved(schedule: Any) -> str:
    if isinstance(schedule, CronSeries):
        return schedule.resolved
    if isinstance(schedule, EverySeries):
        return f"every {schedule.seconds:g}s"
    return str(schedule.key)


def expressions_of(app: Any) -> Expressions:
    """The app's expressions, made on first use."""
    found: Expressions | None = getattr(app.state, "ui_expressions", None)
    if found is None:
        found = app.state.ui_expressions = Expressions()
    return found


async def prepare(app: Any) -> None:
    """Read the fleet's expressions now, so the first density page finds them (the daemon
    starts this beside its other tasks; a failure is logged and retried by the page)."""
    try:
        await expressions_of(app).refresh(services_of(app).store)
    except Exception as exc:  # noqa: BLE001 - the page reads again and reports its own error
        log.warning("the dashboard could not read the fleet", extra={"error": str(exc)})


def armed_groups(app: Any) -> list[ArmedGroup]:
    """The timer's groups now, with the expressions as written."""
    expressions = expressions_of(app)
    return [ArmedGroup(g, expressions) for g in services_of(app).manager.timer.groups()]
