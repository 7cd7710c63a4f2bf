"""Fire density: how many time-based fires fall in each minute of the coming hours, which
minutes peak, which expressions put fires there, and the Jenkins ``H`` rewrite that would
spread each of them.

The dashboard's density page and ``wfsched density`` both show :func:`density`. It is cheap at
fleet size because triggers are grouped the way the timer groups them: one walk of instants
per distinct series (its key, window and 100 ms spread step), multiplied by the group's size.
Interval series are counted per minute arithmetically, never walked.
"""

from __future__ import annotations

import builtins
import itertools
import math
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from wfsched.deployments.views import DeploymentViews
from wfsched.errors import WfschedError
from wfsched.models import Deployment, TriggerSpec
from wfsched.schedules.series import EverySeries
from wfsched.spec import parse_spec
from wfsched.timer.instants import next_instant, quantize, timestamp
from wfsched.trigger import TimerSpec

PEAKS = 10
"""How many peak minutes are reported."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIGITS = re.compile(r"[0-9]+")
_STEP = re.compile(r"(?:\*|0-59)/([0-9]+)")
_RANGE_STEP = re.compile(r"([0-9]+-[0-9]+)/([0-9]+)")


@dataclass(frozen=True, slots=True)
class TimeTrigger:
    """A deployed, active time-based trigger and the schedule the timer would give it."""

    workflow_id: str
    trigger_id: str
    expression: str
    """As written (``0 9 * * *``), or the resolved form for a schedule without one."""
    timer: TimerSpec


@dataclass(frozen=True, slots=True)
class Contributor:
    """An expression (as written) putting fires into one peak minute."""

    expression: str
    triggers: int
    """How many triggers with this expression fire in the minute."""
    suggestion: str | None
    """The ``H`` rewrite that spreads them, or None when there is none to make."""
    examples: tuple[str, ...]
    """A few of those triggers as ``workflow/trigger``."""


@dataclass(frozen=True, slots=True)
class Peak:
    minute: datetime
    fires: int
    contributors: tuple[Contributor, ...]


@dataclass(frozen=True, slots=True)
class Density:
    """Fires per minute from ``start`` (a whole UTC minute) for ``len(counts)`` minutes."""

    start: datetime
    counts: tuple[int, ...]
    triggers: int
    peaks: tuple[Peak, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(self.counts)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": _iso(self.start),
            "minutes": len(self.counts),
            "triggers": self.triggers,
            "fires": self.total,
            "counts": list(self.counts),
            "peaks": [
                {
                    "minute": _iso(p.minute),
                    "fires": p.fires,
                    "expressions": [
                        {
                            "expression": c.expression,
                            "triggers": c.triggers,
                            "suggestion": c.suggestion,
                            "examples": list(c.examples),
                        }
                        for c in p.contributors
                    ],
                }
                for p in self.peaks
            ],
        }


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the H rewrite ---------------------------------------------------------------------------
def suggest_h(expression: str) -> str | None:
    """The expression with its minute field hashed, so triggers sharing it fire spread out
    over the hour instead of together; None when the minute is already hashed, every minute
    (``*``), an alias (Jenkins' aliases already hash) or not a plain cron expression.

    ``0 9 * * *`` → ``H 9 * * *``, ``*/15 * * * *`` → ``H/15 * * * *``,
    ``0-29/10 * * * *`` → ``H(0-29)/10 * * * *``, ``0,30 * * * *`` → ``H/30 * * * *``.
    """
    fields = expression.split()
    if len(fields) != 5:
        return None
    minute = fields[0]
    hashed: str | None
    if _DIGITS.fullmatch(minute):
        hashed = "H"
    elif match := _STEP.fullmatch(minute):
        hashed = f"H/{match[1]}"
    elif match := _RANGE_STEP.fullmatch(minute):
        hashed = f"H({match[1]})/{match[2]}"
    else:
        hashed = _even_list(minute)
    if hashed is None:
        return None
    return " ".join([hashed, *fields[1:]])


def _even_list(minute: str) -> str | None:
    """``0,20,40`` (a whole hour in equal steps) as ``H/20``; None for anything else."""
    parts = minute.split(",")
    if len(parts) < 2 or not all(_DIGITS.fullmatch(p) for p in parts):
        return None
    values = sorted(int(p) for p in parts)
    step = values[1] - values[0]
    if step <= 0 or 60 % step or len(values) != 60 // step:
        return None
    if any(b - a != step for a, b in itertools.pairwise(values)):
        return None
    return f"H/{step}"


# -- collecting the fleet's time triggers ----------------------------------------------------
async def time_triggers(service: DeploymentViews) -> list[TimeTrigger]:
    """Every enabled time-based trigger of every active deployment."""
    found: list[TimeTrigger] = []
    for deployment in await service.store.list_deployments():
        if deployment.state == "active":
            found.extend(triggers_of(service, deployment))
    return found


def triggers_of(service: DeploymentViews, deployment: Deployment) -> list[TimeTrigger]:
    """The enabled time-based triggers of one deployment (paused or not)."""
    try:
        specs = parse_spec(deployment.document, service.registry).triggers
    except WfschedError:
        return []
    found = []
    for spec in specs:
        if spec.enabled:
            trigger = _time_trigger(service, deployment.workflow_id, spec)
            if trigger is not None:
                found.append(trigger)
    return found


def _time_trigger(
    service: DeploymentViews, workflow_id: str, spec: TriggerSpec
) -> TimeTrigger | None:
    try:
        trigger = service.instance(workflow_id, spec)
        timer = trigger.timer()
        if timer is None:
            return None
        described = trigger.describe()
    except Exception:  # noqa: BLE001 - one bad plugin trigger must not hide the fleet's density
        return None
    expression = described.get("expression") or described.get("resolved") or timer.schedule.key
    return TimeTrigger(workflow_id, spec.id, str(expression), timer)


def next_fires(timer: TimerSpec, now: datetime, count: int = 10) -> builtins.list[datetime]:
    """The next ``count`` fire instants (spread included) after ``now``."""
    spread = timedelta(seconds=quantize(timer.spread))
    fires: list[datetime] = []
    t = now - spread
    while len(fires) < count:
        nominal = next_instant(timer, t)
        if nominal is None:
            break
        fires.append(nominal + spread)
        t = nominal
    return fires


# -- counting ----------------------------------------------------------------------------
Tally = tuple[Counter[str], dict[str, list[str]]]
"""Triggers per expression as written, and a few examples of each."""


class Grouped(Protocol):
    """Triggers sharing a series, a window and a spread step: their fires coincide, so one
    walk of instants counts them all."""

    @property
    def timer(self) -> TimerSpec: ...

    @property
    def spread(self) -> float:
        """The spread step (quantized), seconds."""

    @property
    def size(self) -> int:
        """How many triggers share it."""

    def tally(self) -> Tally:
        """:func:`tally_of` its triggers; asked only of the groups behind a peak minute."""


@dataclass(slots=True)
class Group:
    """A :class:`Grouped` of listed triggers (:func:`groups_of`)."""

    timer: TimerSpec
    spread: float
    members: list[TimeTrigger] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.members)

    def tally(self) -> Tally:
        return tally_of(self.members)


def groups_of(triggers: Iterable[TimeTrigger]) -> list[Group]:
    """Triggers grouped as the timer groups them: one walk of instants serves a group."""
    groups: dict[tuple[Any, ...], Group] = {}
    steps: dict[float, float] = {}  # spreads repeat: each is quantized once
    for t in triggers:
        timer = t.timer
        spread = steps.get(timer.spread)
        if spread is None:
            spread = steps[timer.spread] = quantize(timer.spread)
        key = (timer.schedule.key, timer.start_at, timer.end_at, spread)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(timer, spread)
        group.members.append(t)
    return list(groups.values())


class Walks:
    """The instants of each schedule (by key) walked so far, extended an hour ahead at a time:
    a caller that keeps one (the density page) walks each series about once, not on every
    request, and the schedules' own windows, which the timer uses, are not thrown about."""

    AHEAD = 3600.0

    def __init__(self) -> None:
        self._walked: dict[str, tuple[float, float, list[float]]] = {}

    def between(self, schedule: Any, lower: float, upper: float) -> list[float]:
        """The instants of ``schedule`` in [lower, upper), as timestamps."""
        lo, hi, found = self._walked.get(schedule.key, (lower, lower, []))
        if lower < lo:
            found, lo = [*_walk(schedule, lower, lo), *found], lower
        if upper > hi:
            found.extend(_walk(schedule, hi, upper + self.AHEAD))
            hi = upper + self.AHEAD
        cut = bisect_left(found, lower)
        if cut > len(found) // 2:  # forget what lies behind
            found, lo = found[cut:], lower
        self._walked[schedule.key] = (lo, hi, found)
        return found[bisect_left(found, lower) : bisect_left(found, upper)]

    def keep(self, keys: Iterable[str]) -> None:
        """Forget the schedules not in ``keys`` (none armed any more)."""
        wanted = set(keys)
        for key in [k for k in self._walked if k not in wanted]:
            del self._walked[key]


def _walk(schedule: Any, lower: float, upper: float) -> list[float]:
    found = []
    t = _EPOCH + timedelta(seconds=lower) - timedelta(microseconds=1)
    while True:
        nxt = schedule.next_after(t)
        if nxt is None:
            break
        ts = timestamp(nxt)
        if ts >= upper:
            break
        found.append(ts)
        t = nxt
    return found


def _minute_counts(group: Grouped, start: float, minutes: int, walks: Walks) -> dict[int, int]:
    """Fires of ONE member of ``group`` per minute index (sparse), in [start, start + minutes)."""
    end = start + minutes * 60
    lower, upper = start - group.spread, end - group.spread
    timer = group.timer
    if timer.start_at is not None:
        lower = max(lower, timestamp(timer.start_at))
    if timer.end_at is not None:
        upper = min(upper, timestamp(timer.end_at) + 1e-6)
    if upper <= lower:
        return {}
    schedule = timer.schedule
    if isinstance(schedule, EverySeries):
        return _interval_counts(schedule, lower, upper, start - group.spread, minutes)
    counts: Counter[int] = Counter()
    for ts in walks.between(schedule, lower, upper):
        counts[int((ts - start + group.spread) // 60)] += 1
    return dict(counts)


def _interval_counts(
    series: EverySeries, lower: float, upper: float, origin: float, minutes: int
) -> dict[int, int]:
    """Instants ``offset + k*every`` in [lower, upper), per minute from ``origin``: counted
    by arithmetic (a 1 s interval has 86,400 instants a day; each minute is two divisions)."""
    every, offset = series.seconds, series.offset

    def before(x: float) -> int:  # instants strictly before x (relative to some fixed k)
        return math.ceil((x - offset) / every - 1e-9)

    counts: dict[int, int] = {}
    for m in range(minutes):
        a = max(origin + m * 60, lower)
        b = min(origin + (m + 1) * 60, upper)
        if b > a:
            n = before(b) - before(a)
            if n:
                counts[m] = n
    return counts


def density(
    triggers: Sequence[TimeTrigger], *, now: datetime, hours: int = 24, peaks: int = PEAKS
) -> Density:
    """Fires per minute over ``hours`` from the first whole minute after ``now`` (so every fire
    counted is still to come), with the ``peaks`` busiest minutes (earliest first among
    equals) and the expressions behind each."""
    return density_of(groups_of(triggers), now=now, hours=hours, peaks=peaks)


def density_of(
    groups: Sequence[Grouped],
    *,
    now: datetime,
    hours: int = 24,
    peaks: int = PEAKS,
    walks: Walks | None = None,
) -> Density:
    """:func:`density` of triggers already grouped (:func:`groups_of`, or the groups a timer
    keeps): it pays per group, and per trigger only for the tallies of the groups behind
    the peaks. ``walks``: the instants walked by earlier calls, to reuse."""
    begin = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    start, minutes = timestamp(begin), hours * 60
    walks = walks or Walks()
    totals = [0] * minutes
    per_group = []
    for group in groups:
        counts = _minute_counts(group, start, minutes, walks)
        per_group.append(counts)
        size = group.size
        for m, n in counts.items():
            if 0 <= m < minutes:
                totals[m] += n * size
    ranked = sorted((m for m in range(minutes) if totals[m]), key=lambda m: (-totals[m], m))
    top = sorted(ranked[:peaks], key=lambda m: (-totals[m], m))
    tallies: dict[int, Tally] = {}
    return Density(
        start=begin,
        counts=tuple(totals),
        triggers=sum(g.size for g in groups),
        peaks=tuple(
            Peak(
                begin + timedelta(minutes=m),
                totals[m],
                _contributors(m, groups, per_group, tallies),
            )
            for m in top
        ),
    )


def _contributors(
    minute: int,
    groups: Sequence[Grouped],
    per_group: Sequence[dict[int, int]],
    tallies: dict[int, Tally],
) -> tuple[Contributor, ...]:
    """The expressions firing in ``minute``; ``tallies`` memoizes each group's expressions."""
    triggers: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for i, (group, counts) in enumerate(zip(groups, per_group, strict=True)):
        if counts.get(minute):
            tally = tallies.get(i)
            if tally is None:
                tally = tallies[i] = group.tally()
            triggers.update(tally[0])
            for expression, some in tally[1].items():
                examples[expression].extend(some[: 3 - len(examples[expression])])
    return tuple(
        Contributor(expression, n, suggest_h(expression), tuple(examples[expression]))
        for expression, n in sorted(triggers.items(), key=lambda item: (-item[1], item[0]))
    )


def tally_of(triggers: Iterable[TimeTrigger]) -> Tally:
    """Triggers per expression, and the first three of each as ``workflow/trigger``."""
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for member in triggers:
        counts[member.expression] += 1
        if len(examples[member.expression]) < 3:
            examples[member.expression].append(f"{member.workflow_id}/{member.trigger_id}")
    return counts, examples


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(counts: Sequence[int], width: int = 72) -> str:
    """``counts`` squeezed into ``width`` block characters (each the maximum of its slice)."""
    if not counts:
        return ""
    size = math.ceil(len(counts) / width)
    cells = [max(counts[i : i + size]) for i in range(0, len(counts), size)]
    top = max(cells) or 1
    return "".join(SPARKS[min(7, (c * 8 - 1) // top)] if c else " " for c in cells)
