"""The PostgreSQL store's ChangeFeed: LISTEN on the channels every change NOTIFYs.

Every deployment change NOTIFYs ``DEPLOYMENTS_CHANNEL`` and every recorded batch
``EVENTS_CHANNEL``, in the committing transaction, whichever replica or CLI commits it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing

from wfsched.store import Change
from wfsched.store.postgres.connection import DEPLOYMENTS_CHANNEL, EVENTS_CHANNEL

CHANNELS: dict[str, Change] = {DEPLOYMENTS_CHANNEL: "deployments", EVENTS_CHANNEL: "events"}


class NotifyFeed:
    """ChangeFeed over ``listen`` (``PgConnections.listen``): one Change per notification,
    every kind once when LISTEN takes effect; StoreError when the connection fails."""

    pushed = True

    def __init__(self, listen: Callable[[Sequence[str]], AsyncGenerator[str, None]]) -> None:
        self._listen = listen

    async def watch(self, pace: Callable[[], Awaitable[None]]) -> AsyncIterator[Change]:
        # Closed explicitly, so the LISTEN connection goes when the watcher stops.
        async with aclosing(self._listen(list(CHANNELS))) as channels:
            async for channel in channels:
                change = CHANNELS.get(channel)
                if change is not None:
                    yield change
