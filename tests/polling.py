"""Waiting in async tests: poll a condition with a deadline, never sleep a fixed time."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

import anyio

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T | Literal[False] | None]],
    timeout: float = 10.0,
    what: str = "condition",
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T | Literal[False] | None],
    timeout: float = 10.0,
    what: str = "condition",
) -> T: ...


async def eventually(
    probe: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll a probe (plain or async) until it answers something truthy and return that;
    fail after ``timeout`` seconds naming ``what`` and the last answer.

    The value returned is typed without the ``False`` and ``None`` a probe answers while the
    condition does not hold yet.
    """
    last: Any = None
    with anyio.move_on_after(timeout):
        while True:
            last = probe()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
            await anyio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
