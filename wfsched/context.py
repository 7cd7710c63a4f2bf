"""The TriggerContext the core hands each trigger, and the factory that pairs them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, cast

from wfsched.config import Settings
from wfsched.errors import WfschedError
from wfsched.locks import Lease, LockManager
from wfsched.logs import log_fields
from wfsched.metrics import TRIGGER_HEALTH
from wfsched.models import Health, NewEvent, Occurrence, Outcome, TriggerSpec, utcnow
from wfsched.occurrences import OccurrenceLog
from wfsched.plugins import Registry
from wfsched.recorder import Recorder, new_event
from wfsched.store import Store
from wfsched.trigger import RECORDABLE, BaseTrigger, FireRequest, FireResult

log = logging.getLogger("wfsched.triggers")


class _Adapter(logging.LoggerAdapter[logging.Logger]):
    """Adds the trigger's fields to every record without dropping the call's own extras."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class TriggerCtx:
    """The TriggerContext the core hands each trigger."""

    __slots__ = (
        "_health",
        "_ledger",
        "_locks",
        "_log",
        "_pending_health",
        "_recorder",
        "_settings",
        "_spec",
        "_store",
        "_workflow_id",
    )

    def __init__(
        self,
        *,
        workflow_id: str,
        spec: TriggerSpec,
        store: Store,
        recorder: Recorder,
        settings: Settings,
        locks: LockManager | None = None,
        ledger: OccurrenceLog | None = None,
    ) -> None:
        self._workflow_id = workflow_id
        self._ledger = ledger
        self._spec = spec
        self._store = store
        self._recorder = recorder
        self._settings = settings
        self._locks = locks
        self._health: tuple[Health, str | None] = ("healthy", None)
        self._log: _Adapter | None = None  # made by the first log line
        self._pending_health = False

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    @property
    def trigger_id(self) -> str:
        return self._spec.id

    @property
    def seed(self) -> str:
        return f"{self._workflow_id}/{self._spec.id}"

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._log is None:
            self._log = _Adapter(
                log,
                {
                    "workflow_id": self._workflow_id,
                    "trigger_id": self._spec.id,
                    "trigger_type": self._spec.type,
                },
            )
        return self._log

    @property
    def health(self) -> tuple[Health, str | None]:
        return self._health

    def settings(self, section: str) -> Mapping[str, Any]:
        return self._settings.sections.get(section, {})

    def new_event(self, request: FireRequest) -> NewEvent:
        return new_event(
            workflow_id=self._workflow_id,
            trigger_id=self._spec.id,
            trigger_type=self._spec.type,
            static_payload=self._spec.payload,
            payload=request.payload,
            dedupe_key=request.dedupe_key,
            fired_at=utcnow(),
            scheduled_at=request.scheduled_at,
        )

    async def fire(self, request: FireRequest) -> FireResult:
        [(event, created)] = await self._recorder.record([self.new_event(request)])
        if log.isEnabledFor(logging.INFO):  # the line's fields only when it is written
            log_fields(
                log,
                logging.INFO,
                "fired" if created else "duplicate fire ignored",
                {
                    "workflow_id": self._workflow_id,
                    "trigger_id": self._spec.id,
                    "trigger_type": self._spec.type,
                    "execution_id": event.execution_id,
                    "status": event.status,
                },
            )
        if not created:
            self.record_occurrence(
                "deduplicated",
                f"a repeat of the delivery that fired {event.execution_id}",
                execution_id=event.execution_id,
            )
        return FireResult(
            execution_id=event.execution_id,
            workflow_id=event.workflow_id,
            status=event.status,
            created=created,
        )

    async def get_cursor(self) -> Any:
        return await self._store.get_cursor(self._workflow_id, self._spec.id)

    async def set_cursor(self, value: Any, *, fence: int | None = None) -> None:
        await self._store.set_cursor(self._workflow_id, self._spec.id, value, fence=fence)

    def report_health(self, health: Health, error: str | None = None) -> None:
        if (health, error) == self._health:
            # A trigger healthy from the start has no series yet: its first report makes one.
            TRIGGER_HEALTH.labels(self._workflow_id, self._spec.id, health).set(1)
            return
        old = self._health[0]
        self._health = (health, error)
        TRIGGER_HEALTH.labels(self._workflow_id, self._spec.id, old).set(0)
        TRIGGER_HEALTH.labels(self._workflow_id, self._spec.id, health).set(1)
        level = logging.INFO if health == "healthy" else logging.WARNING
        self.log.log(level, f"trigger {health}", extra={"status": health, "error": error})
        self._pending_health = True

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
        if self._ledger is None:  # a throwaway instance (CLI views, manual fires)
            return
        self._ledger.add(
            Occurrence(
                workflow_id=self._workflow_id,
                trigger_id=self._spec.id,
                trigger_type=self._spec.type,
                at=at or utcnow(),
                outcome=cast(Outcome, outcome),  # checked against RECORDABLE above
                reason=reason,
                execution_id=execution_id,
            )
        )

    def health_unsaved(self) -> None:
        """Write the current health at the next flush even if it does not change: the store
        holds an older one (a problem reported by a previous run, since fixed)."""
        self._pending_health = True

    def lock(self, name: str, *, ttl: float = 15.0) -> AbstractAsyncContextManager[Lease]:
        if self._locks is None:
            raise WfschedError("locks are only available inside the daemon")
        return self._locks.hold(name, ttl=ttl)

    async def flush_health(self) -> None:
        """Write a changed health to the store (so the CLI's ``status`` sees it)."""
        if self._pending_health:
            self._pending_health = False
            await self._store.set_health(self._workflow_id, self._spec.id, *self._health)


def build_trigger(
    registry: Registry,
    workflow_id: str,
    spec: TriggerSpec,
    *,
    store: Store,
    recorder: Recorder,
    settings: Settings,
    locks: LockManager | None = None,
    ledger: OccurrenceLog | None = None,
) -> tuple[BaseTrigger, TriggerCtx]:
    """Instantiate a trigger with its context."""
    ctx = TriggerCtx(
        workflow_id=workflow_id,
        spec=spec,
        store=store,
        recorder=recorder,
        settings=settings,
        locks=locks,
        ledger=ledger,
    )
    return registry.get(spec.type)(spec, ctx), ctx
