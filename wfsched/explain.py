"""``wfsched explain`` and its route: why each occurrence of a workflow's triggers did or did
not fire, in a window.

The answer gathers, for the window: every event (``fired``, at its ``scheduled_at`` for a
time trigger, else its ``fired_at``), every ledger entry written for a delivery that made no
event (``refused``, ``filtered``, ``deduplicated``), and for each time trigger every due
instant without an event, explained by ``wfsched.ledger`` (``skipped``, ``missed``,
``paused``, ``pending``). Sorted by ``at``; the same JSON on the CLI and the HTTP route.

Time triggers are explained with their current schedule: after a redeploy that changed it,
earlier instants of the old schedule appear only where they fired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from wfsched.deployments.views import DeploymentViews
from wfsched.errors import NotFound, SpecError
from wfsched.heartbeat import LOOK_BACK, summarize
from wfsched.ledger import Activity, Downtime, Explainer, TimeTrigger, clock
from wfsched.models import Occurrence, TriggerEvent, iso, utcnow

AROUND = timedelta(seconds=60)
"""``--at T`` asks about ``[T - AROUND, T + AROUND)``."""
DEFAULT_WINDOW = timedelta(hours=1)
"""Without ``--at``/``--since``: the last hour."""
MAX_WINDOW = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime


def parse_instant(text: str, name: str) -> datetime:
    """An ISO 8601 instant (``Z`` or an offset; none: UTC); SpecError naming ``name``."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SpecError(
            f"{text!r} is not an ISO 8601 instant (e.g. 2026-01-31T10:05:00Z)", field=name
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def window(
    *,
    at: str | None = None,
    since: str | None = None,
    until: str | None = None,
    now: datetime | None = None,
) -> Window:
    """The window a question asks about; SpecError naming the parameter at fault."""
    now = now or utcnow()
    if at is not None and (since is not None or until is not None):
        raise SpecError("use at, or since (and until), not both", field="at")
    if at is not None:
        t = parse_instant(at, "at")
        return Window(t - AROUND, t + AROUND)
    end = parse_instant(until, "until") if until is not None else now
    start = parse_instant(since, "since") if since is not None else end - DEFAULT_WINDOW
    if end <= start:
        raise SpecError("must be later than since", field="until")
    if end - start > MAX_WINDOW:
        raise SpecError("the window may span 31 days at most", field="since")
    return Window(start, end)


class ExplainService:
    """Answers ``explain`` from the store (the daemon need not run)."""

    def __init__(self, deployments: DeploymentViews) -> None:
        self.deployments = deployments
        self.store = deployments.store

    async def explain(
        self, workflow_id: str, win: Window, *, trigger_id: str | None = None
    ) -> dict[str, Any]:
        """The answer of ``wfsched explain`` and its route: ``{"workflow_id", "since", "until", "daemon", "occurrences"}``."""
        store = self.store
        deployment = await store.get_deployment(workflow_id)
        specs = self.deployments.triggers_of(deployment)
        if trigger_id is not None and trigger_id not in {s.id for s in specs}:
            raise NotFound(f"workflow {workflow_id!r} has no trigger {trigger_id!r}")
        now = utcnow()
        runs = await store.daemon_runs(min(win.since, now) - LOOK_BACK)
        events = await store.events_between(workflow_id, win.since, win.until)
        ledger = await store.occurrences(workflow_id, win.since, win.until)
        activity = Activity(await store.deployment_log(workflow_id))
        downtime = Downtime(runs, now)
        late_after = float(self.deployments.settings.get("scheduler.late_after"))

        wanted = (lambda t: True) if trigger_id is None else (lambda t: t == trigger_id)
        found = [o for o in ledger if wanted(o.trigger_id)]
        fired: dict[str, dict[datetime, TriggerEvent]] = {}
        for event in events:
            if not wanted(event.trigger_id):
                continue
            at = event.scheduled_at or event.fired_at
            if win.since <= at < win.until:
                found.append(_fired(event, at))
            if event.scheduled_at is not None:
                fired.setdefault(event.trigger_id, {})[event.scheduled_at] = event
        for spec in specs:
            if not spec.enabled or not wanted(spec.id):
                continue
            timer = self.deployments.timer_spec(workflow_id, spec)
            if timer is None:
                continue
            explainer = Explainer(
                TimeTrigger(workflow_id, spec.id, spec.type, timer),
                downtime=downtime,
                activity=activity,
                now=now,
                late_after=late_after,
            )
            found.extend(explainer.explain(win.since, win.until, fired.get(spec.id, {})))
        found.sort(key=lambda o: (o.at, o.trigger_id))
        daemon = summarize(runs, now)
        return {
            "workflow_id": workflow_id,
            "since": iso(win.since),
            "until": iso(win.until),
            "daemon": daemon,
            "occurrences": [o.to_json() for o in found],
        }


def _fired(event: TriggerEvent, at: datetime) -> Occurrence:
    reason = ""
    if event.scheduled_at is not None:
        late = (event.fired_at - event.scheduled_at).total_seconds()
        reason = f"recorded {late:.0f}s after it was due (catch-up)" if late >= 60 else ""
    return Occurrence(
        workflow_id=event.workflow_id,
        trigger_id=event.trigger_id,
        trigger_type=event.trigger_type,
        at=at,
        outcome="fired",
        reason=reason,
        execution_id=event.execution_id,
    )


def story(answer: dict[str, Any]) -> list[str]:
    """The answer as lines a person reads top to bottom, one per occurrence."""
    since = datetime.fromisoformat(answer["since"])
    until = datetime.fromisoformat(answer["until"])
    daemon = answer["daemon"]
    lines = [f"{answer['workflow_id']}: {clock(since)} to {clock(until, since)} UTC"]
    if daemon["running"]:
        lines.append(f"daemon: running ({len(daemon['replicas']) or 1} replica(s))")
    elif daemon["last_seen"]:
        seen = datetime.fromisoformat(daemon["last_seen"])
        lines.append(f"daemon: not running (last seen {clock(seen)})")
    else:
        lines.append("daemon: not running (never seen)")
    occurrences: Sequence[dict[str, Any]] = answer["occurrences"]
    if not occurrences:
        lines.append("nothing was due or received in this window")
    several = len({o["trigger_id"] for o in occurrences}) > 1
    for o in occurrences:
        at = datetime.fromisoformat(o["at"])
        who = f"[{o['trigger_id']}] " if several else ""
        text = f"{clock(at, since)} {who}{o['outcome']}"
        detail = o.get("reason") or ""
        if o["outcome"] in ("fired", "deduplicated") and o.get("execution_id"):
            detail = f"{o['execution_id']}" + (f"; {detail}" if detail else "")
        lines.append(f"{text}: {detail}" if detail else text)
    return lines
