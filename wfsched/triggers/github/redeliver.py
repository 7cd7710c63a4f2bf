"""Recovering lost deliveries: GitHub never retries a failed delivery, so we ask it to.

At start and every 10 minutes one process (the holder of the ``github-redelivery`` lock) lists
the App's recent deliveries (``GET /app/hook/deliveries``), groups the attempts by GUID and asks
GitHub to redeliver (``POST /app/hook/deliveries/{id}/attempts``) each GUID that:

* has an attempt younger than ``github.redelivery_window`` and no successful attempt;
* this process did not answer 2xx itself (an answer GitHub did not see, e.g. after its 10 s
  timeout, still means the events were committed);
* we have not already asked for since GitHub last tried it, at most 3 times.

A delivery we committed but GitHub still reports failed may be redelivered by another replica;
the store's dedupe key (delivery id + workflow) then records nothing new.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anyio
import httpx

from wfsched import Health
from wfsched.triggers.github.app import GitHubApp, GitHubError, RateLimited, next_link

INTERVAL = 600.0
MAX_REQUESTS_PER_GUID = 3
MAX_PAGES = 50
MAX_WAIT = 60.0  # a rate-limited recovery pass waits this long at most, then tries later
LISTENER_WAIT = 30.0
_REMEMBERED = 10_000
_answered: OrderedDict[str, None] = OrderedDict()


def note_answered(guid: str) -> None:
    """Remember that this process answered a delivery with 2xx (its events are committed)."""
    _answered[guid] = None
    _answered.move_to_end(guid)
    while len(_answered) > _REMEMBERED:
        _answered.popitem(last=False)


def answered(guid: str) -> bool:
    return guid in _answered


@dataclass(frozen=True, slots=True)
class Attempt:
    """One row of ``GET /app/hook/deliveries``: one delivery attempt of a GUID."""

    id: int
    guid: str
    delivered_at: float
    ok: bool


def parse_attempt(item: Any) -> Attempt | None:
    """Read one listed delivery; None for an entry we cannot use."""
    if not isinstance(item, Mapping):
        return None
    ident, guid, when = item.get("id"), item.get("guid"), item.get("delivered_at")
    if not isinstance(ident, int) or not isinstance(guid, str) or not isinstance(when, str):
        return None
    try:
        at = datetime.fromisoformat(when).timestamp()
    except ValueError:
        return None
    code = item.get("status_code")
    ok = item.get("status") == "OK" or (isinstance(code, int) and 200 <= code < 300)
    return Attempt(id=ident, guid=guid, delivered_at=at, ok=ok)


@dataclass
class Redeliverer:
    """Finds failed deliveries within the window and asks GitHub to redeliver them."""

    app: GitHubApp
    window: float
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    requested: dict[str, int] = field(default_factory=dict)
    """GUID → how many attempts GitHub listed when we asked for another."""
    counts: Counter[str] = field(default_factory=Counter)

    async def recent(self, http: httpx.AsyncClient) -> list[Attempt]:
        """Every listed attempt younger than the window (the list is newest first)."""
        cutoff = self.app.clock() - self.window
        out: list[Attempt] = []
        url: str | None = "/app/hook/deliveries"
        params: dict[str, Any] | None = {"per_page": 100}
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = await self.app.call(http, "GET", url, params=params, max_wait=MAX_WAIT)
            page = response.json()
            if not isinstance(page, list):
                raise GitHubError("GET /app/hook/deliveries: expected a list")
            attempts = [a for a in map(parse_attempt, page) if a is not None]
            out.extend(a for a in attempts if a.delivered_at >= cutoff)
            if not attempts or min(a.delivered_at for a in attempts) < cutoff:
                break
            url, params = next_link(response), None
        return out

    async def run_once(self, http: httpx.AsyncClient) -> list[str]:
        """One recovery pass; return the GUIDs whose redelivery was requested."""
        by_guid: dict[str, list[Attempt]] = {}
        for attempt in await self.recent(http):
            by_guid.setdefault(attempt.guid, []).append(attempt)
        done: list[str] = []
        for guid, attempts in by_guid.items():
            if any(a.ok for a in attempts) or answered(guid):
                continue
            if self.requested.get(guid) == len(attempts):
                continue  # GitHub has not tried our last request yet
            if self.counts[guid] >= MAX_REQUESTS_PER_GUID:
                continue
            latest = max(attempts, key=lambda a: (a.delivered_at, a.id))
            try:
                await self.app.call(
                    http, "POST", f"/app/hook/deliveries/{latest.id}/attempts", max_wait=MAX_WAIT
                )
            except RateLimited:
                raise
            except GitHubError as exc:
                self.log.warning(f"redelivery of GitHub delivery {guid} refused: {exc}")
                self.counts[guid] = MAX_REQUESTS_PER_GUID
                continue
            self.requested[guid] = len(attempts)
            self.counts[guid] += 1
            done.append(guid)
        for guid in [g for g in self.requested if g not in by_guid]:
            self.requested.pop(guid, None)
            self.counts.pop(guid, None)
        if done:
            self.log.info(
                f"asked GitHub to redeliver {len(done)} failed deliveries: {', '.join(done)}"
            )
        return done


class LeaseLike(Protocol):
    @property
    def lost(self) -> bool: ...


async def wait_for_listener(host: str, port: int, timeout: float = LISTENER_WAIT) -> None:
    """Wait until our own HTTP listener accepts connections (at most ``timeout`` seconds).

    GitHub redelivers within seconds; asking before the daemon listens would fail them again.
    """
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    with anyio.move_on_after(timeout):
        while True:
            try:
                stream = await anyio.connect_tcp(host, port)
            except OSError:
                await anyio.sleep(0.1)
                continue
            await stream.aclose()
            return


async def recover_forever(
    redeliverer: Redeliverer,
    lease: LeaseLike,
    report: Callable[[Health, str | None], None],
    *,
    interval: float = INTERVAL,
    client: Callable[[], httpx.AsyncClient],
) -> None:
    """Run recovery passes until cancelled; return when the lease is lost."""
    while not lease.lost:
        try:
            async with client() as http:
                await redeliverer.run_once(http)
            report("healthy", None)
            delay = interval
        except RateLimited as exc:
            report("degraded", f"GitHub redelivery check: {exc}")
            delay = max(1.0, exc.wait)
        except GitHubError as exc:
            report("degraded", f"GitHub redelivery check failed: {exc}")
            delay = min(interval, 60.0)
        deadline = anyio.current_time() + delay
        while not lease.lost and anyio.current_time() < deadline:
            await anyio.sleep(min(5.0, deadline - anyio.current_time()))
