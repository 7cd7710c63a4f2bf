"""A lock holder as a separate process, for the SIGSTOP fault test (tests/test_faults.py).

``python -m tests.lock_holder REDIS_URL STORE_URL LOCK TTL`` takes the lock, writes the
cursor of workflow ``wf`` / trigger ``manual`` with its fence, prints ``{"fence": N}``, then
waits for a line on stdin and writes again with the same fence, as a write already in flight
when the process was paused would. It prints the outcome of that write and, after the lock
block ended, whether the lease was lost. One JSON object per line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import anyio.to_thread

from wfsched.backends import open_store
from wfsched.errors import StoreError
from wfsched.locks.redis import RedisLocks


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(redis_url: str, store_url: str, name: str, ttl: float) -> None:
    store = open_store(store_url)
    await store.open()
    locks = RedisLocks(redis_url)
    try:
        async with locks.hold(name, ttl=ttl) as lease:
            await store.set_cursor("wf", "manual", {"holder": "child"}, fence=lease.fence)
            say(fence=lease.fence)
            # Shielded: the pause falls between the decision to write and the write itself,
            # which no check of lease.lost can prevent; only the store's fence check can.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(sys.stdin.readline)
                lost_before = lease.lost
                try:
                    await store.set_cursor(
                        "wf", "manual", {"holder": "child", "late": True}, fence=lease.fence
                    )
                    say(write="accepted", lost_before_write=lost_before)
                except StoreError as exc:
                    say(write="rejected", error=str(exc), lost_before_write=lost_before)
        say(block="ended", lost=lease.lost)
    finally:
        await locks.close()
        await store.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
