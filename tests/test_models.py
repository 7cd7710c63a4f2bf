"""Execution ids: ULIDs that sort by time and never repeat within a process."""

from __future__ import annotations

import os
import time
from itertools import pairwise

import pytest

from wfsched.models import new_execution_id

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_an_execution_id_is_a_ulid_of_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ulid = new_execution_id()
    after = time.time_ns() // 1_000_000
    assert len(ulid) == 26
    assert set(ulid) <= set(CROCKFORD)
    value = decode(ulid)
    assert value < 1 << 128
    assert before <= value >> 80 <= after


def test_execution_ids_sort_in_the_order_they_were_made() -> None:
    ids = [new_execution_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Within one millisecond the random part counts up by one.
    values = [decode(u) for u in ids]
    same_ms = [(a, b) for a, b in pairwise(values) if a >> 80 == b >> 80]
    assert same_ms
    assert all(b == a + 1 for a, b in same_ms)


def test_a_forked_child_makes_ids_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # The random bits come from a pool: a child that kept its parent's pool, or counted up
    # from its parent's last id in the same millisecond, would repeat the parent's ids.
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now)  # every id in one millisecond
    new_execution_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ",".join(new_execution_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    parent = {new_execution_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent


def test_ids_stay_unique_across_refills_of_the_random_pool() -> None:
    ids = [new_execution_id() for _ in range(2000)]  # several refills of the 400-id pool
    assert len(set(ids)) == len(ids)
