"""Which target an event goes to: the workflow's own ``[dispatch]`` table, else ``dispatch.mode``.

The router is the dispatcher's one Sender. A workflow's choice is read from its deployed spec
the first time one of its events is sent, then kept until the deployments change (the
manager's revision moves), so the hot path is a dict look-up. Senders are opened once per
distinct ``[dispatch]`` table and shared: a thousand workflows naming one CloudEvents sink
share one connection pool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from wfsched import otel
from wfsched.errors import WfschedError
from wfsched.models import TriggerEvent
from wfsched.target import DispatchError, Sender

log = logging.getLogger("wfsched.dispatch")

Choice = tuple[str, Mapping[str, Any]]
"""A target's name and the validated fields of a ``[dispatch]`` table."""
Opener = Callable[[str, Mapping[str, Any]], Sender]
Lookup = Callable[[str], Awaitable[Choice | None]]
"""A workflow's ``[dispatch]`` choice (None: the default); raises DispatchError when the
deployed table no longer validates (its target plugin is gone)."""


class TargetRouter:
    """Sends each event with its workflow's target."""

    def __init__(
        self,
        default: Choice,
        *,
        open_target: Opener,
        lookup: Lookup,
        revision: Callable[[], int] = lambda: 0,
        timeout: float = 0.0,
    ) -> None:
        self._open_target = open_target
        self._lookup = lookup
        self._revision = revision
        self._senders: dict[str, Sender] = {}
        self.default = self._sender(*default)
        self.mode = self.default.mode
        # Any workflow may choose a slower target than the default: the lease must allow for
        # the slowest send the configuration permits.
        self.timeout = max(self.default.timeout, timeout)
        self._routes: dict[str, Sender] = {}
        self._seen: int | None = None

    def _sender(self, mode: str, options: Mapping[str, Any]) -> Sender:
        key = mode + json.dumps(options, sort_keys=True, separators=(",", ":"))
        sender = self._senders.get(key)
        if sender is None:
            sender = self._senders[key] = self._open_target(mode, options)
        return sender

    def _open(self, workflow_id: str, choice: Choice) -> Sender:
        try:
            return self._sender(*choice)
        except WfschedError as exc:
            # A target whose configuration broke since deploy: retried, then failed, naming it.
            raise DispatchError(
                f"workflow {workflow_id}: dispatch target {choice[0]!r}: {exc}", retry=True
            ) from None

    async def route(self, workflow_id: str) -> Sender:
        """The sender for ``workflow_id``'s events."""
        revision = self._revision()
        if revision != self._seen:
            self._routes.clear()
            self._seen = revision
        sender = self._routes.get(workflow_id)
        if sender is None:
            choice = await self._lookup(workflow_id)
            sender = self.default if choice is None else self._open(workflow_id, choice)
            if len(self._routes) > 100_000:
                self._routes.clear()
            self._routes[workflow_id] = sender
        return sender

    def instant(self, workflow_id: str) -> bool:
        """True when the workflow's events go to a sender that sends nothing (``log``), as
        far as the routes already known say (the first event of a workflow is sent the usual
        way, which learns its route); never with OpenTelemetry on (a span per attempt)."""
        if otel.ENABLED or self._revision() != self._seen:
            return False
        sender = self._routes.get(workflow_id)
        probe = getattr(sender, "instant", None)
        return probe is not None and probe(workflow_id)

    async def send(self, event: TriggerEvent) -> None:
        sender = self._routes.get(event.workflow_id) if self._revision() == self._seen else None
        if sender is None:
            sender = await self.route(event.workflow_id)
        if otel.ENABLED:  # a span per attempt, named by the traceparent the target sends
            return await otel.dispatch_span(sender, event)
        await sender.send(event)

    async def aclose(self) -> None:
        """Close every sender opened."""
        for sender in self._senders.values():
            try:
                await sender.aclose()
            except Exception as exc:  # noqa: BLE001 - close the others all the same
                log.warning("closing a dispatch target failed", extra={"error": str(exc)})


__all__ = ["Choice", "DispatchError", "TargetRouter"]
