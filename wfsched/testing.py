"""Test a trigger plugin without a daemon: a fake TriggerContext that keeps everything in memory.

Usage in a plugin's own tests::

    from wfsched.testing import FakeContext

    async def test_it_fires_once_per_change() -> None:
        ctx = FakeContext(settings={"http_poll": {"user_agent": "tests/1"}})
        trigger = ctx.make(HttpPollTrigger, {"url": "http://127.0.0.1:8080/x"})
        await trigger.poll_once()
        assert [f.payload["etag"] for f in ctx.fires] == ["v1"]

Occurrences a trigger reports (``ctx.record_occurrence("filtered", …)``) are in
``ctx.occurrences``. ``FakeContext`` honours the contract a real daemon keeps: a fire with a dedupe key that
already fired returns the first event with ``created = False`` (and is not appended to
``fires``), the trigger's static ``payload`` is merged under the fire's own, cursors round-trip
through JSON (so a value the store could not hold fails here too), and a fenced cursor write
from an older lease is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import anyio

from wfsched.errors import StoreError
from wfsched.models import Health, TriggerSpec
from wfsched.trigger import RECORDABLE, BaseTrigger, FireRequest, FireResult

T = TypeVar("T", bound=BaseTrigger)
__all__ = ["FakeContext", "Fired", "Recorded"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One occurrence the trigger reported (``ctx.record_occurrence``)."""

    outcome: str
    reason: str
    at: datetime | None = None
    execution_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fired:
    """One event the fake context recorded."""

    execution_id: str
    payload: Mapping[str, Any]
    dedupe_key: str | None
    scheduled_at: datetime | None


class _Lease:
    def __init__(self, fence: int) -> None:
        self.fence = fence
        self.lost = False


class FakeContext:
    """A TriggerContext for tests: fires, cursor, health and locks kept in memory."""

    def __init__(
        self,
        workflow_id: str = "wf",
        trigger_id: str = "t",
        *,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self._workflow_id = workflow_id
        self._trigger_id = trigger_id
        self._settings = {k: dict(v) for k, v in (settings or {}).items()}
        self._static = dict(payload or {})
        self.fires: list[Fired] = []
        """Every event recorded, in order (duplicates of a dedupe key are not repeated)."""
        self.health: tuple[Health, str | None] = ("healthy", None)
        self.health_reports: list[tuple[Health, str | None]] = []
        self.occurrences: list[Recorded] = []
        """Every occurrence reported (refused, filtered; deduplicated fires), in order."""
        self._by_key: dict[str, Fired] = {}
        self._cursor: str | None = None
        self._cursor_fence = 0
        self._fences: dict[str, int] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._changed = anyio.Event()
        self._log = logging.LoggerAdapter(
            logging.getLogger("wfsched.testing"),
            {"workflow_id": workflow_id, "trigger_id": trigger_id},
        )

    def make(self, cls: type[T], config: Mapping[str, Any], *, enabled: bool = True) -> T:
        """Validate ``config`` as a deploy would and build the trigger on this context."""
        spec = TriggerSpec(
            id=self._trigger_id,
            type=cls.type,
            enabled=enabled,
            payload=self._static,
            config=cls.validate(config),
        )
        return cls(spec, self)

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    @property
    def trigger_id(self) -> str:
        return self._trigger_id

    @property
    def seed(self) -> str:
        return f"{self._workflow_id}/{self._trigger_id}"

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._log

    def settings(self, section: str) -> Mapping[str, Any]:
        return self._settings.get(section, {})

    async def fire(self, request: FireRequest) -> FireResult:
        key = request.dedupe_key
        if key is not None and key in self._by_key:
            first = self._by_key[key]
            self.record_occurrence(
                "deduplicated",
                f"a repeat of the delivery that fired {first.execution_id}",
                execution_id=first.execution_id,
            )
            return FireResult(
                execution_id=first.execution_id,
                workflow_id=self._workflow_id,
                status="pending",
                created=False,
            )
        # The payload must survive the store's JSON round trip unchanged, as in the daemon.
        payload = json.loads(json.dumps({**self._static, **request.payload}, allow_nan=False))
        fired = Fired(
            execution_id=f"test-{len(self.fires) + 1:06d}",
            payload=payload,
            dedupe_key=key,
            scheduled_at=request.scheduled_at,
        )
        self.fires.append(fired)
        if key is not None:
            self._by_key[key] = fired
        self._notify()
        return FireResult(
            execution_id=fired.execution_id,
            workflow_id=self._workflow_id,
            status="pending",
            created=True,
        )

    async def get_cursor(self) -> Any:
        return None if self._cursor is None else json.loads(self._cursor)

    async def set_cursor(self, value: Any, *, fence: int | None = None) -> None:
        if fence is not None:
            if fence < self._cursor_fence:
                raise StoreError(f"cursor write with fence {fence} refused: {self._cursor_fence}")
            self._cursor_fence = fence
        self._cursor = json.dumps(value, allow_nan=False)

    def report_health(self, health: Health, error: str | None = None) -> None:
        self.health = (health, error)
        self.health_reports.append(self.health)
        self._notify()

    def record_occurrence(
        self,
        outcome: str,
        reason: str,
        *,
        at: datetime | None = None,
        execution_id: str | None = None,
    ) -> None:
        if outcome not in RECORDABLE:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(RECORDABLE)}")
        self.occurrences.append(Recorded(outcome, reason, at, execution_id))
        self._notify()

    def lock(self, name: str, *, ttl: float = 15.0) -> AbstractAsyncContextManager[_Lease]:
        return self._hold(name)

    @asynccontextmanager
    async def _hold(self, name: str) -> AsyncIterator[_Lease]:
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            self._fences[name] = self._fences.get(name, 0) + 1
            yield _Lease(self._fences[name])

    async def wait_for_fires(self, count: int, *, timeout: float = 5.0) -> list[Fired]:
        """Wait until at least ``count`` events were fired (a running trigger's ``run``)."""
        with anyio.fail_after(timeout):
            while len(self.fires) < count:
                await self._wait()
        return self.fires

    async def wait_for_health(self, health: Health, *, timeout: float = 5.0) -> str | None:
        """Wait until the trigger reports ``health``; return the error it gave with it."""
        with anyio.fail_after(timeout):
            while self.health[0] != health:
                await self._wait()
        return self.health[1]

    async def _wait(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
