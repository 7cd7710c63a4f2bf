"""Indexes that route a request to the triggers it can match, at a cost independent of the fleet.

``SharedTriggers`` holds the running triggers of one shared ingress (``/webhooks/{name}``),
bucketed by the routing keys each declares (:meth:`BaseTrigger.routing_keys`): a request asks
for the candidates of its keys and gets those buckets plus the triggers listening on every
request, never the rest. ``Routing`` keeps these and the per-workflow webhook index in step
with the manager's running triggers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import overload

from wfsched.trigger import BaseTrigger

Key = tuple[str, str]
"""``(workflow id, trigger id)``."""


class SharedTriggers(Sequence[BaseTrigger]):
    """The running triggers of one shared ingress, indexed by routing key.

    As a sequence it is every trigger (a snapshot per walk: a plugin that does not route
    still sees them all); :meth:`candidates` is the indexed lookup.
    """

    def __init__(self) -> None:
        self._all: dict[Key, BaseTrigger] = {}
        self._keys: dict[Key, Collection[str] | None] = {}
        self._keyed: dict[str, dict[Key, BaseTrigger]] = {}
        self._wild: dict[Key, BaseTrigger] = {}

    def put(self, key: Key, trigger: BaseTrigger) -> None:
        """Add ``trigger`` under ``key``, replacing the instance there (a restart)."""
        self.discard(key)
        keys = trigger.routing_keys()
        self._all[key] = trigger
        self._keys[key] = keys
        if keys is None:
            self._wild[key] = trigger
            return
        for routing_key in keys:
            self._keyed.setdefault(routing_key, {})[key] = trigger

    def discard(self, key: Key) -> None:
        if self._all.pop(key, None) is None:
            return
        keys = self._keys.pop(key)
        if keys is None:
            del self._wild[key]
            return
        for routing_key in keys:
            bucket = self._keyed[routing_key]
            del bucket[key]
            if not bucket:
                del self._keyed[routing_key]

    def candidates(self, keys: Iterable[str]) -> list[BaseTrigger]:
        """Every trigger that may match a request with routing ``keys``: those listening on
        one of them and those listening on every request, each once."""
        found = dict(self._wild)
        for routing_key in keys:
            bucket = self._keyed.get(routing_key)
            if bucket:
                found.update(bucket)
        return list(found.values())

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[BaseTrigger]:
        return iter(list(self._all.values()))

    @overload
    def __getitem__(self, index: int) -> BaseTrigger: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[BaseTrigger]: ...

    def __getitem__(self, index: int | slice) -> BaseTrigger | Sequence[BaseTrigger]:
        return list(self._all.values())[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class Routing:
    """Where requests find running triggers: per-workflow webhooks by workflow id, shared
    ingress triggers by ingress name and routing key."""

    def __init__(self) -> None:
        # Per workflow, its per-workflow ingress triggers in start order (a renamed trigger
        # runs under both names for a moment: the older one answers, as before the rename).
        self._webhooks: dict[str, dict[str, BaseTrigger]] = {}
        self._shared: dict[str, SharedTriggers] = {}

    def put(self, key: Key, trigger: BaseTrigger) -> None:
        """Route to ``trigger`` under ``key`` from now on (replacing the instance there)."""
        ingress = trigger.ingress
        if ingress == "workflow":
            self._webhooks.setdefault(key[0], {})[key[1]] = trigger
        elif ingress is not None:
            self._shared.setdefault(ingress, SharedTriggers()).put(key, trigger)

    def discard(self, key: Key, trigger: BaseTrigger) -> None:
        """Stop routing to the trigger under ``key`` (``trigger`` says which index holds it)."""
        ingress = trigger.ingress
        if ingress == "workflow":
            triggers = self._webhooks.get(key[0])
            if triggers is not None:
                triggers.pop(key[1], None)
                if not triggers:
                    del self._webhooks[key[0]]
        elif ingress is not None and ingress in self._shared:
            self._shared[ingress].discard(key)

    def webhook(self, workflow_id: str) -> BaseTrigger | None:
        triggers = self._webhooks.get(workflow_id)
        return next(iter(triggers.values())) if triggers else None

    def shared(self, name: str) -> SharedTriggers:
        found = self._shared.get(name)
        if found is None:
            found = self._shared[name] = SharedTriggers()
        return found
