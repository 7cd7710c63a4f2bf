"""Durations written as ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1d"`` or plain seconds."""

from __future__ import annotations

import math
import re

from wfsched.errors import SpecError

_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float, *, field: str | None = None) -> float:
    """Return the seconds in ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1d"`` or a plain number.

    :raises SpecError: (a ValueError) naming ``field`` for anything else, including negative
        or non-finite values; a spec field passes its name, a config setting catches the
        ValueError and names its key itself.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise SpecError(f"{text!r} is not a duration (use e.g. 30s, 5m, 1h, 1d)", field=field)
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise SpecError(f"{text!r} is not a finite, non-negative duration", field=field)
        return float(text)
    value = "".join(text.split()).lower()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise SpecError(
                f"{text!r} is not a duration (use e.g. 30s, 5m, 1h, 1d)", field=field
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(f"{text!r} is not a finite, non-negative duration", field=field)
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds compactly (``90`` → ``"1m30s"``)."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"
