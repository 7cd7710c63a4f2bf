"""Shared schedule series for the timer: cron expressions and epoch-aligned intervals.

A series is a :class:`~wfsched.trigger.Schedule`: ``key`` names the instants it produces and
``next_after`` walks them. Equal series are one object (cached by key), so the fire windows a
cron series precomputes are built once however many triggers use it, and the timer can
rebuild a series from its key alone when it re-arms stored triggers at start-up.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from wfsched.schedules.cron import CronSchedule, EverySchedule, resolve

_SEED = "wfsched/resolved"
_US = 1_000_000


class CronSeries:
    """A resolved (``H``-free) cron expression in an IANA zone; key ``cron:<resolved>|<zone>``."""

    __slots__ = ("cron", "key")

    def __init__(self, cron: CronSchedule) -> None:
        self.cron = cron
        self.key = f"cron:{cron.resolved}|{cron.timezone}"

    @property
    def resolved(self) -> str:
        """The concrete expression, every ``H`` and alias replaced."""
        return self.cron.resolved

    @property
    def timezone(self) -> str:
        return self.cron.timezone

    def next_after(self, t: datetime) -> datetime | None:
        """Return the first fire instant strictly after ``t`` (aware UTC)."""
        return self.cron.next_after(t)


class EverySeries:
    """Every ``every`` seconds from the Unix epoch plus ``offset``; key ``every:<µs>+<µs>``."""

    __slots__ = ("every", "key")

    def __init__(self, every: EverySchedule) -> None:
        self.every = every
        every_us = round(every.every_seconds * _US)
        self.key = f"every:{every_us}+{round(every.offset_seconds * _US) % every_us}"

    @property
    def seconds(self) -> float:
        return float(self.every.every_seconds)

    @property
    def offset(self) -> float:
        return float(self.every.offset_seconds) % self.seconds

    def next_after(self, t: datetime) -> datetime | None:
        """Return the first aligned instant strictly after ``t`` (aware UTC)."""
        return self.every.next_after(t)


def cron_series(expression: str, timezone: str, seed: str) -> CronSeries:
    """Resolve ``H`` for ``seed`` and return the shared series of the result.

    :raises SpecError: ``field="cron"`` for a bad or never-firing expression,
        ``field="timezone"`` for an unknown zone.
    """
    return _cron(resolve(expression, seed), timezone)


def every_series(every: float, offset: float = 0.0) -> EverySeries:
    """Return the shared series of an interval (``SpecError`` on ``every``/``offset``)."""
    EverySchedule(every, offset)  # validates both
    every_us = round(every * _US)
    return _every(every_us, round(offset * _US) % every_us)


@lru_cache(maxsize=8192)
def _cron(resolved: str, timezone: str) -> CronSeries:
    return CronSeries(CronSchedule(resolved, timezone, _SEED))


@lru_cache(maxsize=1024)
def _every(every_us: int, offset_us: int) -> EverySeries:
    return EverySeries(EverySchedule(every_us / _US, offset_us / _US))


_BY_KEY: dict[str, CronSeries | EverySeries] = {}


def series_from_key(key: str) -> CronSeries | EverySeries | None:
    """Rebuild a series from its ``key``; None for a key this module did not make."""
    found = _BY_KEY.get(key)
    if found is None:
        found = _from_key(key)
        if found is not None and found.key == key:
            if len(_BY_KEY) > 8192:
                _BY_KEY.clear()
            _BY_KEY[key] = found
    return found


def _from_key(key: str) -> CronSeries | EverySeries | None:
    try:
        if key.startswith("cron:"):
            resolved, _, zone = key[5:].rpartition("|")
            return _cron(resolved, zone)
        if key.startswith("every:"):
            every_us, _, offset_us = key[6:].partition("+")
            return _every(int(every_us), int(offset_us))
    except (ValueError, ArithmeticError):
        return None
    return None
