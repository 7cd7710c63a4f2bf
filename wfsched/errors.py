"""The few exception types wfsched raises; each carries a message a user can act on."""

from __future__ import annotations


class WfschedError(Exception):
    """Base of every error wfsched reports to a user (CLI exit 1, HTTP 4xx/5xx)."""


class ConfigError(WfschedError, ValueError):
    """The configuration (file or environment) is invalid."""


class SpecError(WfschedError, ValueError):
    """A workflow spec is invalid; the message names the file, trigger and field at fault.

    Trigger types raise it with ``field`` set to the offending key (dotted for nested tables);
    the spec loader adds the file and trigger.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        trigger: str | None = None,
        source: str | None = None,
    ) -> None:
        self.message = message
        self.field = field
        self.trigger = trigger
        self.source = source
        super().__init__(str(self))

    def located(
        self, *, source: str | None = None, trigger: str | None = None, prefix: str | None = None
    ) -> SpecError:
        """Return a copy that also names the file, trigger, or an enclosing field."""
        field = self.field
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        return SpecError(
            self.message,
            field=field,
            trigger=trigger if trigger is not None else self.trigger,
            source=source if source is not None else self.source,
        )

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.trigger:
            where.append(f"trigger {self.trigger!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class InvalidInput(WfschedError, ValueError):
    """A request's parameter is malformed (a cursor, an instant, a limit); nothing was done."""


class StoreError(WfschedError):
    """The store is unreachable or refused an operation."""


class StoreRejected(StoreError):
    """The store refused the data itself (a value it cannot hold, a constraint), not the
    connection: the same rows fail again, other rows in the same transaction need not."""


class NotFound(WfschedError, LookupError):
    """A workflow, trigger or event does not exist."""


class Conflict(WfschedError):
    """The request conflicts with current state (e.g. a confirmation is required)."""


class AuthError(WfschedError):
    """A request failed authentication; the message says which header or check failed."""


class Unavailable(WfschedError):
    """Triggers are starting, stopping or being replaced: nothing was done, retry shortly."""
