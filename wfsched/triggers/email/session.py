"""The async face of an IMAP :class:`~wfsched.triggers.email.connection.Connection`.

Every blocking call runs in a worker thread under a deadline; a call that overruns or is
cancelled is abandoned and its socket shut down, so a dead peer can never hang the event
loop or the daemon's shutdown. Any failure marks the session broken: the watcher reconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from wfsched.triggers.email.connection import Connection, ImapError, Meta

T = TypeVar("T")
# IMAP threads get their own pool, per event loop, so a slow server never starves others.
_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("wfsched_imap_threads")


class Session:
    """Async face of a Connection: one call at a time, each in a worker thread under a deadline."""

    def __init__(self, conn: Connection, *, on_ok: Callable[[], None] = lambda: None) -> None:
        self.conn = conn
        self.broken = False
        self._lock = anyio.Lock()
        self._on_ok = on_ok

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        deadline: float | None = None,
        what: str = "IMAP command",
        alive: bool = True,
    ) -> T:
        """Run ``fn(*args)`` in a thread; an overrun or failure breaks the session."""
        if self.broken:
            raise ImapError("the connection is already broken")
        try:
            limiter = _LIMITER.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(64)
            _LIMITER.set(limiter)
        limit = deadline if deadline is not None else self.conn.timeout * 2 + 5
        async with self._lock:
            try:
                with anyio.move_on_after(limit) as deadline_scope:
                    result = await anyio.to_thread.run_sync(
                        partial(fn, *args), abandon_on_cancel=True, limiter=limiter
                    )
            except ImapError:
                self._break()
                raise
            except TimeoutError:
                self._break()
                raise ImapError(f"{what}: no answer within {self.conn.timeout:g} s") from None
            except Exception as exc:  # noqa: BLE001 - socket, protocol or parse: state unknown
                self._break()
                raise ImapError(f"{what}: {type(exc).__name__}: {exc}") from None
            except BaseException:
                self._break()  # cancelled mid-call: the thread is abandoned with the socket
                raise
            if deadline_scope.cancelled_caught:
                self._break()
                raise ImapError(f"{what}: still no answer after {limit:g} s; abandoned")
        if alive:
            self._on_ok()
        return result

    def _break(self) -> None:
        self.broken = True
        self.conn.abort()

    async def open(self) -> int:
        return await self.call(self.conn.open, what="connect and log in")

    async def search(self, criteria: str) -> list[int]:
        return await self.call(self.conn.search, criteria, what="UID SEARCH")

    async def last_uid(self) -> int:
        return await self.call(self.conn.last_uid, what="UID SEARCH")

    async def fetch_meta(self, uids: list[int]) -> dict[int, Meta]:
        return await self.call(self.conn.fetch_meta, uids, what="UID FETCH")

    async def fetch(self, uid: int, *, size: int, headers_only: bool) -> bytes | None:
        # A large body may take a while on a slow link: allow ~50 KB/s on top.
        limit = self.conn.timeout * 2 + 5 + (0 if headers_only else size / 50_000)
        return await self.call(
            partial(self.conn.fetch, uid, headers_only=headers_only),
            deadline=limit,
            what=f"UID FETCH {uid}",
        )

    async def mark_seen(self, uids: list[int]) -> str | None:
        return await self.call(self.conn.mark_seen, uids, what="UID STORE \\Seen")

    async def check_uidvalidity(self) -> None:
        await self.call(self.conn.check_uidvalidity, what="STATUS")

    async def noop(self) -> None:
        await self.call(self.conn.noop, what="NOOP")

    async def close(self) -> None:
        """Log out within a short deadline, even when the caller is being cancelled."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            if not self.broken:
                await anyio.to_thread.run_sync(self.conn.logout, abandon_on_cancel=True)
                return
        self.conn.abort()

    async def idle_start(self) -> None:
        await self.call(self.conn.idle_start, what="IDLE")

    async def idle_wait(self, timeout: float) -> bool:
        # Silence is no proof of life: only real answers feed the watchdog.
        return await self.call(
            self.conn.idle_wait, timeout, deadline=timeout + 5, what="IDLE", alive=False
        )

    async def idle_done(self) -> None:
        await self.call(self.conn.idle_done, what="IDLE DONE")
