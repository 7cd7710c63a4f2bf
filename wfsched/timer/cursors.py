"""A time-based trigger's stored cursor: the last instant it handled and the arm record that
lets a restart skip spec parsing.

An arm record is one line of text stored in the trigger's cursor: the deployment's spec hash,
a digest of the environment (version, trigger class, settings) and the fields of its
TimerSpec. It is only trusted when both hashes match what the daemon sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from wfsched.models import iso
from wfsched.schedules.series import series_from_key
from wfsched.trigger import TimerSpec

CURSOR_FIELDS = ("key", "last", "arm")
"""The members of a timer cursor (a JSON object)."""
EMPTY: Mapping[str, Any] = {}
"""The payload of a trigger without a static ``payload`` table (shared, never mutated)."""


def parse_cursor(value: Any) -> tuple[str | None, datetime | None]:
    """Return ``(schedule key, last instant)`` of a stored timer cursor."""
    if not isinstance(value, dict):
        return None, None
    last = value.get("last")
    when = _instant(last) if isinstance(last, str) else None
    key = value.get("key")
    return (key if isinstance(key, str) else None), when


@lru_cache(maxsize=4096)
def _instant(text: str) -> datetime | None:
    # Triggers of one group share their last instant: a restart parses each one once.
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def arm_record(stamp: str, env: str, kind: str, payload: Mapping[str, Any], spec: TimerSpec) -> str:
    """The compact form of an armed trigger, stored with its cursor (see ``restore``)."""
    text = json.dumps(payload, separators=(",", ":")) if payload else ""
    fields = (
        _ARM_VERSION,
        stamp,
        env,
        kind,
        repr(spec.spread),
        spec.catchup,
        repr(spec.catchup_window),
        iso(spec.start_at) or "",
        iso(spec.end_at) or "",
        text,
    )
    return "|".join(fields)


def armed_cursor(
    stamp: str, env: str, kind: str, payload: Mapping[str, Any], spec: TimerSpec
) -> dict[str, Any] | None:
    """A fresh trigger's cursor with its arm record, or None if ``restore`` could not use it."""
    if series_from_key(spec.schedule.key) is None:
        return None
    return {
        "key": spec.schedule.key,
        "last": None,
        "arm": arm_record(stamp, env, kind, payload, spec),
    }


_ARM_VERSION = "a1"


def restore(
    cursor: Any, spec_hash: str, env: Callable[[str], str | None]
) -> tuple[str, Mapping[str, Any], TimerSpec] | None:
    """Return ``(type, payload, spec)`` from a stored arm record, or None.

    The record must have been made from the deployment ``spec_hash`` in the same environment
    (``env(type)``). None means "parse the spec instead": no record, another definition, or a
    schedule key this process cannot rebuild.
    """
    if not isinstance(cursor, dict):
        return None
    arm = cursor.get("arm")
    key = cursor.get("key")
    if not isinstance(arm, str) or not isinstance(key, str):
        return None
    head = f"{_ARM_VERSION}|{spec_hash}|"
    if not arm.startswith(head):
        return None
    # Most triggers share all but the spec hash with many others: decode each variant once.
    cache_key = (key, arm[len(head) :])
    found = _RESTORED.get(cache_key)
    if found is None:
        found = _decode(key, cache_key[1])
        if found is None:
            return None
        if len(_RESTORED) > 65536:
            _RESTORED.clear()
        _RESTORED[cache_key] = found
    if found[0] != env(found[1]):
        return None
    return found[1], found[2], found[3]


_RESTORED: dict[tuple[str, str], tuple[str, str, Mapping[str, Any], TimerSpec]] = {}


def _decode(key: str, rest: str) -> tuple[str, str, Mapping[str, Any], TimerSpec] | None:
    parts = rest.split("|", 7)
    if len(parts) != 8:
        return None
    environment, kind, spread, catchup, window, start, end, payload_text = parts
    schedule = series_from_key(key)
    if schedule is None or catchup not in ("skip", "latest", "all"):
        return None
    try:
        payload = json.loads(payload_text) if payload_text else EMPTY
        spec = TimerSpec(
            schedule=schedule,
            spread=float(spread),
            catchup=catchup,  # type: ignore[arg-type]
            catchup_window=float(window),
            start_at=datetime.fromisoformat(start) if start else None,
            end_at=datetime.fromisoformat(end) if end else None,
        )
    except ValueError:
        return None
    if not isinstance(payload, Mapping):
        return None
    return environment, kind, payload, spec
