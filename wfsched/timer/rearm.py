"""Read deployments in pages for reconciliation: heads without documents, plus the arm records
the timer stores with each time-based trigger's cursor.

With those, a daemon holding many thousand schedules re-arms them at start without parsing a
single spec, and a later reconcile only parses the deployments that changed. ``deploy`` writes
the first arm records (``arm_cursors``), the timer keeps them current. The pages come from
``Store.scan_deployed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wfsched import __version__
from wfsched.config import Settings
from wfsched.context import build_trigger
from wfsched.models import WorkflowSpec
from wfsched.plugins import Registry
from wfsched.recorder import Recorder
from wfsched.store import Store
from wfsched.timer.cursors import armed_cursor

PAGE = 2000


@dataclass(slots=True, eq=False)
class Head:
    """A deployment without its document; ``triggers`` holds ``(id, type, cursor, health)``."""

    workflow_id: str
    spec_hash: str
    state: str
    active_since: datetime
    triggers: list[tuple[str, str, Any, str]] = field(default_factory=list)


async def scan(
    store: Store, *, cursors: Sequence[str] = (), changed_since: int | None = None
) -> AsyncIterator[list[Head]]:
    """Yield every deployment (with ``changed_since``, every one changed at a later store
    revision), a page at a time, with the top-level ``cursors`` fields of each trigger's
    cursor (a dict, or None when the trigger has no cursor)."""
    names = tuple(cursors)
    after = ""
    # Trigger ids, types and states repeat across deployments: keep one string of each, as
    # the armed members hold them for the daemon's life. Deployments made together share
    # their active_since: each distinct text is parsed once.
    common: dict[str, str] = {}
    instants: dict[Any, datetime] = {}
    while True:
        rows = await store.scan_deployed(
            after, PAGE, cursor_fields=names, changed_since=changed_since
        )
        if not rows:
            return
        heads: list[Head] = []
        head = None
        for row in rows:
            workflow_id = row[0]
            if head is None or head.workflow_id != workflow_id:
                since = instants.get(row[3])
                if since is None:
                    since = instants[row[3]] = _since(row[3])
                head = Head(workflow_id, row[1], common.setdefault(row[2], row[2]), since)
                heads.append(head)
            trigger_id = row[4]
            if trigger_id is not None:
                values = row[7:]
                cursor = dict(zip(names, values, strict=True)) if any(values) else None
                head.triggers.append(
                    (
                        common.setdefault(trigger_id, trigger_id),
                        common.setdefault(row[5], row[5]),
                        cursor,
                        row[6],
                    )
                )
        after = heads[-1].workflow_id
        yield heads


def _since(value: Any) -> datetime:
    # A store's scan gives datetimes or the ISO 8601 text it stores them as.
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


CORE_SECTIONS = frozenset({"server", "store", "locks", "dispatch", "notify", "log", "plugins"})
"""Settings no trigger's schedule can reasonably depend on (ports, URLs, log format…)."""


def environment(settings: Settings, cls: type) -> str:
    """Digest of what besides its spec shapes a trigger's timer: the wfsched version, the
    trigger class and the non-secret settings outside CORE_SECTIONS (``scheduler.timezone``
    and plugin sections); secrets never enter the digest."""
    values = sorted(
        (s.name, settings.get(s.name))
        for s in settings.declared
        if s.kind != "secret" and s.section not in CORE_SECTIONS
    )
    text = json.dumps([__version__, cls.__module__, cls.__qualname__, values], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def timer_only(registry: Registry, kind: str) -> bool:
    """True when triggers of type ``kind`` need nothing but the shared timer (no watcher, no
    HTTP ingress): those are armed as compact timer members, without an instance."""
    cls = registry.get(kind) if kind in registry else None
    return cls is not None and not cls.has_run and cls.ingress is None


def arm_cursors(
    registry: Registry,
    settings: Settings,
    specs: Sequence[WorkflowSpec],
    *,
    store: Store,
    recorder: Recorder,
) -> list[tuple[str, str, Any]]:
    """Cursors holding the arm records of newly deployed workflows made only of timer
    triggers, so a daemon arms them without parsing (``deploy`` writes them)."""
    rows: list[tuple[str, str, Any]] = []
    envs: dict[str, str] = {}
    for spec in specs:
        found: list[tuple[str, str, Any]] = []
        for t in spec.triggers:
            cls = registry.get(t.type)
            if not t.enabled or not timer_only(registry, t.type):
                break
            try:
                trigger, _ = build_trigger(
                    registry, spec.id, t, store=store, recorder=recorder, settings=settings
                )
                timer = trigger.timer()
            except Exception:  # noqa: BLE001 - the daemon reports it when it starts the trigger
                break
            env = envs.get(t.type) or envs.setdefault(t.type, environment(settings, cls))
            cursor = (
                None
                if timer is None
                else armed_cursor(spec.spec_hash, env, t.type, dict(t.payload), timer)
            )
            if cursor is None:
                break
            found.append((spec.id, t.id, cursor))
        else:
            rows.extend(found)
    return rows
