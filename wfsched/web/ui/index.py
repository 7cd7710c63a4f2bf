"""What the dashboard keeps for fire density: each time trigger's expression as written, the
tallies of the timer's groups made from them, and the schedules' walked instants.

Fire density counts what the daemon's timer holds (active, enabled, armed triggers) by the
timer's own groups, which ``add`` and ``remove`` keep in step: a change of deployments costs
nothing there. Only the peaks name expressions as written (the ``H`` rewrites are made from
them), and those live in the documents. They are read by the database
(``Store.scan_trigger_field``), a page of deployments at a time, so neither the event loop nor
the store's connection is held for long; later refreshes read only the deployments changed
since (by store revision). A group's tally is recounted only when a member joined or left it
or the expression of one of its members changed; a schedule is walked once and extended as
time passes. The daemon does the first read and count as it starts (:func:`prepare`).
"""

from __future__ import annotations

import gc
import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from wfsched.density import Density, Tally, TimeTrigger, Walks, density_of, tally_of
from wfsched.schedules.series import CronSeries, EverySeries
from wfsched.spec import default_trigger_id
from wfsched.store import Store
from wfsched.timer.members import Group
from wfsched.trigger import TimerSpec
from wfsched.web.services import services_of

log = logging.getLogger("wfsched.web")
SCAN_PAGE = 500
"""Deployments per read of ``scan_trigger_field`` (a few milliseconds of the store's time)."""
PAUSE = 0.01
"""Seconds between two such reads at start-up (a request's queries go first)."""
LOG = 256
"""Refreshes remembered for checking the tallies kept (older ones: recounted)."""


class Expressions:
    """The ``cron`` of each trigger as written, by workflow id and trigger id; the tallies of
    the timer's groups made from them, and the schedules' walked instants."""

    def __init__(self) -> None:
        self.written: dict[str, dict[str, str]] = {}
        """Every deployment read (those without a cron trigger too) → trigger id → cron."""
        self.revision: int | None = None
        self.walks = Walks()
        """The schedules' instants, walked once for every density page."""
        self._tallies: dict[Any, _Kept] = {}
        self._seq = 0
        """Counts refreshes that changed something."""
        self._log: deque[tuple[int, set[tuple[str, str]]]] = deque(maxlen=LOG)
        """Per such refresh, the triggers whose expression may have changed."""
        self._lock = anyio.Lock()

    async def refresh(self, store: Store, *, pause: float = 0.0) -> None:
        """Read what changed since the last refresh (everything, the first time); ``pause``
        seconds between two pages leave the store to others meanwhile."""
        async with self._lock:
            revision = await store.revision()
            if revision == self.revision:
                return
            since = self.revision
            if since is None or since > revision:  # first read, or a store replaced
                since, self.written = None, {}
                self._tallies.clear()
            changed: set[tuple[str, str]] = set()
            after = ""
            while True:
                rows = await store.scan_trigger_field("cron", after, SCAN_PAGE, changed_since=since)
                read = 0
                for workflow_id, crons in _by_workflow(rows):
                    if since is not None:
                        changed.update(_keys(workflow_id, self.written.get(workflow_id), crons))
                    self.written[workflow_id] = crons
                    read += 1
                if read < SCAN_PAGE:
                    break
                after = rows[-1][0]
                await anyio.sleep(pause)
            if since is not None:
                await self._drop_undeployed(store, changed)
            self._seq += 1
            self._log.append((self._seq, changed))
            # Read before the changes: a change landing meanwhile is re-read next time.
            self.revision = revision

    async def _drop_undeployed(self, store: Store, changed: set[tuple[str, str]]) -> None:
        # Every deployment is in ``written``: more entries than deployments means some left.
        _, total = await store.find_deployments("", offset=0, limit=0)
        if len(self.written) > total:
            present = await store.deployment_ids()
            for gone in [k for k in self.written if k not in present]:
                changed.update(_keys(gone, self.written.pop(gone), None))

    def tally(self, group: Group) -> Tally:
        """The expressions of a timer group's members, as written; recounted only when a
        member joined or left the group or the expression of one of them changed."""
        kept = self._tallies.get(group.key)
        if (
            kept is not None
            and kept.group is group
            and kept.edits == group.edits
            and self._unchanged(group, kept.seq)
        ):
            kept.seq = self._seq
            return kept.tally
        spec = group.spec
        fallback = _resolved(spec.schedule)
        written = self.written
        tally = tally_of(
            TimeTrigger(w, t, written.get(w, {}).get(t) or fallback, spec) for w, t in group.members
        )
        self._tallies[group.key] = _Kept(group, group.edits, self._seq, tally)
        return tally

    def _unchanged(self, group: Group, seq: int) -> bool:
        """True when no refresh after ``seq`` changed the expression of a member."""
        if seq == self._seq:
            return True
        if not self._log or self._log[0][0] > seq + 1:
            return False  # the log no longer reaches back that far
        members = group.members
        return not any(key in members for s, keys in self._log if s > seq for key in keys)

    def forget(self, keys: set[Any]) -> None:
        """Drop the tallies and walks of groups no longer armed (once they pile up)."""
        if len(self._tallies) <= 2 * len(keys) + 64:
            return
        for key in [k for k in self._tallies if k not in keys]:
            del self._tallies[key]
        self.walks.keep(k[0] for k in keys)


@dataclass(slots=True)
class _Kept:
    """A group's tally, made when the group had ``edits`` and valid through refresh ``seq``."""

    group: Group
    edits: int
    seq: int
    tally: Tally


def _keys(
    workflow_id: str, before: dict[str, str] | None, after: dict[str, str] | None
) -> set[tuple[str, str]]:
    """The triggers of a workflow whose expression is not the same before and after."""
    before, after = before or {}, after or {}
    return {(workflow_id, t) for t in before.keys() | after.keys() if before.get(t) != after.get(t)}


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

    def tally(self) -> Tally:
        return self.expressions.tally(self.group)


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
    """Read the fleet's expressions and count each group once, so the first density page
    finds the schedules walked and the tallies made. The daemon starts this once its timers
    are armed, beside serving: it reads small pages and counts a group at a time, letting
    requests through in between. A failure is logged; the page reads again."""
    expressions = expressions_of(app)
    try:
        await expressions.refresh(services_of(app).store, pause=PAUSE)
        for group in services_of(app).manager.timer.groups():
            density_of([ArmedGroup(group, expressions)], now=now(), walks=expressions.walks)
            await anyio.lowlevel.checkpoint()
    except Exception as exc:  # noqa: BLE001 - the page reads again and reports its own error
        log.warning("the dashboard could not read the fleet", extra={"error": str(exc)})
        return
    # What was just read lives as long as the daemon: keep it out of the cyclic collector's
    # full passes, as the cold reconcile does for the armed timers.
    gc.freeze()


def now() -> datetime:
    return datetime.now(UTC)


def density_now(app: Any, now: datetime) -> Density:
    """Fire density of the timer's groups now (refresh the expressions first)."""
    expressions = expressions_of(app)
    groups = services_of(app).manager.timer.groups()
    expressions.forget({g.key for g in groups})
    return density_of(
        [ArmedGroup(g, expressions) for g in groups], now=now, walks=expressions.walks
    )
