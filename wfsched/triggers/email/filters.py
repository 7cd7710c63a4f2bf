"""Message filters of the ``email`` trigger: case-insensitive globs or ``re:`` patterns.

Every filter is matched on the client. Where a pattern implies a literal piece of text, the
same piece narrows the server-side ``UID SEARCH`` too, so fewer messages are downloaded; the
server's substring search is only ever a necessary condition, never the decision.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wfsched import Fields, SpecError

TEXT_FIELDS = ("from", "to", "subject", "body")
FILTER_FIELDS = frozenset({*TEXT_FIELDS, "has_attachments"})
# IMAP SEARCH keys per filter; `to` also looks at Cc, as a human reading "sent to" would.
_SEARCH_KEYS = {"from": ("FROM",), "to": ("TO", "CC"), "subject": ("SUBJECT",), "body": ("BODY",)}
_WILDCARDS = re.compile(r"\*|\?|\[[^\]]*\]")
_SAFE_FRAGMENT = re.compile(r"^[\x20-\x7e]{3,}$")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One glob or ``re:`` pattern as written, compiled."""

    text: str
    regex: re.Pattern[str]
    glob: bool
    fragment: str | None
    """A literal every match contains (server-side narrowing), or None."""

    def matches(self, value: str) -> bool:
        if self.glob:
            return self.regex.match(value) is not None
        return self.regex.search(value) is not None


def compile_pattern(text: str, field_name: str) -> Pattern:
    """Compile a glob (whole-value, case-insensitive) or ``re:REGEX`` (search, case-insensitive)."""
    if text.startswith("re:"):
        try:
            regex = re.compile(text[3:], re.IGNORECASE | re.DOTALL)
        except re.error as exc:
            raise SpecError(
                f"invalid regular expression {text[3:]!r}: {exc}", field=field_name
            ) from None
        return Pattern(text, regex, glob=False, fragment=None)
    regex = re.compile(fnmatch.translate(text), re.IGNORECASE | re.DOTALL)
    pieces = [p for p in _WILDCARDS.split(text) if p]
    best = max(pieces, key=len, default="")
    safe = _SAFE_FRAGMENT.match(best) and '"' not in best and "\\" not in best
    return Pattern(text, regex, glob=True, fragment=best if safe else None)


@dataclass(frozen=True, slots=True)
class Candidate:
    """What filters look at in one parsed message."""

    sender: Sequence[str]
    recipients: Sequence[str]
    subject: str
    body: str
    has_attachments: bool


@dataclass(frozen=True, slots=True)
class Filters:
    """All filters of a trigger; a message passes when every given filter matches."""

    patterns: Mapping[str, tuple[Pattern, ...]] = field(default_factory=dict)
    has_attachments: bool | None = None

    def matches(self, message: Candidate) -> bool:
        """Return whether ``message`` passes (a list of patterns passes when any matches)."""
        values: dict[str, Sequence[str]] = {
            "from": message.sender,
            "to": message.recipients,
            "subject": [message.subject],
            "body": [message.body],
        }
        for name, patterns in self.patterns.items():
            if not any(p.matches(v) for p in patterns for v in values[name]):
                return False
        return self.has_attachments is None or self.has_attachments == message.has_attachments

    def why_not(self, message: Candidate) -> str | None:
        """The first filter ``message`` fails, with its value (None: it passes)."""
        values: dict[str, Sequence[str]] = {
            "from": message.sender,
            "to": message.recipients,
            "subject": [message.subject],
            "body": [message.body],
        }
        for name, patterns in self.patterns.items():
            if not any(p.matches(v) for p in patterns for v in values[name]):
                wanted = ", ".join(repr(p.text) for p in patterns)
                shown = values[name] if name != "body" else ["(the body)"]
                found = ", ".join(repr(v[:200]) for v in shown) or "nothing"
                return f"{name}: {found} matches none of [{wanted}]"
        if self.has_attachments is not None and self.has_attachments != message.has_attachments:
            return (
                f"has_attachments: the message has {'some' if message.has_attachments else 'none'}"
            )
        return None

    def search_criteria(self) -> str:
        """Return IMAP SEARCH keys that every matching message satisfies ("" when none)."""
        parts = []
        for name, patterns in self.patterns.items():
            if not patterns or any(p.fragment is None for p in patterns):
                continue
            alternatives = [f'{key} "{p.fragment}"' for p in patterns for key in _SEARCH_KEYS[name]]
            parts.append(_any_of(alternatives))
        return " ".join(parts)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: [p.text for p in v] for k, v in self.patterns.items()}
        if self.has_attachments is not None:
            out["has_attachments"] = self.has_attachments
        return out


def _any_of(items: list[str]) -> str:
    # IMAP OR takes exactly two search keys; an OR is itself one: OR a OR b c.
    return items[0] if len(items) == 1 else f"OR {items[0]} {_any_of(items[1:])}"


def compile_filters(table: Mapping[str, Any]) -> Filters:
    """Validate and compile a ``filters`` table; errors name ``filters.<key>``."""
    Fields(table, allowed=FILTER_FIELDS, prefix="filters.")
    patterns: dict[str, tuple[Pattern, ...]] = {}
    has_attachments: bool | None = None
    for key, value in table.items():
        name = f"filters.{key}"
        if key == "has_attachments":
            if not isinstance(value, bool):
                raise SpecError("must be true or false", field=name)
            has_attachments = value
        else:
            items = [value] if isinstance(value, str) else value
            if (
                not isinstance(items, list)
                or not items
                or not all(isinstance(v, str) and v for v in items)
            ):
                raise SpecError("must be a pattern or a list of patterns", field=name)
            patterns[key] = tuple(compile_pattern(v, name) for v in items)
    return Filters(patterns=patterns, has_attachments=has_attachments)
