"""wfsched: durable workflow triggers. This module is the public plugin API."""

from __future__ import annotations

from wfsched.errors import AuthError, ConfigError, NotFound, SpecError, WfschedError
from wfsched.fields import Fields
from wfsched.hookspecs import hookimpl
from wfsched.httpjson import BadBody, parse_json
from wfsched.models import Health, TriggerEvent, TriggerSpec
from wfsched.routing import SharedTriggers
from wfsched.schedules.cron import spread_offset
from wfsched.schedules.durations import parse_duration
from wfsched.schedules.series import CronSeries, EverySeries, cron_series, every_series
from wfsched.secretrefs import is_reference, reference_problem, resolve_secret
from wfsched.sections import Setting
from wfsched.target import (
    DispatchError,
    DispatchTarget,
    Sender,
    TargetContext,
    event_document,
    http_failure,
    parse_retry_after,
)
from wfsched.tracing import traceparent
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
    "ConfigError",
    "CronSeries",
    "DispatchError",
    "DispatchTarget",
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
    "Sender",
    "Setting",
    "SharedTriggers",
    "SpecError",
    "TargetContext",
    "TimerSpec",
    "TriggerContext",
    "TriggerEvent",
    "TriggerSpec",
    "WfschedError",
    "__version__",
    "cron_series",
    "event_document",
    "every_series",
    "hookimpl",
    "http_failure",
    "is_reference",
    "parse_duration",
    "parse_json",
    "parse_retry_after",
    "reference_problem",
    "resolve_secret",
    "spread_offset",
    "traceparent",
]
