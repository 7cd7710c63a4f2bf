"""The thread a SQLite connection runs its calls in: one thread per connection, in order.

A call from the event loop is queued to the thread and awaited as a future the thread resolves
through ``call_soon_threadsafe``; one thread means one call at a time, so statements never
interleave. It costs a third of ``anyio.to_thread.run_sync`` with a one-slot limiter (measured
per call, CPU of both threads: 21 µs against 58 µs with the limiter, lock and shield it needed),
and a group commit makes one such call.

A call cannot be cancelled half-way, as with anyio's threads: a caller cancelled while its call
runs gets its ``CancelledError`` once the call is over, never before (the future refuses the
cancellation; the task raises it when the future is done).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = object()


class _Call(asyncio.Future[Any]):
    """A call's future, which a cancelled caller waits out instead of abandoning."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class Worker:
    """One daemon thread running the calls given to :meth:`call`, one after another."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn()`` in the thread; the future (of the running loop) gets its outcome."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = _Call(loop=loop)
        self._calls.put((loop, done, fn))
        return done

    def stop(self) -> None:
        """End the thread once the calls queued before are done."""
        if self._thread is not None:
            self._calls.put(_STOP)
            self._thread = None

    def _serve(self) -> None:
        calls = self._calls
        while (item := calls.get()) is not _STOP:
            self._run(*item)
            # Not left referenced while the thread waits for the next call: a call's
            # arguments (a group commit's events, payloads and all) are freed once it is over.
            del item

    def _run(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any], fn: Any) -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - the caller's to raise
            self._answer(loop, done.set_exception, exc)
        else:
            self._answer(loop, done.set_result, result)

    @staticmethod
    def _answer(loop: asyncio.AbstractEventLoop, settle: Callable[[Any], None], value: Any) -> None:
        try:
            loop.call_soon_threadsafe(settle, value)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass
