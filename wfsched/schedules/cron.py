"""Cron and interval schedules: Jenkins ``H`` resolution, DST-aware iteration, ``every`` intervals.

``H`` resolves exactly as Jenkins does for the same seed string (MD5 of the seed feeding a
``java.util.Random``), so a wfsched trigger and a Jenkins job with the same full name fire at the
same minutes. Iteration matches wall-clock times in the schedule's IANA zone and returns UTC.

DST policy (the README's "Cron and interval triggers"):

* fixed-time schedules (hour field a number, list or range: no ``*`` and no step) fire once at
  the first instant after a spring-forward gap that swallowed their time, and once, at the first
  occurrence, for a time repeated by fall-back;
* schedules with ``*`` or a step in the hour field follow elapsed time: skipped wall-clock times
  do not fire, repeated ones fire on both passes.

Day of month and day of week combine as in Vixie cron: when both are restricted (neither starts
with ``*``) a day matching either fires, otherwise both must match.
"""

from __future__ import annotations

import hashlib
import math
import threading
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from wfsched.errors import SpecError
from wfsched.schedules.jenkins import jenkins_random, resolve, resolve_with

__all__ = ["CronSchedule", "EverySchedule", "resolve", "spread_offset"]


# --- Iteration ------------------------------------------------------------------------------

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# A window of precomputed fire instants answers next_after() by bisection. It reaches back
# _SLACK seconds so slightly older queries still hit. A first window takes few candidates to
# keep startup cheap; walking forward doubles that, up to _MAX_CANDIDATES, to amortise croniter.
_SLACK = 300.0
_MIN_CANDIDATES = 4
_MAX_CANDIDATES = 256
_WINDOWS_KEPT = 4


class _WallClockMatches:
    """Naive wall-clock minutes matching a concrete expression: the only user of croniter."""

    __slots__ = ("_croniter",)

    def __init__(self, expression: str, *, day_or: bool) -> None:
        self._croniter = croniter(expression, datetime(2000, 1, 1), day_or=day_or)

    def after(self, start: datetime) -> Iterator[datetime]:
        """Yield matching naive datetimes strictly after naive ``start``, in order.

        Not reentrant: the caller holds its lock while it consumes the iterator.
        """
        self._croniter.set_current(start, force=True)
        while True:
            yield self._croniter.get_next(datetime)


@dataclass(frozen=True, slots=True)
class _Window:
    valid_from: float
    instants: list[int]
    fires: list[datetime]


class CronSchedule:
    """A cron expression evaluated in an IANA time zone, seeded for ``H``."""

    __slots__ = (
        "_batch",
        "_fixed_hour",
        "_lock",
        "_matches",
        "_tz",
        "_windows",
        "expression",
        "resolved",
        "timezone",
    )

    def __init__(self, expression: str, timezone: str, seed: str) -> None:
        """Resolve and validate ``expression`` and ``timezone``.

        :raises SpecError: ``field="cron"`` for a bad expression or one that can never fire
            (e.g. ``0 0 30 2 *``), ``field="timezone"`` for an unknown zone.
        """
        self.expression = expression
        self.resolved, masks = resolve_with(expression, jenkins_random(seed).next_int)
        self.timezone = timezone
        self._tz = _zone(timezone)
        _, hour, dom, _, dow = self.resolved.split(" ")
        self._fixed_hour = "*" not in hour and "/" not in hour
        # Vixie cron ORs the two day fields only when neither starts with '*' (cronie entry.c).
        day_or = not dom.startswith("*") and not dow.startswith("*")
        if not day_or and not _some_month_has_day(masks[3], masks[2]):
            raise SpecError(
                f"{expression!r} never fires: no selected month has that day of month",
                field="cron",
            )
        try:
            self._matches = _WallClockMatches(self.resolved, day_or=day_or)
        except ValueError as exc:
            raise SpecError(f"{expression!r}: {exc}", field="cron") from None
        self._windows: tuple[_Window, ...] = ()
        self._batch = _MIN_CANDIDATES
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r}, resolved={self.resolved!r})"

    @property
    def fixed_hour(self) -> bool:
        """True when the hour field is a number, list or range (no ``*``, no step)."""
        return self._fixed_hour

    def next_after(self, t: datetime) -> datetime:
        """Return the first fire instant strictly after aware ``t``, as an aware UTC datetime.

        Safe to call from several threads.
        """
        ts = _timestamp(t)
        for window in self._windows:
            if window.valid_from <= ts < window.instants[-1]:
                return window.fires[bisect_right(window.instants, ts)]
        with self._lock:
            # Walking forward past the newest window grows the next one; a jump back doesn't.
            forward = bool(self._windows) and ts >= self._windows[0].instants[-1]
            if forward:
                self._batch = min(2 * self._batch, _MAX_CANDIDATES)
            window = self._build_window(ts, self._batch if forward else _MIN_CANDIDATES)
            self._windows = (window, *self._windows[: _WINDOWS_KEPT - 1])
        return window.fires[bisect_right(window.instants, ts)]

    def _build_window(self, ts: float, candidates: int) -> _Window:
        # Candidates are naive wall-clock matches; each maps to 0, 1 or 2 instants by the DST
        # policy. Mapped instants are monotone in the candidate except the second pass of a
        # fold, and every candidate after the last one maps at or after the last one's first
        # instant, so the instants up to it are complete. Starting a fold's length before the
        # wall time of `valid_from` covers every candidate with an instant after it.
        tz = self._tz
        valid_from = ts - _SLACK
        wall = datetime.fromtimestamp(valid_from, tz).replace(tzinfo=None, fold=0)
        start = wall - timedelta(seconds=_fold_seconds(wall, tz))
        instants: set[int] = set()
        first_after: int | None = None
        transitions: dict[int, int] = {}
        primary = 0
        for count, local in enumerate(self._matches.after(start), start=1):
            u0 = int(local.replace(tzinfo=tz).timestamp())
            u1 = int(local.replace(tzinfo=tz, fold=1).timestamp())
            fires: tuple[int, ...]
            if u0 == u1:
                primary, fires = u0, (u0,)
            elif u0 < u1:  # repeated by fall-back
                primary = u0
                fires = (u0,) if self._fixed_hour else (u0, u1)
            else:  # skipped by spring-forward
                if u1 not in transitions:
                    transitions[u1] = _transition(u1, u0, tz)
                primary = transitions[u1]
                fires = (primary,) if self._fixed_hour else ()
            for fire in fires:
                instants.add(fire)
                if fire > ts and (first_after is None or fire < first_after):
                    first_after = fire
            if count >= candidates and first_after is not None and first_after <= primary:
                break
        ordered = sorted(i for i in instants if i <= primary)
        return _Window(valid_from, ordered, [datetime.fromtimestamp(i, UTC) for i in ordered])


def _some_month_has_day(month_bits: int, dom_bits: int) -> bool:
    first_day = (dom_bits & -dom_bits).bit_length() - 1
    return any(
        month_bits >> month & 1 and first_day <= days
        for month, days in enumerate(_DAYS_IN_MONTH, start=1)
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SpecError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'",
            field="timezone",
        ) from None


def _timestamp(t: datetime) -> float:
    if t.utcoffset() is None:
        raise ValueError(f"{t!r} is naive; pass a timezone-aware datetime")
    return t.timestamp()


def _fold_seconds(wall: datetime, tz: ZoneInfo) -> float:
    """Length of the fall-back fold containing naive ``wall``, or 0 if it is not repeated."""
    return max(
        0.0, wall.replace(tzinfo=tz, fold=1).timestamp() - wall.replace(tzinfo=tz).timestamp()
    )


def _transition(before: int, after: int, tz: ZoneInfo) -> int:
    """First instant in ``(before, after]`` whose UTC offset differs from ``before``'s."""
    offset = datetime.fromtimestamp(before, tz).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == offset:
            before = middle
        else:
            after = middle
    return after


# --- Intervals ------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class EverySchedule:
    """Fires every ``every_seconds``, aligned to the Unix epoch plus ``offset_seconds``."""

    __slots__ = ("_every_us", "_offset_us", "every_seconds", "offset_seconds")

    def __init__(self, every_seconds: float, offset_seconds: float = 0) -> None:
        """Validate the interval; an offset of a whole interval or more wraps around.

        :raises SpecError: ``field="every"`` unless the interval is positive (at least 1 µs),
            ``field="offset"`` unless the offset is a non-negative number.
        """
        every_us = _microseconds(every_seconds)
        if every_us is None or every_us <= 0:
            raise SpecError(f"{every_seconds!r} is not a positive interval", field="every")
        offset_us = _microseconds(offset_seconds)
        if offset_us is None or offset_us < 0:
            raise SpecError(f"{offset_seconds!r} is not a non-negative offset", field="offset")
        self.every_seconds = every_seconds
        self.offset_seconds = offset_seconds
        self._every_us = every_us
        self._offset_us = offset_us % every_us

    def __repr__(self) -> str:
        return f"EverySchedule({self.every_seconds!r}, {self.offset_seconds!r})"

    def next_after(self, t: datetime) -> datetime:
        """Return the first aligned instant strictly after aware ``t``, as an aware UTC datetime."""
        _timestamp(t)
        elapsed = (t - _EPOCH) // _MICROSECOND - self._offset_us
        intervals = elapsed // self._every_us + 1
        return _EPOCH + timedelta(microseconds=intervals * self._every_us + self._offset_us)


def _microseconds(seconds: float) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    if not math.isfinite(seconds):
        return None
    return round(seconds * 1_000_000)


# --- Durations and spread -------------------------------------------------------------------


def spread_offset(seed: str, spread_seconds: float) -> float:
    """Return a delay in ``[0, spread_seconds)`` that depends only on ``seed``.

    Uses the first 8 bytes of SHA-256 of the UTF-8 seed, never ``hash()``, which is salted per
    process, so every replica and restart agrees. A spread of 0 (or less) gives 0.
    """
    if not spread_seconds > 0:
        return 0.0
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    # The division rounds to 1.0 for the top 2**10 values; keep the interval half-open.
    return min(fraction * spread_seconds, math.nextafter(spread_seconds, 0.0))
