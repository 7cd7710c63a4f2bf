"""JSON over HTTP for ingress triggers: a strict body parser and the ``{"error", "detail"}`` reply.

Both are public (``wfsched.parse_json``, ``wfsched.BadBody``, ``wfsched.Outbound.error``) and
used by the built-in triggers and the management API alike, so every route refuses the same
bodies with the same words.

What :func:`parse_json` accepts, every store holds and reads back as sent: PostgreSQL's jsonb
refuses ``\\u0000`` and lone surrogates, strict JSON has no NaN/Infinity, and a number beyond
the IEEE-754 double range (``1e400``) would be read as infinity and written back as ``null``.
Such bodies are refused before they reach a group commit they would fail for every request
sharing it. Integers of any size stay exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import orjson

from wfsched.errors import WfschedError

MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in a JSON body (deeper is refused, never a RecursionError)."""


class BadBody(WfschedError, ValueError):
    """A request body that cannot be used; the message says why.

    ``code`` is the ``error`` of the 400 reply (``invalid_json``, or e.g. ``invalid_body``):
    an ingress trigger answers ``Outbound.error(400, exc.code, str(exc))``. Left to propagate,
    it is a :class:`~wfsched.WfschedError` like any other: 400 ``bad_request``, same detail.
    """

    def __init__(self, message: str, code: str = "invalid_json") -> None:
        super().__init__(message)
        self.code = code


def error_body(code: str, detail: str) -> dict[str, str]:
    """The JSON body every error reply has: a stable ``error`` code and a sentence for people."""
    return {"error": code, "detail": detail}


def _constant(name: str) -> Any:
    raise BadBody(f"the JSON body contains {name}, which is not valid JSON")


def _finite(text: str) -> float:
    # Only reached on the standard library's path: orjson itself refuses these numbers.
    value = float(text)
    if math.isinf(value):
        raise BadBody(f"the JSON body contains the number {text}, beyond the range of a double")
    return value


# The body's shape in one translate: digits to "0" (a run of 19 digits becomes a cheap
# substring search), "[" and "{" to "[" (one count of the opening brackets), the rest to "x".
_SHAPE = bytes(48 if 48 <= b <= 57 else 91 if b in b"[{" else 120 for b in range(256))
_LONG_RUN = b"0" * 19
# Searches in bytes use ``find``: ``sub in data`` first tries ``sub`` as an integer (``97 in
# b"abc"``) and formats the TypeError it then drops, which costs more than the search.
# One decoder for every request: json.loads with options builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when JSON ``value`` nests deeper than ``limit`` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _unstorable(value: Any) -> str | None:
    """Name the first string PostgreSQL jsonb cannot hold (NUL, lone surrogate), if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: Iterable[str] = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            if "\x00" in text:
                return "a \\u0000 character"
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return "an unpaired surrogate escape"
    return None


def parse_json(body: bytes) -> Any:
    """Parse a JSON request body strictly; :class:`BadBody` (``invalid_json``) names the fault.

    Refused: bytes that are not UTF-8, bad syntax, an empty body, nesting deeper than
    ``MAX_JSON_DEPTH``, NaN/Infinity, numbers beyond a double (``1e400``), ``\\u0000`` and lone
    surrogates. orjson reads the common case several times faster than ``json``; the standard
    library reads bodies orjson refuses (to name the fault exactly) and bodies with a run of 19
    or more digits, whose integers orjson would turn into floats once past 64 bits."""
    shape = body.translate(_SHAPE)
    if shape.find(_LONG_RUN) < 0:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = _parse_exactly(body)
    else:
        value = _parse_exactly(body)
    # Counting brackets is C-fast; the exact (Python) depth walk only runs when it could matter.
    if shape.count(b"[") > MAX_JSON_DEPTH and too_deep(value, MAX_JSON_DEPTH):
        raise BadBody(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    # One byte is a memchr; the two-byte search costs as much as the translate above.
    if body.find(b"\\") >= 0 and body.find(b"\\u") >= 0:
        problem = _unstorable(value)
        if problem is not None:
            raise BadBody(f"the JSON body contains {problem}, which cannot be stored")
    return value


def _parse_exactly(body: bytes) -> Any:
    if not body.strip():
        raise BadBody("the body is empty; send JSON")
    try:
        return _DECODER.decode(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadBody("the JSON body is not valid UTF-8") from None
    except RecursionError:
        raise BadBody(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadBody(f"the body is not valid JSON: {exc}") from None
    except BadBody:
        raise
    except ValueError as exc:  # e.g. an integer longer than Python's int-string limit
        raise BadBody(f"the body is not usable JSON: {exc}") from None
