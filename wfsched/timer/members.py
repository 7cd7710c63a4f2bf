"""What the timer holds: its members (one per armed trigger), the groups that share a schedule,
and the shard each member falls in."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wfsched.trigger import TimerSpec

SHARDS = 16
"""Time-based triggers fall in this many shards; with replicas, each replica fires the shards
it holds a lease on (wfsched.timer.shards)."""


def shard_of(workflow_id: str, trigger_id: str) -> int:
    """The timer shard of a trigger: stable across processes and releases."""
    return zlib.crc32(f"{workflow_id}\0{trigger_id}".encode()) % SHARDS


@dataclass(slots=True, eq=False)
class Member:
    """One trigger armed in the timer."""

    workflow_id: str
    trigger_id: str
    trigger_type: str
    payload: Mapping[str, Any]
    spec: TimerSpec
    floor: float
    """Instants at or before this timestamp are not the timer's (caught up or skipped)."""
    last: datetime | None = None
    """The last scheduled instant handled: the cursor."""
    stamp: str | None = None
    """The deployment's spec hash this member was armed from; stored with the cursor so a
    restart can re-arm it without parsing the spec (None: store no arm record)."""
    group: Group | None = None
    shard: int = -1
    """Its timer shard; computed once the timer is sharded (replicas)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.workflow_id, self.trigger_id)


@dataclass(slots=True, eq=False)
class Group:
    """Members sharing schedule, window and spread; ``nominal`` is their next instant."""

    key: tuple[Any, ...]
    spec: TimerSpec
    spread: float
    members: dict[tuple[str, str], Member] = field(default_factory=dict)
    nominal: datetime | None = None
    version: int = 0
    edits: int = 0
    """Bumped whenever a member joins or leaves (what a reader caching per group checks)."""
