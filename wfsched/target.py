"""The dispatch target contract: where a fired event goes.

A target is a plugin like a trigger type: a :class:`DispatchTarget` subclass registered through
the ``register_dispatch_targets`` hook. ``dispatch.mode`` names the default target; a workflow
spec may pick its own with a ``[dispatch]`` table (``mode`` plus the target's own fields, checked
by :meth:`DispatchTarget.validate` at deploy). The core claims events, calls :meth:`send` and
retries what it is told to: a target raises :class:`DispatchError` with ``retry`` saying whether
another attempt may succeed (:func:`http_failure` applies the ``engine`` rules to an HTTP answer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol

from wfsched.errors import ConfigError, SpecError
from wfsched.models import TriggerEvent, iso

RETRYABLE = frozenset({408, 429})
"""4xx statuses that say "try again later"; every 5xx is retried too."""
BODY_SNIPPET = 200
"""Characters of an error response body quoted in ``last_error``."""


class DispatchError(Exception):
    """A failed attempt. ``retry`` says whether another attempt may succeed; ``retry_after``
    is the delay the receiver asked for; ``code`` its status code (HTTP or SMTP), if any."""

    def __init__(
        self,
        message: str,
        *,
        retry: bool,
        retry_after: float | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after
        self.code = code


def event_document(event: TriggerEvent) -> dict[str, Any]:
    """The event as dispatched as every target sends it: the engine's POST body, the notify JSON."""
    return {
        "execution_id": event.execution_id,
        "workflow_id": event.workflow_id,
        "trigger": {"id": event.trigger_id, "type": event.trigger_type},
        "scheduled_at": iso(event.scheduled_at),
        "fired_at": iso(event.fired_at),
        "payload": dict(event.payload),
    }


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def snippet(text: str) -> str:
    """``text`` on one line, cut to :data:`BODY_SNIPPET` characters (for ``last_error``)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= BODY_SNIPPET else flat[:BODY_SNIPPET] + "…"


def http_failure(
    who: str, status: int, reason: str, body: str, *, retry_after: float | None = None
) -> DispatchError | None:
    """The ``engine`` retry rules for an HTTP answer: None for 2xx; 408, 429 and 5xx are
    retried (honouring ``retry_after``); any other status fails the event. ``who`` names the
    receiver in the message (``"engine"``, ``"CloudEvents sink"``)."""
    if 200 <= status < 300:
        return None
    what = f"{who} answered {status} {reason}".rstrip()
    detail = f": {snippet(body)}" if body.strip() else ""
    retry = status in RETRYABLE or status >= 500
    return DispatchError(
        what + detail, retry=retry, retry_after=retry_after if retry else None, code=status
    )


class Sender(Protocol):
    """Delivers one event; raises DispatchError on failure (what :meth:`DispatchTarget.open`
    returns: usually the target instance itself).

    Optional: a sender whose ``send`` does nothing at all (the built-in ``log``) may have
    ``instant(workflow_id) -> bool`` answer True; the dispatcher then marks such events
    dispatched as they are recorded, without calling ``send``."""

    @property
    def mode(self) -> str:
        """The target's name (log lines, metric labels)."""

    timeout: float
    """Seconds one ``send`` may take at most (0 when it does not wait on anything); the
    dispatcher keeps that much of a claim's lease for it."""

    async def send(self, event: TriggerEvent) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TargetContext:
    """What the core gives a target it opens.

    ``settings``: every config section, validated (secrets still ``env:``/``file:`` references;
    resolve them with :func:`wfsched.resolve_secret`); ``timeout``: seconds one ``send`` may take
    at most; ``max_connections``: concurrent sends at most (``scheduler.max_workers``).
    """

    settings: Mapping[str, Mapping[str, Any]]
    timeout: float = 30.0
    max_connections: int = 10

    def section(self, name: str) -> Mapping[str, Any]:
        """One config section (empty when no one declares it)."""
        return self.settings.get(name, {})


class DispatchTarget(ABC):
    """Base of every dispatch target, built-in or third-party.

    Subclasses set ``name``; override :meth:`validate` when a workflow's ``[dispatch]`` table
    may carry fields, :meth:`check_settings` when the target needs configuration, and implement
    :meth:`send`. One instance serves every workflow with the same options, concurrently.
    """

    name: ClassVar[str]

    def __init__(self, ctx: TargetContext, options: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.options = options
        self.timeout = ctx.timeout
        """Seconds one ``send`` may take at most (0 when it waits on nothing)."""

    @property
    def mode(self) -> str:
        return self.name

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check a workflow's ``[dispatch]`` fields (``mode`` removed) and return them
        normalised; raise :class:`~wfsched.SpecError` with ``field`` set. Default: no fields."""
        if options:
            raise SpecError(f"the {cls.name} target takes no fields", field=min(options))
        return {}

    @classmethod
    def open(cls, ctx: TargetContext, options: Mapping[str, Any]) -> Sender:
        """The sender for ``options`` (one ``[dispatch]`` table, validated): by default an
        instance of the class. The core opens one per distinct table and shares it."""
        return cls(ctx, options)

    @classmethod  # noqa: B027 - a default hook: most targets need no configuration
    def check_settings(
        cls, settings: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any]
    ) -> None:
        """Raise :class:`~wfsched.errors.ConfigError` naming the key when the configuration
        (with a workflow's ``options``) cannot work: checked for ``dispatch.mode`` at start."""

    @classmethod
    def untrusted_problems(
        cls, options: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]]
    ) -> list[SpecError]:
        """Why a ``[dispatch]`` table (validated) may not come from an HTTP API caller, who
        has no access to the host: e.g. a field that would send the events, or the daemon's
        credentials, somewhere the operator did not choose, or write where the caller likes.
        Errors name the field. Nothing by default."""
        return []

    @abstractmethod
    async def send(self, event: TriggerEvent) -> None:
        """Deliver ``event`` once; raise :class:`DispatchError` on failure."""

    async def aclose(self) -> None:  # noqa: B027 - a default hook: most hold nothing
        """Release connections (called once, at shutdown)."""


def require(settings: Mapping[str, Mapping[str, Any]], name: str, env: str, mode: str) -> None:
    """ConfigError unless the setting ``name`` (``section.key``) is set (``check_settings``)."""
    section, key = name.split(".", 1)
    if not settings.get(section, {}).get(key):
        raise ConfigError(f"dispatch.mode = {mode!r} needs {name} ({env})")
