"""Jenkins ``H`` resolution, bit-exact: the same seed string gives the same minutes as Jenkins.

Jenkins seeds one ``java.util.Random`` from an MD5 of the job's full name and draws left to
right (``hudson/scheduler/Hash.java``, ``BaseParser.java``, ``CrontabParser.g4``); this module
reproduces that, including ``java.util.Random`` itself, as a pure function.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from wfsched.errors import SpecError

__all__ = ["jenkins_random", "resolve", "resolve_with"]


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


def jenkins_random(seed: str) -> _JavaRandom:
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
    return resolve_with(expression, jenkins_random(seed).next_int)[0]


def resolve_with(expression: str, draw: Callable[[int], int]) -> tuple[str, tuple[int, ...]]:
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
