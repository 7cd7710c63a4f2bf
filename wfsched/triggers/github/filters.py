"""Filters of the ``github`` trigger: glob lists with exclusions, and what a delivery offers them.

A pattern is a case-sensitive glob (``*`` stays within one path segment, ``**`` crosses ``/``,
``?`` is one character, ``[abc]``/``[!abc]`` are classes) and also matches a value equal to it,
so ``dependabot[bot]`` works. A leading ``!`` excludes. A list matches when some value matches a
positive pattern (or there is none) and no value matches a negative one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FILTER_KEYS = ("repository", "events", "actions", "branches", "tags", "paths", "authors", "labels")
MAX_PATTERN_CHARS = 1024
_GLOB_CHARS = frozenset("*?[")
# Events whose branch is the head branch of a run or check (there is no base branch).
_HEAD_BRANCH_OBJECTS = {
    "workflow_run": "workflow_run",
    "workflow_job": "workflow_job",
    "check_suite": "check_suite",
}


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob to a regular expression; ``ValueError`` when it cannot be compiled."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            # "**/" at the start of a segment also matches zero directories ("**/*.py" → "a.py").
            if i < n and pattern[i] == "/" and (i == 2 or pattern[i - 3] == "/"):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\")
            if body.startswith("^"):
                body = "\\" + body
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid pattern: {exc}") from None


@dataclass(frozen=True, slots=True)
class PatternList:
    """A parsed filter list: positive and negative (``!``) patterns."""

    positive: tuple[tuple[str, re.Pattern[str]], ...] = ()
    negative: tuple[tuple[str, re.Pattern[str]], ...] = ()

    @classmethod
    def parse(cls, patterns: Sequence[str]) -> PatternList:
        """Parse patterns; ``ValueError`` names the bad one."""
        pos: list[tuple[str, re.Pattern[str]]] = []
        neg: list[tuple[str, re.Pattern[str]]] = []
        for raw in patterns:
            negative = raw.startswith("!")
            text = raw[1:] if negative else raw
            if not text:
                raise ValueError(f"{raw!r}: nothing after '!'")
            if len(text) > MAX_PATTERN_CHARS:
                raise ValueError(f"a pattern is longer than {MAX_PATTERN_CHARS} characters")
            (neg if negative else pos).append((text, glob_regex(text)))
        return cls(tuple(pos), tuple(neg))

    @staticmethod
    def _hit(patterns: Iterable[tuple[str, re.Pattern[str]]], value: str) -> bool:
        return any(value == text or rx.fullmatch(value) for text, rx in patterns)

    def matches(self, values: Iterable[str]) -> bool:
        """Return whether ``values`` pass: some positive hit (or none defined), no negative."""
        found = not self.positive
        for value in values:
            if self._hit(self.negative, value):
                return False
            found = found or self._hit(self.positive, value)
        return found

    def why_not(self, name: str, values: Sequence[str]) -> str | None:
        """Why ``values`` fail this list (``matches`` false), for the ledger; None if they pass."""
        shown = ", ".join(_quote(v) for v in values) or "nothing"
        for value in values:
            for text, rx in self.negative:
                if value == text or rx.fullmatch(value):
                    return f"{name}: {_quote(value)} matches the exclusion {_quote('!' + text)}"
        if self.positive and not any(self._hit(self.positive, v) for v in values):
            wanted = ", ".join(_quote(text) for text, _ in self.positive)
            return f"{name}: {shown} matches none of [{wanted}]"
        return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Facts:
    """What a delivery offers the filters; ``paths`` is None when only the API can tell."""

    event: str
    action: str | None
    repository: str | None
    ref_kind: str | None
    """``"branch"``, ``"tag"`` or None (no ref, or a ref of another kind)."""
    ref_name: str | None
    authors: tuple[str, ...]
    labels: tuple[str, ...]
    paths: tuple[str, ...] | None
    pull_number: int | None = None


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def pull_request_of(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return the delivery's pull request object (pull_request and review events)."""
    pr = body.get("pull_request")
    return pr if isinstance(pr, Mapping) and isinstance(pr.get("base"), Mapping) else None


def _ref(event: str, body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    if event == "push":
        ref = _text(body.get("ref")) or ""
        for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
            if ref.startswith(prefix):
                return kind, ref[len(prefix) :]
        return None, None
    if event in ("create", "delete"):
        ref_type = body.get("ref_type")
        name = _text(body.get("ref"))
        if ref_type in ("branch", "tag") and name:
            return str(ref_type), name
        return None, None
    pr = pull_request_of(body)
    if pr is not None:
        name = _text(_get(pr, "base", "ref"))
        return ("branch", name) if name else (None, None)
    if event == "release":
        name = _text(_get(body, "release", "tag_name"))
        return ("tag", name) if name else (None, None)
    if event == "check_run":
        name = _text(_get(body, "check_run", "check_suite", "head_branch"))
        return ("branch", name) if name else (None, None)
    if event in _HEAD_BRANCH_OBJECTS:
        name = _text(_get(body, _HEAD_BRANCH_OBJECTS[event], "head_branch"))
        return ("branch", name) if name else (None, None)
    return None, None


def _push_commits(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    commits = _dicts(body.get("commits"))
    head = body.get("head_commit")
    return [*commits, head] if isinstance(head, Mapping) else commits


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def facts_of(event: str, body: Mapping[str, Any]) -> Facts:
    """Extract the filterable values of a delivery (never raises on odd shapes)."""
    kind, name = _ref(event, body)
    authors: list[str | None] = [
        _text(_get(body, "sender", "login")),
        _text(_get(body, "pusher", "name")),
    ]
    paths: tuple[str, ...] | None = ()
    pr = pull_request_of(body)
    if event == "push":
        commits = _push_commits(body)
        for commit in commits:
            author = commit.get("author")
            authors.append(_text(_get(author, "username")) or _text(_get(author, "name")))
        paths = _unique(
            p
            for c in commits
            for key in ("added", "modified", "removed")
            for p in _list(c.get(key))
            if isinstance(p, str)
        )
    elif pr is not None:
        paths = None  # only the API lists a pull request's files
    issue = body.get("issue") if isinstance(body.get("issue"), Mapping) else pr
    labels = _unique(_text(label.get("name")) for label in _dicts(_get(issue, "labels")))
    number = _get(pr, "number") if pr is not None else None
    action = body.get("action")
    return Facts(
        event=event,
        action=action if isinstance(action, str) else None,
        repository=_text(_get(body, "repository", "full_name")),
        ref_kind=kind,
        ref_name=name,
        authors=_unique(authors),
        labels=labels,
        paths=paths,
        pull_number=number if isinstance(number, int) else None,
    )


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters of one trigger, compiled."""

    lists: Mapping[str, PatternList] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Filters:
        lists = {k: PatternList.parse(config[k]) for k in FILTER_KEYS if config.get(k)}
        lists.setdefault("events", PatternList.parse(["push"]))
        return cls(lists)

    def repositories(self) -> frozenset[str] | None:
        """The only repositories a delivery can come from to match, or None for any: no
        positive ``repository`` pattern, or one of them a glob. (Negative patterns only narrow
        the match further, and a pattern without glob characters matches itself alone.)"""
        rule = self.lists.get("repository")
        if rule is None or not rule.positive:
            return None
        names = frozenset(text for text, _ in rule.positive)
        return None if any(_GLOB_CHARS.intersection(n) for n in names) else names

    def wants_pull_files(self, facts: Facts) -> bool:
        """True when the ``paths`` filter must see a pull request's files from the API."""
        return "paths" in self.lists and facts.paths is None and facts.pull_number is not None

    def _refs_match(self, facts: Facts) -> bool:
        branches, tags = self.lists.get("branches"), self.lists.get("tags")
        if branches is None and tags is None:
            return True
        if facts.ref_name is None:
            return False
        wanted = (
            branches if facts.ref_kind == "branch" else tags if facts.ref_kind == "tag" else None
        )
        return wanted is not None and wanted.matches([facts.ref_name])

    def why_not(self, facts: Facts, paths: Sequence[str] | None = None) -> str:
        """The first filter the delivery fails, with its value (``match`` returned false)."""
        single = {"repository": facts.repository, "events": facts.event, "actions": facts.action}
        for key, value in single.items():
            rule = self.lists.get(key)
            if rule is not None:
                reason = rule.why_not(key, [value] if value else [])
                if reason:
                    return reason
        if not self._refs_match(facts):
            branches, tags = self.lists.get("branches"), self.lists.get("tags")
            if facts.ref_name is None:
                return "branches/tags: the delivery names no branch or tag"
            kind = "branches" if facts.ref_kind == "branch" else "tags"
            rule = branches if facts.ref_kind == "branch" else tags
            if rule is None:
                other = "branch" if kind == "tags" else "tag"
                return f"{kind}: not set, so the {other} filter excludes {_quote(facts.ref_name)}"
            return rule.why_not(kind, [facts.ref_name]) or f"{kind}: no match"
        for key, values in (("authors", facts.authors), ("labels", facts.labels)):
            rule = self.lists.get(key)
            if rule is not None:
                reason = rule.why_not(key, values)
                if reason:
                    return reason
        rule = self.lists.get("paths")
        known = paths if paths is not None else facts.paths
        if rule is not None and known is not None:
            return rule.why_not("paths", list(known)) or "paths: no match"
        return "no filter matched"

    def match(self, facts: Facts, paths: Sequence[str] | None = None) -> bool:
        """Return whether the delivery passes; ``paths`` overrides ``facts.paths`` (PR files).

        Without any known path list the ``paths`` filter is not applied (the caller records
        why in the event): a delivery is never dropped because GitHub could not be asked.
        """
        single = {"repository": facts.repository, "events": facts.event, "actions": facts.action}
        for key, value in single.items():
            rule = self.lists.get(key)
            if rule is not None and not rule.matches([value] if value else []):
                return False
        if not self._refs_match(facts):
            return False
        for key, values in (("authors", facts.authors), ("labels", facts.labels)):
            rule = self.lists.get(key)
            if rule is not None and not rule.matches(values):
                return False
        rule = self.lists.get("paths")
        known = paths if paths is not None else facts.paths
        return rule is None or known is None or rule.matches(known)
