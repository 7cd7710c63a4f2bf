"""The fate of a time trigger's due instants, computed from what the store already holds.

Nothing is written per instant: an instant that fired is an event (``scheduled_at``), and an
instant that did not is explained from three histories:

* the daemon runs (heartbeats): when some daemon ran, and so when none did;
* the deployment's history: when it was deployed or resumed, and paused;
* the trigger's schedule and catch-up policy (its TimerSpec).

For an instant ``t`` due at ``t + spread`` with no event, in this order:

``paused``  the deployment was paused at ``t`` (an instant before its first deploy is not
            listed at all);
``pending`` it fell due less than ``late_after`` ago: the timer may still be recording it;
``missed``  a daemon ran when it fell due but nothing recorded it (no replica owned its
            shard), or none ran then and none has run since;
``skipped`` none ran when it fell due; the daemon that came back applied the catch-up policy,
            which does not fire it (``skip``: nothing; ``latest``: only the latest instant of
            the gap; ``all``: only those within ``catchup_window``);
``missed``  as above, but the policy should have fired it and no event says it did.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from wfsched.heartbeat import is_running
from wfsched.models import DaemonRun, DeploymentState, Occurrence, Outcome, TriggerEvent
from wfsched.timer.instants import next_instant, quantize
from wfsched.trigger import TimerSpec

MAX_INSTANTS = 200_000
"""Instants walked per trigger and question at most (a per-second trigger over two days)."""


def clock(t: datetime, ref: datetime | None = None) -> str:
    """``HH:MM:SS`` UTC, with the date when it differs from ``ref``'s (or without ``ref``)."""
    if ref is not None and t.date() == ref.date():
        return t.strftime("%H:%M:%S")
    return t.strftime("%Y-%m-%d %H:%M:%S")


class Downtime:
    """When some daemon ran: the daemon runs merged into disjoint intervals."""

    def __init__(self, runs: Sequence[DaemonRun], now: datetime) -> None:
        spans = sorted((r.started_at, now if is_running(r, now) else r.last_seen) for r in runs)
        merged: list[tuple[datetime, datetime]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self.spans = merged
        self._starts = [s for s, _ in merged]

    def running_at(self, t: datetime) -> bool:
        i = bisect.bisect_right(self._starts, t) - 1
        return i >= 0 and t <= self.spans[i][1]

    def gap(self, t: datetime) -> tuple[datetime | None, datetime | None]:
        """The gap around ``t`` (no daemon ran): when the last run before it ended (None: no
        run before) and when the next began (None: none has run since)."""
        i = bisect.bisect_right(self._starts, t)
        before = self.spans[i - 1][1] if i > 0 else None
        after = self.spans[i][0] if i < len(self.spans) else None
        return before, after


class Activity:
    """When the deployment was active, from its history of deploys, resumes and pauses."""

    def __init__(self, log: Sequence[tuple[datetime, DeploymentState]]) -> None:
        self._at = [at for at, _ in log]
        self._state = [state for _, state in log]

    def state(self, t: datetime) -> tuple[DeploymentState | None, datetime | None]:
        """The state at ``t`` and since when (None: not deployed yet)."""
        i = bisect.bisect_right(self._at, t) - 1
        if i < 0:
            return None, None
        return self._state[i], self._at[i]

    def until(self, t: datetime) -> datetime | None:
        """When the state at ``t`` ended (None: it still holds)."""
        i = bisect.bisect_right(self._at, t)
        return self._at[i] if i < len(self._at) else None


@dataclass(frozen=True, slots=True)
class TimeTrigger:
    """A time trigger to explain: its ids and schedule."""

    workflow_id: str
    trigger_id: str
    trigger_type: str
    spec: TimerSpec


def instants(spec: TimerSpec, since: datetime, until: datetime) -> Iterator[datetime]:
    """The nominal instants ``t`` with ``since <= t < until`` (at most MAX_INSTANTS)."""
    t = next_instant(spec, since - timedelta(microseconds=1))
    count = 0
    while t is not None and t < until and count < MAX_INSTANTS:
        yield t
        count += 1
        t = next_instant(spec, t)


class Explainer:
    """Computes the outcomes of one trigger's due instants in a window."""

    def __init__(
        self,
        trigger: TimeTrigger,
        *,
        downtime: Downtime,
        activity: Activity,
        now: datetime,
        late_after: float,
    ) -> None:
        self.trigger = trigger
        self.downtime = downtime
        self.activity = activity
        self.now = now
        self.late_after = timedelta(seconds=late_after)
        self.spread = timedelta(seconds=quantize(trigger.spec.spread))

    def explain(
        self, since: datetime, until: datetime, fired: Mapping[datetime, TriggerEvent]
    ) -> list[Occurrence]:
        """One occurrence per instant due in ``[since, until)``; ``fired``: the trigger's
        events by ``scheduled_at`` (those are reported as fired by the caller)."""
        out = []
        for t in instants(self.trigger.spec, since, min(until, self.now - self.spread)):
            if t in fired:
                continue
            found = self.outcome(t)
            if found is not None:
                outcome, reason = found
                out.append(self._occurrence(t, outcome, reason))
        return out

    def _occurrence(self, t: datetime, outcome: str, reason: str) -> Occurrence:
        return Occurrence(
            workflow_id=self.trigger.workflow_id,
            trigger_id=self.trigger.trigger_id,
            trigger_type=self.trigger.trigger_type,
            at=t,
            outcome=cast(Outcome, outcome),
            reason=reason,
        )

    def outcome(self, t: datetime) -> tuple[str, str] | None:
        """``(outcome, reason)`` of an instant with no event; None when it was not due
        (before the deployment existed)."""
        due = t + self.spread
        state, since = self.activity.state(t)
        if state is None:
            return None
        if state == "paused":
            until = self.activity.until(t)
            span = f"from {clock(since, t)} to {clock(until, t)}" if since and until else (
                f"since {clock(since, t)}" if since else ""
            )  # fmt: skip
            return "paused", f"the workflow was paused {span}".strip()
        if due > self.now - self.late_after:
            ago = (self.now - due).total_seconds()
            return "pending", f"due {ago:.0f}s ago, not recorded yet"
        if self.downtime.running_at(due):
            return "missed", (
                "a daemon was running but nothing recorded it (no replica owned it, or the "
                "timer was stopped)"
            )
        before, after = self.downtime.gap(due)
        if after is None:
            return "missed", (
                f"no daemon has run since {clock(before, t)}" if before else "no daemon has run"
            )
        if before is None:
            gap = f"no daemon ran before {clock(after, t)}"
        else:
            gap = f"no daemon ran from {clock(before, t)} to {clock(after, t)}"
        return self._caught_up(t, after, gap)

    def _caught_up(self, t: datetime, back: datetime, gap: str) -> tuple[str, str]:
        """Whether the daemon that came back at ``back`` fired ``t`` by its catch-up policy."""
        spec = self.trigger.spec
        policy = spec.catchup
        state, activated = self.activity.state(back)
        if state != "active" or (activated is not None and activated > t):
            # Deployed or resumed after the instant: catch-up starts from that moment.
            return "skipped", f"{gap}; the workflow was deployed or resumed after it"
        horizon = back - self.spread
        if policy == "skip":
            return "skipped", f"{gap}; catch-up = skip"
        if policy == "latest":
            following = next_instant(spec, t)
            if following is not None and following <= horizon:
                return "skipped", f"{gap}; catch-up = latest fired a later instant only"
            return "missed", f"{gap}; catch-up = latest should have fired it, no event says so"
        window = timedelta(seconds=spec.catchup_window)
        if t <= horizon - window:
            return "skipped", (
                f"{gap}; catch-up = all, but it is older than catchup_window ({_span(window)})"
            )
        return "missed", f"{gap}; catch-up = all should have fired it, no event says so"


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
