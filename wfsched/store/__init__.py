"""The Store protocol: deployments, per-trigger state and trigger events, and the
ChangeFeed through which a store says that they changed.

Backends: ``wfsched.store.sqlite`` (embedded default) and ``wfsched.store.postgres``
(replicas); only ``wfsched.backends`` chooses one. Every capability the core uses is
declared here and implemented by both, so nothing probes a store for optional methods.
Exactly-once recording lives here: ``(workflow_id, dedupe_key)`` is unique.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from wfsched.models import (
    Claim,
    DaemonRun,
    Deployment,
    DeploymentState,
    DispatchOutcome,
    EventStatus,
    Health,
    NewEvent,
    Occurrence,
    TriggerEvent,
    TriggerState,
    WorkflowSpec,
)

DeployAction = str  # "created" | "updated" | "unchanged"
Sync = Literal["full", "normal"]
"""``store.sync``. ``full``: a commit is on stable storage before it returns (SQLite
``synchronous=FULL``: one fsync of the WAL per commit; PostgreSQL: ``synchronous_commit``
raised from ``off``). ``normal``: the backend's faster default, which a power loss (not a
crash of wfsched) may roll back to before the last acknowledged events."""

Change = Literal["deployments", "events"]
"""What a ChangeFeed reports: a deployment changed (the store's revision moved), or events
were recorded or became due (the dispatcher should claim)."""

DeployedRow = tuple[Any, ...]
"""A row of ``Store.scan_deployed``: ``(workflow_id, spec_hash, state, active_since,
trigger_id, type, health, *cursor_fields)``; see there. A plain tuple, as a start-up scan
reads one per trigger of every deployment."""


class ChangeFeed(Protocol):
    """Tells the daemon when deployments or events may have changed, by whatever connection
    or process: the daemon then reconciles its triggers (``deployments``, once it has seen
    the store's revision move) or wakes its dispatcher (``events``).

    A feed may report a change that did not happen (the daemon checks), never miss one for
    long: a pushed feed can lose notifications while it reconnects, so the daemon also
    compares revisions every few seconds next to it; a polling feed needs no such net.
    """

    pushed: bool
    """True when changes are pushed as they commit (PostgreSQL LISTEN/NOTIFY), False when
    the feed looks for them itself between two ``pace()`` (the SQLite file poll)."""

    def watch(self, pace: Callable[[], Awaitable[None]]) -> AsyncIterator[Change]:
        """Yield a Change each time one may have happened, until cancelled.

        It starts (and restarts, when called again) by yielding every kind once, since
        anything may have changed before. A polling feed awaits ``pace()`` before each look,
        so its wake-ups fall on the caller's beat; a pushed feed never calls it. Raises
        StoreError when the feed breaks (a lost connection): call ``watch`` again to resume.
        """


@dataclass(frozen=True, slots=True)
class Retention:
    """Which events may be deleted: dispatched ones fired before ``dispatched_before``,
    failed ones fired before ``failed_before`` (None: kept forever); pending ones never.

    An event fired exactly at a cutoff is kept: only an age strictly greater than the
    retention deletes it. ``exact`` False (the daemon's periodic pruning) lets a store that
    drops whole time partitions keep a row until its whole partition has expired, instead
    of deleting rows one by one; True (``wfsched prune``) deletes every row past its cutoff.
    """

    dispatched_before: datetime | None
    failed_before: datetime | None
    exact: bool = True

    @classmethod
    def at(
        cls, now: datetime, dispatched: float, failed: float, *, exact: bool = True
    ) -> Retention:
        """The cutoffs ``now`` for retentions in seconds (0: keep that status forever)."""
        return cls(
            now - timedelta(seconds=dispatched) if dispatched > 0 else None,
            now - timedelta(seconds=failed) if failed > 0 else None,
            exact,
        )

    @property
    def enabled(self) -> bool:
        return self.dispatched_before is not None or self.failed_before is not None


@dataclass(frozen=True, slots=True)
class Pruned:
    """One bounded step of pruning: events deleted, and whether work is left."""

    deleted: int
    more: bool


class Store(Protocol):
    """What the core needs from persistent state. Every method raises StoreError when the
    backend is unreachable, NotFound for unknown ids."""

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise StoreError unless the backend answers."""

    async def check_writable(self) -> None:
        """Raise StoreError naming the store and why unless it can commit a write now.

        Cheap and bounded (``/health`` calls it): no scan of the data."""

    def lock_exclusive(self) -> None:
        """Claim the store for this daemon (before ``open``); raise StoreError naming the
        store when another daemon holds it. A no-op where several daemons may share the
        store (PostgreSQL: replicas coordinate through the store and the locks backend)."""

    def changes(self) -> ChangeFeed:
        """The feed that reports changes made through any connection to this store."""

    @property
    def single_daemon(self) -> bool:
        """True when one daemon alone dispatches this store's events (SQLite: the file lock):
        its dispatcher may keep a burst's backlog leased in memory, as no replica shares it."""

    # deployments -------------------------------------------------------------------------
    async def apply(self, specs: Sequence[WorkflowSpec]) -> list[DeployAction]:
        """Create or update every spec in one transaction; return an action per spec."""

    async def undeploy(self, workflow_ids: Sequence[str]) -> None:
        """Remove deployments (all or nothing); their events stay in history."""

    async def set_state(self, workflow_ids: Sequence[str], state: DeploymentState) -> None:
        """Pause or resume deployments (all or nothing)."""

    async def get_deployment(self, workflow_id: str) -> Deployment:
        """Return one deployment."""

    async def list_deployments(self) -> list[Deployment]:
        """Return every deployment, sorted by id."""

    async def get_deployments(self, workflow_ids: Sequence[str]) -> list[Deployment]:
        """Return the deployments of ``workflow_ids`` that exist, sorted by id (one page of
        documents: a reader of many holds only a page of them at a time)."""

    async def revision(self) -> int:
        """Return a number that grows with every deployment change."""

    async def deployment_ids(self) -> set[str]:
        """Return the id of every deployment (cheap: no documents, no trigger state)."""

    async def scan_deployed(
        self,
        after: str,
        limit: int,
        *,
        cursor_fields: Sequence[str] = (),
        changed_since: int | None = None,
    ) -> list[DeployedRow]:
        """Return the deployments after id ``after`` (at most ``limit``), without documents;
        with ``changed_since``, only those changed at a later store revision.

        One row per trigger, ``(workflow_id, spec_hash, state, active_since, trigger_id,
        type, health, *cursor_fields)``, ordered by workflow and trigger id; the trigger
        columns are None for a deployment without triggers. ``active_since`` is a datetime
        or the ISO 8601 text the store keeps it as. Each cursor field is that top-level
        member of the trigger's JSON cursor (None if absent or the cursor is not an object),
        extracted without decoding the rest (names must be identifiers: others are left out).
        """

    async def find_deployments(
        self, needle: str, *, offset: int, limit: int
    ) -> tuple[list[str], int]:
        """The ids of the deployments whose id or name contains ``needle`` (case-insensitive;
        empty: every deployment), sorted, from ``offset`` on (at most ``limit``), and how
        many match in all. Reads no document."""

    def reader(self) -> Store:
        """This store for reads that must not wait behind its writes (the dashboard's pages
        during a burst of fires): SQLite, a read-only connection whose calls run in worker
        threads behind a one-slot limiter of its own, not the writer's (WAL lets it read
        beside the writer); PostgreSQL, a small pool of its own, apart from
        the one the group commit and the dispatcher draw from. The same object on every
        call, opened and closed with this store (itself while this store is not open, or
        where a second connection cannot see the data: an in-memory SQLite). Only reads go
        through it (SQLite's reader refuses writes)."""

    async def last_events_of(
        self, workflow_ids: Sequence[str]
    ) -> dict[str, dict[str, TriggerEvent]]:
        """``last_events`` of several workflows in one read: workflow id → trigger id → its
        newest event (a workflow without events is left out)."""

    async def trigger_states_of(self, workflow_ids: Sequence[str]) -> list[TriggerState]:
        """``trigger_states`` of several workflows in one read, by workflow and trigger id."""

    async def scan_trigger_field(
        self, name: str, after: str, limit: int, *, changed_since: int | None = None
    ) -> list[tuple[Any, ...]]:
        """The trigger tables of the deployments after id ``after`` (at most ``limit``
        deployments, by id; with ``changed_since``, only those changed at a later revision),
        read by the database without decoding documents in Python.

        One row per table of the document's ``triggers``, in document order: ``(workflow_id,
        id, type, value)``, where ``value`` is the table's top-level member ``name`` (a name
        that is not an identifier reads None), each None where absent. A deployment without
        triggers gives one row ``(workflow_id, None, None, None)``.
        """

    # trigger state -----------------------------------------------------------------------
    async def trigger_states(self, workflow_id: str | None = None) -> list[TriggerState]:
        """Return the state rows of deployed triggers."""

    async def get_cursor(self, workflow_id: str, trigger_id: str) -> Any:
        """Return a trigger's JSON cursor, or None."""

    async def set_cursor(
        self, workflow_id: str, trigger_id: str, value: Any, *, fence: int | None = None
    ) -> None:
        """Store a cursor; with ``fence``, raise StoreError if a newer fence already wrote."""

    async def set_cursors(self, cursors: Sequence[tuple[str, str, Any]]) -> None:
        """Store several cursors in one transaction (no fencing)."""

    async def set_health(
        self, workflow_id: str, trigger_id: str, health: Health, error: str | None
    ) -> None:
        """Record a trigger's health and last error."""

    # events ------------------------------------------------------------------------------
    async def record(
        self, events: Sequence[NewEvent], claim: Claim | None = None
    ) -> list[tuple[TriggerEvent, bool]]:
        """Insert events in one transaction; for a dedupe key already recorded return the
        existing event with ``False``. With ``claim``, the created events among the first
        ``claim.limit`` are recorded leased to ``claim.owner``, as ``claim`` would lease them."""

    async def claim(self, owner: str, limit: int, ttl: float, now: datetime) -> list[TriggerEvent]:
        """Lease up to ``limit`` due pending events to ``owner`` for ``ttl`` seconds; two
        owners never hold the same event."""

    async def renew(
        self, owner: str, execution_ids: Sequence[str], held_until: datetime, until: datetime
    ) -> set[str]:
        """Extend to ``until`` the leases ``owner`` holds until exactly ``held_until`` on these
        pending events; return the ids renewed (an event claimed again since, by anyone, or
        settled is left out)."""

    async def release(self, owner: str, execution_ids: Sequence[str]) -> None:
        """Give up the leases ``owner`` holds on these events, unsent (claimable at once);
        an event leased to anyone else is left alone."""

    async def finish(self, owner: str, outcomes: Sequence[DispatchOutcome]) -> None:
        """Write attempt results (attempts + 1) and release the claims ``owner`` holds."""

    async def next_due(self) -> datetime | None:
        """Return the earliest ``next_attempt_at`` of a pending event."""

    async def history(
        self,
        workflow_id: str | None = None,
        *,
        limit: int = 50,
        status: EventStatus | None = None,
        trigger_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: str | None = None,
    ) -> list[TriggerEvent]:
        """Return events, newest first (by execution id, which sorts by creation).

        ``since`` (included) and ``until`` (excluded) bound ``fired_at``; ``before``: only
        events whose execution id sorts below it (keyset paging: events recorded meanwhile
        sort above every page already read, so pages neither repeat nor skip an event).
        """

    async def get_event(self, execution_id: str) -> TriggerEvent:
        """Return one event."""

    async def requeue(self, execution_ids: Sequence[str], now: datetime) -> list[TriggerEvent]:
        """Make events pending again (same execution id); return them.

        ``attempts`` keeps counting (history shows every attempt ever made) and
        ``last_error`` is cleared: it described the attempts before the requeue.
        """

    async def last_events(self, workflow_id: str) -> dict[str, TriggerEvent]:
        """Return the newest event of each trigger of a workflow."""

    # retention ---------------------------------------------------------------------------
    async def prune(self, retention: Retention, *, limit: int) -> Pruned:
        """Delete at most about ``limit`` events past ``retention`` (and their dedupe keys)
        in one short transaction, or do one bounded step of the backend's own housekeeping
        (PostgreSQL: create time partitions ahead, drop an expired one); the caller loops
        while ``more``. Never deletes a pending event. A crash between steps leaves the
        store consistent: every step is one transaction."""

    async def count_prunable(self, retention: Retention) -> int:
        """How many events ``prune`` would delete with ``retention`` (for ``--dry-run``)."""

    # heartbeats and the occurrence ledger -----------------------------------------------
    async def beat(self, run: DaemonRun) -> None:
        """Write a daemon's heartbeat: its live row (``replica_id``, ``listen``,
        ``started_at``, ``last_seen``) and its run row (``replica_id``, ``started_at``),
        whose ``last_seen`` moves forward in place."""

    async def end_beat(self, run: DaemonRun) -> None:
        """A clean stop: remove the live row and set the run's final ``last_seen``."""

    async def daemon_runs(self, since: datetime) -> list[DaemonRun]:
        """Every run last seen at or after ``since``, by start; ``live`` when its heartbeat
        row is still there (a clean stop removes it; a killed daemon leaves it to age)."""

    async def add_occurrences(self, rows: Sequence[Occurrence]) -> None:
        """Append ledger entries in one transaction."""

    async def occurrences(
        self, workflow_id: str, since: datetime, until: datetime
    ) -> list[Occurrence]:
        """The ledger entries of a workflow with ``since <= at < until``, by ``at``."""

    async def events_between(
        self, workflow_id: str, since: datetime, until: datetime
    ) -> list[TriggerEvent]:
        """The events of a workflow fired, or scheduled, within ``[since, until)``."""

    async def deployment_log(self, workflow_id: str) -> list[tuple[datetime, DeploymentState]]:
        """When the workflow was deployed or resumed (``active``) and paused, oldest first."""

    async def pending_events(self, workflow_id: str) -> tuple[int, datetime | None]:
        """How many events of a workflow wait for dispatch, and the oldest one's ``fired_at``."""

    async def pending_events_of(
        self, workflow_ids: Sequence[str]
    ) -> dict[str, tuple[int, datetime | None]]:
        """``pending_events`` of several workflows in one read (a workflow with none waiting
        is left out)."""

    async def prune_ledger(self, older_than: datetime, keep_per_trigger: int) -> int:
        """Delete ledger entries before ``older_than`` beyond the newest ``keep_per_trigger``
        of their trigger (and any beyond ``100 * keep_per_trigger``, however young), daemon
        runs last seen before it, and deployment history before it except each workflow's
        latest entry; return the ledger entries deleted. The retention loop calls it."""
