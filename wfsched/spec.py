"""Parse and validate workflow spec files; every error names the file, trigger and field."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Protocol

from wfsched.errors import SpecError, WfschedError
from wfsched.fields import Fields
from wfsched.models import COMMON_TRIGGER_FIELDS, TriggerSpec, WorkflowSpec
from wfsched.target import DispatchTarget
from wfsched.trigger import BaseTrigger

ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
WORKFLOW_FIELDS = frozenset({"id", "name", "description", "triggers", "dispatch"})


class TypeLookup(Protocol):
    def get(self, name: str) -> type[BaseTrigger]: ...

    def target(self, name: str) -> type[DispatchTarget]: ...


class InvalidSpecs(WfschedError):
    """One or more spec files are invalid; nothing was deployed."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def canonical_json(document: Mapping[str, Any]) -> str:
    """Serialise a document deterministically (sorted keys, no spaces)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=_json_default)


def spec_hash(document: Mapping[str, Any]) -> str:
    """Return the sha256 of a document's canonical JSON."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def _no_nulls(value: Any, path: str) -> None:
    """Refuse what no store can hold as written: null, and text with a lone surrogate or NUL."""
    if value is None:
        raise SpecError("null is not allowed (omit the field instead)", field=path or None)
    if isinstance(value, str):
        _storable_text(value, path)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            key = str(k)
            _storable_text(key, path or key)
            _no_nulls(v, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_nulls(v, f"{path}[{i}]")


def _storable_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise SpecError("NUL characters are not allowed", field=path or None)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(
            "contains a lone surrogate (invalid Unicode, e.g. a \\ud800 escape)", field=path or None
        ) from None


def read_document(path: Path) -> dict[str, Any]:
    """Read one TOML or JSON spec file into a dict; SpecError names the file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise SpecError("not valid UTF-8", source=source) from None
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"invalid JSON: {exc}", source=source) from None
    elif path.suffix == ".toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"invalid TOML: {exc}", source=source) from None
    else:
        raise SpecError("spec files must end in .toml or .json", source=source)
    if not isinstance(doc, dict):
        raise SpecError("a spec must be a table/object at the top level", source=source)
    return doc


def parse_spec(document: Mapping[str, Any], types: TypeLookup, *, source: str = "") -> WorkflowSpec:
    """Validate a spec document with the owning trigger types; return the WorkflowSpec."""
    try:
        return _parse(document, types, source)
    except SpecError as exc:
        raise exc.located(source=source or exc.source) from None


def _parse(document: Mapping[str, Any], types: TypeLookup, source: str) -> WorkflowSpec:
    errors = spec_errors(document, types)
    if errors:
        raise errors[0]
    return _build(document, types, source)


def spec_errors(document: Mapping[str, Any], types: TypeLookup) -> list[SpecError]:
    """Every error of a spec document: the workflow's first, then each trigger's first."""
    errors: list[SpecError] = []
    try:
        _no_nulls(document, "")
        _top(document)
    except SpecError as exc:
        return [exc]
    seen: set[str] = set()
    for index, table in enumerate(document.get("triggers", [])):
        label = str(table.get("id") or f"#{index + 1}")
        try:
            seen.add(_parse_trigger(table, types, seen).id)
        except SpecError as exc:
            errors.append(exc.located(trigger=label))
    return errors


def _top(document: Mapping[str, Any]) -> tuple[str, str]:
    """The workflow's id and name, validated with its other top-level fields."""
    top = Fields(document, allowed=WORKFLOW_FIELDS)
    workflow_id = top.str("id")
    if not ID_RE.match(workflow_id):
        raise SpecError("must be 1-128 characters of A-Z a-z 0-9 _ . -", field="id")
    name = top.str("name", workflow_id)
    top.str("description", "")
    raw_triggers = document.get("triggers", [])
    if not isinstance(raw_triggers, list) or not all(isinstance(t, Mapping) for t in raw_triggers):
        raise SpecError("must be a list of tables ([[triggers]])", field="triggers")
    return workflow_id, name


def _build(document: Mapping[str, Any], types: TypeLookup, source: str) -> WorkflowSpec:
    workflow_id, name = _top(document)
    triggers: list[TriggerSpec] = []
    seen: set[str] = set()
    for table in document.get("triggers", []):
        trigger = _parse_trigger(table, types, seen)
        seen.add(trigger.id)
        triggers.append(trigger)
    return WorkflowSpec(
        id=workflow_id,
        name=name,
        triggers=tuple(triggers),
        dispatch=parse_dispatch(document.get("dispatch"), types),
        document=dict(document),
        spec_hash=spec_hash(document),
        source=source,
    )


def parse_dispatch(table: Any, types: TypeLookup) -> dict[str, Any] | None:
    """Validate a workflow's ``[dispatch]`` table with its target: ``{"mode", **fields}``
    normalised, or None without one. Errors name ``dispatch.<field>``."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise SpecError("must be a table ([dispatch])", field="dispatch")
    mode = table.get("mode")
    if not isinstance(mode, str) or not mode:
        raise SpecError("is required in a [dispatch] table", field="dispatch.mode")
    try:
        target = types.target(mode)
        options = target.validate({k: v for k, v in table.items() if k != "mode"})
    except SpecError as exc:
        raise exc.located(prefix="dispatch") from None
    return {"mode": mode, **options}


def default_trigger_id(type_name: str, seen: Container[str]) -> str:
    """The id of a trigger table that gives none: its type, or ``<type>-2``, ``<type>-3``, …
    when the ids ``seen`` before it in the spec hold that already."""
    trigger_id, n = type_name, 2
    while trigger_id in seen:
        trigger_id, n = f"{type_name}-{n}", n + 1
    return trigger_id


def _parse_trigger(table: Mapping[str, Any], types: TypeLookup, seen: set[str]) -> TriggerSpec:
    type_name = table.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise SpecError("is required in every trigger", field="type")
    cls = types.get(type_name)
    common = Fields(
        {k: v for k, v in table.items() if k in COMMON_TRIGGER_FIELDS},
        allowed=COMMON_TRIGGER_FIELDS,
    )
    trigger_id = table.get("id")
    if trigger_id is None:
        trigger_id = default_trigger_id(type_name, seen)
    elif not isinstance(trigger_id, str) or not ID_RE.match(trigger_id):
        raise SpecError("must be 1-128 characters of A-Z a-z 0-9 _ . -", field="id")
    elif trigger_id in seen:
        raise SpecError(f"duplicate trigger id {trigger_id!r}", field="id")
    enabled = common.bool("enabled", True)
    payload = common.table_("payload", {})
    config = {k: v for k, v in table.items() if k not in COMMON_TRIGGER_FIELDS}
    normalised = cls.validate(config)
    return TriggerSpec(
        id=trigger_id, type=type_name, enabled=enabled, payload=dict(payload), config=normalised
    )


def refuse_host_secrets(spec: WorkflowSpec, types: TypeLookup, *, source: str = "") -> None:
    """Raise InvalidSpecs when a spec from the HTTP API reaches for the host's secrets.

    Each trigger type says which of its fields are secrets (``env:``/``file:`` references are
    refused there) and what else an untrusted caller may not ask for; other string fields, such
    as a payload that happens to start with ``env:``, are data and stay accepted.
    """
    for index, trigger in enumerate(spec.triggers):
        problems = types.get(trigger.type).untrusted_problems(trigger.config)
        if problems:
            label = str(spec.document["triggers"][index].get("id") or f"#{index + 1}")
            raise InvalidSpecs([problems[0].located(source=source, trigger=label)])


def refuse_untrusted_dispatch(
    spec: WorkflowSpec,
    types: TypeLookup,
    settings: Mapping[str, Mapping[str, Any]],
    *,
    source: str = "",
) -> None:
    """Raise InvalidSpecs when a spec from the HTTP API has a ``[dispatch]`` table its target
    does not accept from such a caller (``DispatchTarget.untrusted_problems``)."""
    if spec.dispatch is None:
        return
    options = {k: v for k, v in spec.dispatch.items() if k != "mode"}
    try:
        problems = types.target(spec.dispatch["mode"]).untrusted_problems(options, settings)
    except SpecError as exc:  # e.g. a setting the check needs does not parse
        problems = [exc]
    except WfschedError as exc:
        problems = [SpecError(str(exc))]
    if problems:
        raise InvalidSpecs([problems[0].located(source=source, prefix="dispatch")])


def spec_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their ``*.toml``/``*.json`` files, sorted."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix in (".toml", ".json") and p.is_file()
            )
            if not found:
                raise InvalidSpecs([SpecError("no *.toml or *.json files", source=str(path))])
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise InvalidSpecs([SpecError("no such file or directory", source=str(path))])
    return files


def load_specs(paths: Iterable[str | Path], types: TypeLookup) -> list[WorkflowSpec]:
    """Load and validate every spec; raise InvalidSpecs listing every error, or return all."""
    documents: list[tuple[str, Mapping[str, Any]]] = []
    errors: list[SpecError] = []
    for path in spec_files(paths):
        try:
            documents.append((str(path), read_document(path)))
        except SpecError as exc:
            errors.append(exc.located(source=exc.source or str(path)))
    try:
        specs = parse_documents(documents, types)
    except InvalidSpecs as exc:
        errors.extend(exc.errors)
    if errors:
        raise InvalidSpecs(errors)
    return specs


def parse_documents(
    documents: Iterable[tuple[str, Mapping[str, Any]]], types: TypeLookup
) -> list[WorkflowSpec]:
    """Validate ``(source, document)`` pairs as one deployment: every error of every document
    (each trigger's, not only a file's first) and ids defined twice, or all the specs."""
    specs: list[WorkflowSpec] = []
    errors: list[SpecError] = []
    ids: dict[str, str] = {}
    for source, document in documents:
        found = spec_errors(document, types)
        if found:
            errors.extend(e.located(source=e.source or source) for e in found)
            continue
        try:
            spec = _build(document, types, source)
        except SpecError as exc:  # the [dispatch] table, checked by its target
            errors.append(exc.located(source=exc.source or source))
            continue
        if spec.id in ids:
            errors.append(
                SpecError(
                    f"workflow id {spec.id!r} is also defined in {ids[spec.id]}",
                    field="id",
                    source=source,
                )
            )
            continue
        ids[spec.id] = source
        specs.append(spec)
    if errors:
        raise InvalidSpecs(errors)
    return specs
