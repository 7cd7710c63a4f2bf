"""The trigger contract: what a trigger type implements and what the core gives it.

A trigger never talks to a workflow engine. It asks the core to *fire*; the core records
the event durably under its dedupe key (a repeated fire is a no-op) and dispatches it later.

The values exchanged per request and per fire (:class:`Inbound`, :class:`Outbound`,
:class:`FireRequest`, :class:`FireResult`) are read-only by contract, not frozen: a frozen
dataclass costs twice as much to create, and the webhook path makes one of each per request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from wfsched.errors import NotFound, SpecError
from wfsched.httpjson import error_body
from wfsched.models import Health, TriggerSpec
from wfsched.secretrefs import api_refusals

if TYPE_CHECKING:
    from wfsched.routing import SharedTriggers

CatchUp = Literal["skip", "latest", "all"]


@dataclass(kw_only=True, slots=True)
class FireRequest:
    """Ask the core to record one event.

    :param dedupe_key: identifies the occurrence within the workflow; a second fire with the
        same key returns the first event instead of recording another. ``None`` means unique.
    :param payload: the trigger's payload; the trigger's static ``payload`` table is merged in.
    :param scheduled_at: the nominal instant of a time-based fire.
    """

    payload: Mapping[str, Any] = field(default_factory=dict)
    dedupe_key: str | None = None
    scheduled_at: datetime | None = None


@dataclass(kw_only=True, slots=True)
class FireResult:
    """The recorded event: ``created`` is false when the dedupe key had already fired."""

    execution_id: str
    workflow_id: str
    status: str
    created: bool


class Schedule(Protocol):
    """A time series of fire instants; schedules with equal ``key`` are computed once."""

    @property
    def key(self) -> str: ...

    def next_after(self, t: datetime) -> datetime | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerSpec:
    """What a time-based trigger hands to the core's shared timer."""

    schedule: Schedule
    spread: float = 0.0
    """Seconds each fire is delayed by (already a stable per-trigger value)."""
    catchup: CatchUp = "skip"
    catchup_window: float = 3600.0
    start_at: datetime | None = None
    end_at: datetime | None = None


@dataclass(kw_only=True, slots=True)
class Inbound:
    """An HTTP request handed to an ingress trigger, body already read within its limit."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Lower-case names; repeated headers joined with ``", "``."""
    raw_headers: Sequence[tuple[str, str]]
    body: bytes
    client: str | None = None


@dataclass(kw_only=True, slots=True)
class Outbound:
    """The HTTP answer of an ingress trigger: JSON body, status, extra headers."""

    status: int
    body: Mapping[str, Any] | Sequence[Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def error(
        cls, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> Outbound:
        """An error reply shaped like every route's: ``{"error": code, "detail": detail}``.

        ``code`` is a stable token clients may branch on (``unauthorized``, ``bad_request``);
        ``detail`` is one sentence for people, naming the header or field at fault.
        """
        return cls(status=status, body=error_body(code, detail), headers=headers or {})


@dataclass(frozen=True, slots=True)
class Check:
    """A connection ``wfsched check`` tries for a trigger type (see :meth:`BaseTrigger.checks`).

    ``probe`` returns what answered (``"mail.example.com:993 reachable"``) or raises: an
    ``OSError``, ``ssl.SSLError``, ``ValueError`` or ``WfschedError`` is shown as the failure.
    It is given 10 seconds.
    """

    name: str
    probe: Callable[[], Awaitable[str]]


RECORDABLE = ("refused", "filtered", "deduplicated")
"""The outcomes a trigger reports itself (``ctx.record_occurrence``); the core knows the others."""


class Lease(Protocol):
    """A held lock; ``fence`` grows with every grant so stale holders can be refused."""

    @property
    def fence(self) -> int: ...

    @property
    def lost(self) -> bool: ...


class TriggerContext(Protocol):
    """What the core gives a running trigger."""

    @property
    def workflow_id(self) -> str: ...

    @property
    def trigger_id(self) -> str: ...

    @property
    def seed(self) -> str:
        """The default hash seed, ``<workflow id>/<trigger id>``."""
        ...

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]: ...

    def settings(self, section: str) -> Mapping[str, Any]:
        """Return a config section as plain values: the plugin's own (``register_settings``,
        every key present, defaults filled in; secrets still ``env:``/``file:`` references)
        or a core one."""
        ...

    async def fire(self, request: FireRequest) -> FireResult:
        """Record one event durably; return when it is committed."""
        ...

    async def get_cursor(self) -> Any:
        """Return the JSON value this trigger last stored, or None."""
        ...

    async def set_cursor(self, value: Any, *, fence: int | None = None) -> None:
        """Store a JSON value; with ``fence``, refused (StoreError) if a newer fence wrote."""
        ...

    def report_health(self, health: Health, error: str | None = None) -> None:
        """Tell the operator how this trigger is doing (status, /health, metrics)."""
        ...

    def lock(self, name: str, *, ttl: float = 15.0) -> AbstractAsyncContextManager[Lease]:
        """Hold a named lock across replicas, renewed while held."""
        ...

    def record_occurrence(
        self,
        outcome: str,
        reason: str,
        *,
        at: datetime | None = None,
        execution_id: str | None = None,
    ) -> None:
        """Tell ``wfsched explain`` about a delivery that made no event.

        ``outcome`` is ``"refused"`` (``reason`` names the HTTP status or the check that
        failed, e.g. ``"401 unauthorized: signature does not match"``) or ``"filtered"``
        (``reason`` names the filter and the value, e.g.
        ``'branches: "feature/x" matches none of ["main"]'``); ``"deduplicated"`` is recorded
        by the core for a repeated dedupe key. ``at`` defaults to now. It returns at once:
        the entry is counted and written in the background with the next batch, so it costs
        a request nothing it would wait for. Never put a secret in ``reason``.

        Example::

            if not self.matches(item):
                self.ctx.record_occurrence("filtered", f"status: {item.status!r} is not 'done'")
        """
        ...


class BaseTrigger:
    """Base of every trigger type, built-in or third-party.

    Subclasses set ``type`` and override what applies: ``validate`` (deploy time),
    ``run`` (a long-running watcher), ``timer`` (driven by the core's shared timer),
    ``receive``/``receive_shared`` (HTTP ingress) and ``invoke`` (manual fires).
    """

    type: ClassVar[str]
    ingress: ClassVar[str | None] = None
    """``"workflow"``: served at ``/api/v1/public/webhook/workflow/{id}``; another name ``X``:
    one route ``/api/v1/public/webhooks/X`` shared by every trigger of the type."""
    has_run: ClassVar[bool] = False
    """True when ``run`` is a long-running watcher the daemon must start."""

    def __init__(self, spec: TriggerSpec, ctx: TriggerContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.config = spec.config

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check the type-specific fields and return them normalised.

        Raise :class:`~wfsched.errors.SpecError` with ``field`` set; unknown keys are errors.
        """
        return dict(config)

    @classmethod
    def warnings(cls, config: Mapping[str, Any]) -> list[str]:
        """Return advice shown by ``deploy`` and ``check`` (e.g. a public webhook without auth)."""
        return []

    @classmethod
    def secret_fields(cls, config: Mapping[str, Any]) -> list[str]:
        """Dotted names of the fields of ``config`` (as ``validate`` returned it) holding secrets.

        A type that resolves ``env:NAME``/``file:PATH`` references in its own fields must name
        them here (e.g. ``["auth.secret"]``): the HTTP API refuses a reference in them, because
        resolving it would hand a host secret to whoever wrote the spec.
        """
        return []

    @classmethod
    def untrusted_problems(cls, config: Mapping[str, Any]) -> list[SpecError]:
        """Why ``config`` may not come from an HTTP API caller, who has no access to the host.

        By default: an ``env:``/``file:`` reference in one of :meth:`secret_fields`. A type that
        falls back to secrets from the daemon's configuration adds its own rules.
        """
        return api_refusals(config, cls.secret_fields(config))

    @classmethod
    def checks(cls, settings: Mapping[str, Mapping[str, Any]]) -> list[Check]:
        """What ``wfsched check`` connects to for this type, given every config section
        (validated; secrets still references): e.g. the server the type's own section names.
        Nothing by default."""
        return []

    @classmethod
    def openapi_paths(cls) -> dict[str, Any]:
        """OpenAPI 3.1 path items of the routes this type serves besides the per-workflow
        route (a shared ``ingress`` is served at ``/api/v1/public/webhooks/{ingress}``), added
        to ``/openapi.json``. An error response (4xx, 5xx) may leave out ``content`` and
        ``description``: it gets the JSON error body every route answers, and the standard
        description of its status."""
        return {}

    def timer(self) -> TimerSpec | None:
        """Return the schedule the core's shared timer fires, or None."""
        return None

    async def run(self) -> None:
        """Watch a source until cancelled (only called when ``has_run`` is true)."""

    def describe(self) -> dict[str, Any]:
        """Return extra, secret-free fields for ``status`` (resolved schedule, filters…)."""
        return {}

    @property
    def max_body_bytes(self) -> int:
        """Largest request body ``receive`` accepts; larger ones get 413 while being read."""
        return 1024 * 1024

    def allows_method(self, method: str) -> bool:
        """Return whether the ingress route accepts this HTTP method."""
        return method == "POST"

    async def receive(self, request: Inbound) -> Outbound:
        """Handle a request on the per-workflow ingress route."""
        raise NotFound(f"trigger type {self.type!r} has no HTTP ingress")

    def routing_keys(self) -> Collection[str] | None:
        """The keys of the requests this trigger can match on its shared ingress (the github
        type: the exact repository names its filter lists), or None (the default) for any.

        The core indexes running triggers by these keys, so that a request costs what its
        candidates cost however many triggers are deployed (:meth:`SharedTriggers.candidates`).
        They must be exact: a trigger is never offered a request outside its keys.
        """
        return None

    @classmethod
    async def receive_shared(
        cls, request: Inbound, triggers: SharedTriggers, settings: Mapping[str, Any]
    ) -> Outbound:
        """Handle a request on the type's shared ingress route, fanning out to ``triggers``.

        ``triggers`` is a sequence of every running trigger of the type; route through
        ``triggers.candidates(keys)`` (the triggers of the request's routing keys, and those
        that take any request) so that a request's cost does not grow with the fleet.
        """
        raise NotFound(f"trigger type {cls.type!r} has no shared ingress")

    @property
    def requires_confirmation(self) -> bool:
        """True when a manual ``invoke`` must be confirmed by the user."""
        return False

    async def invoke(self, data: Any, *, user: str) -> FireResult:
        """Fire on request of a trusted operator (CLI, management API)."""
        raise NotFound(f"trigger type {self.type!r} cannot be fired by hand")
