"""The SQLite store's ChangeFeed: a poll of the database files' fingerprint.

SQLite cannot notify another process, and the CLI writes to the file next to the daemon, so
the feed looks: every commit (the daemon's, the CLI's) appends to the WAL, and a ``stat`` of
the files on the event loop costs a few microseconds, where asking the database would cost a
thread hop and a query. The look happens on the caller's ``pace`` (the daemon's shared
one-second beat), so an idle daemon wakes no more often for it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio

from wfsched.store import Change

RECHECK = 30.0
"""Seconds after which the feed reports anyway, fingerprint unchanged: a safety net, so a
commit the fingerprint cannot tell apart (same sizes, an mtime within the filesystem's
timestamp granularity) is noticed late rather than never."""


def fingerprint(path: Path) -> tuple[int, ...]:
    """A cheap fingerprint of the database and its WAL that changes whenever anyone commits:
    mtime and size of each (zeros for a missing file)."""
    token: list[int] = []
    for suffix in ("-wal", ""):
        try:
            st = os.stat(f"{path}{suffix}")
        except OSError:
            token += [0, 0]
            continue
        token += [st.st_mtime_ns, st.st_size]
    return tuple(token)


class FilePoll:
    """ChangeFeed of one SQLite file: reports both kinds whenever its fingerprint moves (and
    every ``recheck`` seconds regardless); the first look always reports."""

    pushed = False

    def __init__(self, path: Path, *, recheck: float = RECHECK) -> None:
        self.path = path
        self.recheck = recheck

    async def watch(self, pace: Callable[[], Awaitable[None]]) -> AsyncIterator[Change]:
        last: tuple[int, ...] | None = None
        checked = anyio.current_time()
        while True:
            await pace()
            token = fingerprint(self.path)
            if token == last and anyio.current_time() - checked < self.recheck:
                continue
            last, checked = token, anyio.current_time()
            # Events first: waking the dispatcher is free, a revision check is a query.
            yield "events"
            yield "deployments"
