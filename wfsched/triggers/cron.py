"""The ``cron`` trigger: a cron expression (Jenkins ``H`` allowed) or a fixed interval.

It has no watcher of its own: ``timer()`` hands the schedule to the core's shared timer, which
fires every time-based trigger from one heap. Series are shared between triggers with the same
resolved expression and zone, so their precomputed fire windows are built once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wfsched import (
    BaseTrigger,
    CronSeries,
    EverySeries,
    Fields,
    SpecError,
    TimerSpec,
    cron_series,
    every_series,
    hookimpl,
    parse_duration,
    spread_offset,
)

FIELDS = frozenset(
    {
        "cron",
        "every",
        "offset",
        "timezone",
        "hash_seed",
        "spread",
        "start_at",
        "end_at",
        "catchup",
        "catchup_window",
    }
)
CATCHUP = ("skip", "latest", "all")
DEFAULT_WINDOW = 3600.0
MIN_EVERY = 1.0
# Validation checks syntax, ranges and "never fires" with a fixed seed; the trigger's own seed
# (its workflow and trigger id) is only known when it starts.
_VALIDATION_SEED = "wfsched/validate"


@lru_cache(maxsize=1024)
def _check_cron(expression: str, timezone: str) -> None:
    cron_series(expression, timezone, _VALIDATION_SEED)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SpecError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'",
            field="timezone",
        ) from None


def _instant_text(value: Any, field: str) -> str:
    """Normalise an ISO 8601 instant (string, or a TOML date/datetime) to ISO text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).isoformat()
    if isinstance(value, str) and value.strip():
        try:
            return datetime.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise SpecError(
        f"{value!r} is not an ISO 8601 date-time (e.g. 2026-01-31T08:00:00+01:00)", field=field
    )


def _instant(text: str | None, zone: str) -> datetime | None:
    """An instant from normalised text; a time without offset is wall-clock time in ``zone``."""
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=_zone(zone))


def _duration(config: Mapping[str, Any], key: str, default: float) -> float:
    return parse_duration(config[key], field=key) if key in config else default


class CronTrigger(BaseTrigger):
    """Fires on a cron expression or every fixed interval, through the core's shared timer."""

    type = "cron"

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        fields = Fields(config, allowed=FIELDS)
        if "cron" in config and "every" in config:
            raise SpecError("set either 'cron' or 'every', not both", field="every")
        if "cron" not in config and "every" not in config:
            raise SpecError("is required (or set 'every' for a fixed interval)", field="cron")
        out: dict[str, Any] = {}
        timezone = fields.str("timezone", None)
        if timezone is not None:
            _zone(timezone)
            out["timezone"] = timezone
        seed = fields.str("hash_seed", None)
        if seed is not None:
            out["hash_seed"] = seed
        if "cron" in config:
            expression = " ".join(fields.str("cron").split())
            if "offset" in config:
                raise SpecError("only applies to 'every'", field="offset")
            _check_cron(expression, timezone or "UTC")
            out["cron"] = expression
        else:
            every = parse_duration(config["every"], field="every")
            if every < MIN_EVERY:
                raise SpecError(f"must be at least {MIN_EVERY:g}s", field="every")
            out["every"] = every
            out["offset"] = _duration(config, "offset", 0.0)
            every_series(every, out["offset"])
        out["spread"] = _duration(config, "spread", 0.0)
        for key in ("start_at", "end_at"):
            if key in config:
                out[key] = _instant_text(config[key], key)
        start = _instant(out.get("start_at"), timezone or "UTC")
        end = _instant(out.get("end_at"), timezone or "UTC")
        if start is not None and end is not None and end <= start:
            raise SpecError("must be after start_at", field="end_at")
        out["catchup"] = fields.choice("catchup", CATCHUP, "skip")
        out["catchup_window"] = _duration(config, "catchup_window", DEFAULT_WINDOW)
        return out

    @property
    def seed(self) -> str:
        """The hash seed: ``hash_seed``, else ``<workflow id>/<trigger id>``."""
        return str(self.config.get("hash_seed") or self.ctx.seed)

    @property
    def timezone(self) -> str:
        """The trigger's zone: ``timezone``, else ``scheduler.timezone``."""
        zone = self.config.get("timezone")
        if zone is None:
            zone = self.ctx.settings("scheduler").get("timezone") or "UTC"
        return str(zone)

    def series(self) -> CronSeries | EverySeries:
        """Return the (shared) series of instants this trigger fires at."""
        if "cron" in self.config:
            return cron_series(self.config["cron"], self.timezone, self.seed)
        return every_series(float(self.config["every"]), float(self.config.get("offset", 0.0)))

    def timer(self) -> TimerSpec:
        zone = self.timezone
        config = self.config
        return TimerSpec(
            schedule=self.series(),
            spread=spread_offset(self.seed, float(config.get("spread", 0.0))),
            catchup=config.get("catchup", "skip"),
            catchup_window=float(config.get("catchup_window", DEFAULT_WINDOW)),
            start_at=_instant(config.get("start_at"), zone),
            end_at=_instant(config.get("end_at"), zone),
        )

    def describe(self) -> dict[str, Any]:
        series = self.series()
        out: dict[str, Any] = {}
        if isinstance(series, CronSeries):
            out["expression"] = self.config["cron"]
            out["resolved"] = series.resolved
        else:
            out["resolved"] = f"every {series.seconds:g}s" + (
                f" + {series.offset:g}s" if series.offset else ""
            )
        out["timezone"] = self.timezone
        out["seed"] = self.seed
        spread = float(self.config.get("spread", 0.0))
        if spread:
            out["spread_offset"] = round(spread_offset(self.seed, spread), 3)
        out["catchup"] = self.config.get("catchup", "skip")
        return out


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(CronTrigger)
