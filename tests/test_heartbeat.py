"""A daemon's heartbeat against the real stores: a clean stop stays stopped."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from wfsched.heartbeat import Heartbeat, daemon_status

pytestmark = pytest.mark.anyio


async def test_a_beat_under_way_when_the_daemon_stops_does_not_bring_it_back(
    store: Any,
) -> None:
    """The beat loop's health flush may still be running when the daemon ends its run; the
    beat after it must not write the live row again ("running" for 15 s after a clean stop)."""
    flushing, flushed = anyio.Event(), anyio.Event()

    async def slow_flush() -> None:
        flushing.set()
        await flushed.wait()

    heartbeat = Heartbeat(store, "r:1", "127.0.0.1:1", every=0.01, before_beat=slow_flush)
    await heartbeat.start()
    assert (await daemon_status(store))["running"] is True
    with anyio.fail_after(5):  # the loop ends by itself once the run has ended
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat.run)
            await flushing.wait()
            await heartbeat.end()  # the flush under way holds no write: end goes first
            flushed.set()
    status = await daemon_status(store)
    assert status["running"] is False and status["replicas"] == []
