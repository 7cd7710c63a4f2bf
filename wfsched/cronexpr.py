"""Cron and interval schedules: Jenkins ``H`` resolution, DST-aware iteration, ``every`` intervals.

``H`` resolves exactly as Jenkins does for the same seed string (MD5 of the seed feeding a
``java.util.Random``), so a wfsched trigger and a Jenkins job with the same full name fire at the
same minutes. Iteration matches wall-clock times in the schedule's IANA zone and returns UTC.

DST policy (SPEC §3):

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
import re
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from wfsched.errors import SpecError

__all__ = ["CronSchedule", "EverySchedule", "parse_duration", "resolve", "spread_offset"]


# --- Jenkins H resolution -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    hash_high: int
    names: Mapping[str, int]


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# Bounds from Jenkins BaseParser.LOWER_BOUNDS/UPPER_BOUNDS; a bare H narrows day of month to 1-28
# and day of week to 0-6 (BaseParser.doHash), an explicit H(a-b) may use the full range.
_FIELDS = (
    _Field("minute", 0, 59, 59, {}),
    _Field("hour", 0, 23, 23, {}),
    _Field("day of month", 1, 31, 28, {}),
    _Field("month", 1, 12, 12, {name: i for i, name in enumerate(_MONTHS, start=1)}),
    _Field("day of week", 0, 7, 6, {name: i for i, name in enumerate(_DAYS)}),
)

# The expansions of Jenkins CrontabParser.g4; they are hashed like any other H.
_ALIASES = {
    "yearly": "H H H H *",
    "annually": "H H H H *",
    "monthly": "H H H * *",
    "weekly": "H H * * H",
    "daily": "H H * * *",
    "midnight": "H H(0-2) * * *",
    "hourly": "H * * * *",
}

_TOKEN = r"[0-9]+|[A-Za-z]+"
_HASH_TERM = re.compile(rf"H(?:\((?P<start>{_TOKEN})-(?P<end>{_TOKEN})\))?(?:/(?P<step>[0-9]+))?")
_STAR_TERM = re.compile(r"\*(?:/(?P<step>[0-9]+))?")
_RANGE_TERM = re.compile(rf"(?P<start>{_TOKEN})(?:-(?P<end>{_TOKEN})(?:/(?P<step>[0-9]+))?)?")

_JAVA_MULTIPLIER = 0x5DEECE66D
_JAVA_MASK = (1 << 48) - 1


class _JavaRandom:
    """``java.util.Random``: the 48-bit LCG and ``nextInt(bound)`` exactly as the JDK specifies."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = (seed ^ _JAVA_MULTIPLIER) & _JAVA_MASK

    def next_bits(self, bits: int) -> int:
        self._state = (self._state * _JAVA_MULTIPLIER + 0xB) & _JAVA_MASK
        value = self._state >> (48 - bits)
        return value - (1 << 32) if bits == 32 and value >= 1 << 31 else value

    def next_int(self, bound: int) -> int:
        if bound <= 0:
            raise ValueError(f"bound must be positive, not {bound}")
        r = self.next_bits(31)
        m = bound - 1
        if bound & m == 0:
            return (bound * r) >> 31
        u = r
        r = u % bound
        # Java rejects draws whose `u - r + m` overflows a signed 32-bit int (the biased tail).
        while u - r + m >= 1 << 31:
            u = self.next_bits(31)
            r = u % bound
        return r


def _jenkins_random(seed: str) -> _JavaRandom:
    # hudson.scheduler.Hash.from: MD5, fold bytes 8..15 into 0..7, big-endian long as the seed.
    digest = bytearray(hashlib.md5(seed.encode("utf-8"), usedforsecurity=False).digest())
    for i in range(8, len(digest)):
        digest[i % 8] ^= digest[i]
    return _JavaRandom(int.from_bytes(digest[:8], "big"))


def resolve(expression: str, seed: str) -> str:
    """Return ``expression`` with every ``H`` and ``@`` alias replaced by concrete values.

    Values are drawn exactly as Jenkins draws them for a job whose full name is ``seed``. Fields
    without ``H`` are kept as written (whitespace is normalised to single spaces).

    :raises SpecError: (``field="cron"``) if the expression is not a valid 5-field cron
        expression or alias.
    """
    return _resolve(expression, _jenkins_random(seed).next_int)[0]


def _resolve(expression: str, draw: Callable[[int], int]) -> tuple[str, tuple[int, ...]]:
    """Resolve ``expression`` drawing hash values from ``draw``; also return each field's bits."""
    resolved: list[str] = []
    masks: list[int] = []
    # Left to right, term by term: the order in which Jenkins' parser consumes the hash.
    for terms in _parse(expression):
        parts: list[str] = []
        mask = 0
        for term in terms:
            text, bits = term.draw(draw) if isinstance(term, _Hashed) else term
            parts.append(text)
            mask |= bits
        resolved.append(",".join(parts))
        masks.append(mask)
    return " ".join(resolved), tuple(masks)


@dataclass(frozen=True, slots=True)
class _Hashed:
    start: int
    end: int
    step: int

    def draw(self, draw: Callable[[int], int]) -> tuple[str, int]:
        if self.step == 1:
            # BaseParser.doHash: H (and H/1) picks one value rather than stepping by one.
            value = self.start + draw(self.end + 1 - self.start)
            return str(value), 1 << value
        first = self.start + draw(self.step)
        last = first + (self.end - first) // self.step * self.step
        bits = _bits(first, last, self.step)
        return (str(first) if first == last else f"{first}-{last}/{self.step}"), bits


@lru_cache(maxsize=1024)
def _parse(expression: str) -> tuple[tuple[tuple[str, int] | _Hashed, ...], ...]:
    """Validate ``expression``: per field, each term's (text, bits), or the H draw it needs."""
    text = expression.strip()
    if text.startswith("@"):
        alias = _ALIASES.get(text[1:].lower())
        if alias is None:
            raise SpecError(
                f"unknown alias {text!r}; use one of " + ", ".join(f"@{name}" for name in _ALIASES),
                field="cron",
            )
        text = alias
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise SpecError(
            f"{expression!r} has {len(fields)} fields; expected 5 (minute hour day-of-month "
            "month day-of-week) or an alias such as @daily",
            field="cron",
        )
    parsed = []
    for raw, spec in zip(fields, _FIELDS, strict=True):
        terms = []
        for term in raw.split(","):
            try:
                terms.append(_parse_term(term, spec))
            except ValueError as exc:
                raise SpecError(f"{spec.name} {term!r}: {exc}", field="cron") from None
        parsed.append(tuple(terms))
    return tuple(parsed)


def _parse_term(term: str, spec: _Field) -> tuple[str, int] | _Hashed:
    # Error texts are Jenkins' own (hudson/scheduler/Messages.properties) where it has one.
    if match := _HASH_TERM.fullmatch(term):
        if match["start"] is None:
            start, end = spec.low, spec.hash_high
        else:
            start, end = _value(match["start"], spec), _value(match["end"], spec)
            if start > end:
                raise ValueError(f"You mean {end}-{start}?")
        step = int(match["step"]) if match["step"] else 1
        if step > end - start + 1:
            raise ValueError(f"{step} is an invalid value. Must be within 1 and {end - start + 1}")
        if step <= 0:
            raise ValueError(f"step must be positive, but found {step}")
        return _Hashed(start, end, step)
    if match := _STAR_TERM.fullmatch(term):
        start, end = spec.low, spec.high
    elif match := _RANGE_TERM.fullmatch(term):
        start = _value(match["start"], spec)
        end = start if match["end"] is None else _value(match["end"], spec)
    else:
        raise ValueError("expected a number, a range a-b, a step */n or a-b/n, or H, H(a-b), H/n")
    step = int(match["step"]) if match["step"] else 1
    if step <= 0:
        raise ValueError(f"step must be positive, but found {step}")
    if start > end:
        raise ValueError(f"You mean {end}-{start}?")
    return term, _bits(start, end, step)


@lru_cache(maxsize=4096)
def _bits(start: int, end: int, step: int) -> int:
    return sum(1 << v for v in range(start, end + 1, step))


def _value(token: str, spec: _Field) -> int:
    if token.isdigit():
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise ValueError(
                f"{value} is an invalid value. Must be within {spec.low} and {spec.high}"
            )
        return value
    named = spec.names.get(token.lower())
    if named is None:
        hint = f" or one of {', '.join(n.upper() for n in spec.names)}" if spec.names else ""
        raise ValueError(f"{token!r} is not a number{hint}")
    return named


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
        self.resolved, masks = _resolve(expression, _jenkins_random(seed).next_int)
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

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(?:\s*[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+\s*")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float, *, field: str) -> float:
    """Return the seconds in ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"1h30m"`` or a plain number.

    Units are ``ms s m h d w``; parts may be combined. Numbers (and numeric strings) are seconds.

    :raises SpecError: with ``field=field`` for anything else, including negative or
        non-finite values.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise SpecError(f"{text!r} is not a duration (use e.g. 30s, 5m, 1h, 1d)", field=field)
    if isinstance(text, str):
        value = text.strip().lower()
        if _DURATION.fullmatch(value):
            seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
        else:
            try:
                seconds = float(value)
            except ValueError:
                raise SpecError(
                    f"{text!r} is not a duration (use e.g. 30s, 5m, 1h, 1d, 1h30m)", field=field
                ) from None
    else:
        seconds = float(text)
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(f"{text!r} is not a finite, non-negative duration", field=field)
    return seconds


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
