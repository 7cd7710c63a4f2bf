"""wfsched: durable workflow triggers. This module is the public plugin API."""

from __future__ import annotations

from wfsched.errors import AuthError, NotFound, SpecError, WfschedError
from wfsched.fields import Fields
from wfsched.hookspecs import hookimpl
from wfsched.httpjson import BadBody, parse_json
from wfsched.models import Health, TriggerSpec
from wfsched.schedules.cron import spread_offset
from wfsched.schedules.durations import parse_duration
from wfsched.schedules.series import CronSeries, EverySeries, cron_series, every_series
from wfsched.secretrefs import is_reference, reference_problem, resolve_secret
from wfsched.sections import Setting
from wfsched.trigger import (
    BaseTrigger,
    CatchUp,
    Check,
    FireRequest,
    FireResult,
    Inbound,
    Lease,
    Outbound,
    Schedule,
    TimerSpec,
    TriggerContext,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BadBody",
    "BaseTrigger",
    "CatchUp",
    "Check",
    "CronSeries",
    "EverySeries",
    "Fields",
    "FireRequest",
    "FireResult",
    "Health",
    "Inbound",
    "Lease",
    "NotFound",
    "Outbound",
    "Schedule",
    "Setting",
    "SpecError",
    "TimerSpec",
    "TriggerContext",
    "TriggerSpec",
    "WfschedError",
    "__version__",
    "cron_series",
    "every_series",
    "hookimpl",
    "is_reference",
    "parse_duration",
    "parse_json",
    "reference_problem",
    "resolve_secret",
    "spread_offset",
]
