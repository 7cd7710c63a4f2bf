"""JSON text in and out of the store and over HTTP: orjson, with the standard library's
exactness where orjson would differ.

orjson is several times faster than ``json`` both ways (measured on a 1 KB webhook body:
loads 26 → 6 µs, dumps 36 → 3 µs), which matters on the ingress and dispatch paths. It
differs in two places, and both fall back to ``json``:

* it reads integers beyond 64 bits as floats, losing digits: text holding a run of 19 or more
  digits is read by ``json`` instead (a string of digits only costs the slower path);
* it refuses what it cannot write exactly (integers beyond 64 bits, non-string keys): such a
  value is written by ``json``, with ``default=str`` as before.

Datetimes and dataclasses are passed to ``default`` as ``json`` would, so stored text keeps
its shape.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Digits to "0", everything else to "x": a run of 19 digits is then a plain substring search,
# ten times cheaper than a regular expression.
_DIGITS = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))
_LONG_RUN = b"0" * 19
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """Compact JSON text; values JSON cannot hold are written with ``str``."""
    return dumpb(value).decode()


def dumpb(value: Any) -> bytes:
    """``dumps`` as UTF-8 bytes (what HTTP bodies need)."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-string key
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text exactly (integers of any size stay integers)."""
    data = text.encode() if isinstance(text, str) else text
    if data.translate(_DIGITS).find(_LONG_RUN) >= 0:  # find: see wfsched.httpjson
        return json.loads(data)
    return orjson.loads(data)
