"""One email trigger's view of a mailbox: its cursor, what is new, fire, advance.

The cursor is (UIDVALIDITY, last UID) plus two markers:

- ``unseen_until``: on its first start a trigger takes the folder's unseen messages up to
  the newest UID then present; everything above is new whatever its flags.
- ``rescan_until``: after a UIDVALIDITY change every old UID is void, so messages up to the
  newest UID at that moment are looked at again, and those that arrived from ``horizon`` on
  and are not among the ``recent`` identities (Message-ID, else a hash of the raw bytes)
  fire. ``recent`` holds the newest fires; forgetting one moves the horizon past it.

Searches use explicit ranges ``UID lo:hi`` below the newest UID (``UID *``) and drop any UID
outside the range: ``UID n:*`` would always return the newest message again. The cursor
advances only after the fire is committed, \\Seen is set only after that too, and the dedupe
key (mailbox, UIDVALIDITY, UID) makes a repeat after a crash a no-op.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.to_thread

from wfsched import FireRequest, Health, Lease, TriggerContext
from wfsched.triggers.email.connection import Meta
from wfsched.triggers.email.message import Outcome, PayloadOptions, evaluate
from wfsched.triggers.email.options import Options, Tuning
from wfsched.triggers.email.session import Session

BATCH = 20
RECENT_MAX = 200
MESSAGE_ERROR_HOLD = 3600.0
"""How long a skipped (malformed) message keeps the trigger ``degraded``."""
_LEVEL = {"healthy": 0, "degraded": 1, "failing": 2}
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass
class Cursor:
    """Where a trigger stands in a folder (stored as JSON through ``set_cursor``)."""

    mailbox: str
    uidvalidity: int
    last_uid: int = 0
    unseen_until: int | None = None
    rescan_until: int | None = None
    horizon: float = 0.0
    """Epoch second: a rescan skips messages that arrived before it."""
    recent: list[list[Any]] = field(default_factory=list)
    """``[identity hash, arrival epoch]`` of the newest fired (or skipped) messages."""

    def to_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "uidvalidity": self.uidvalidity,
            "last_uid": self.last_uid,
            "unseen_until": self.unseen_until,
            "rescan_until": self.rescan_until,
            "horizon": self.horizon,
            "recent": self.recent,
        }

    @classmethod
    def load(cls, value: Any, mailbox: str) -> Cursor | None:
        """Read a stored cursor; None when absent, damaged or for another mailbox."""
        if not isinstance(value, dict) or value.get("mailbox") != mailbox:
            return None
        try:
            return cls(
                mailbox=mailbox,
                uidvalidity=int(value["uidvalidity"]),
                last_uid=int(value["last_uid"]),
                unseen_until=_opt_int(value.get("unseen_until")),
                rescan_until=_opt_int(value.get("rescan_until")),
                horizon=float(value.get("horizon") or 0.0),
                recent=[[str(h), float(t)] for h, t in value.get("recent") or []],
            )
        except (KeyError, TypeError, ValueError):
            return None

    def remember(self, identity: str, arrived: float) -> None:
        self.recent.append([_digest(identity), arrived])
        while len(self.recent) > RECENT_MAX:
            # A forgotten message falls behind the horizon, which a rescan skips anyway.
            self.horizon = max(self.horizon, float(self.recent.pop(0)[1]) + 1)

    def knows(self, identity: str) -> bool:
        digest = _digest(identity)
        return any(entry[0] == digest for entry in self.recent)

    def advance(self, uid: int) -> None:
        self.last_uid = max(self.last_uid, uid)
        if self.unseen_until is not None and self.unseen_until <= self.last_uid:
            self.unseen_until = None
        if self.rescan_until is not None and self.rescan_until <= self.last_uid:
            self.rescan_until = None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _digest(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8", "replace")).hexdigest()[:16]


def _imap_date(epoch: float) -> str:
    day = datetime.fromtimestamp(epoch, UTC)
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


class Reader:
    """The subscriber of one email trigger: cursor, filters, fires and health."""

    def __init__(self, ctx: TriggerContext, options: Options) -> None:
        self.ctx = ctx
        self.opts = options
        self.label = options.endpoint.label
        self.cursor: Cursor | None = None
        self._session: Session | None = None
        self.last_sync: datetime | None = None
        self._connection: tuple[Health, str | None] = ("healthy", None)
        self._sync_error: str | None = None
        self._message_error: tuple[str, float] | None = None
        self._payload_opts = PayloadOptions(
            attachments=options.attachments,
            max_attachment_bytes=options.max_attachment_bytes,
            attachments_dir=options.attachments_dir,
            workflow_id=ctx.workflow_id,
        )

    @property
    def tuning(self) -> Tuning:
        return self.opts.tuning

    def lock(self, name: str, *, ttl: float) -> AbstractAsyncContextManager[Lease]:
        return self.ctx.lock(name, ttl=ttl)

    # health -------------------------------------------------------------------------------
    def connection(self, health: Health, error: str | None) -> None:
        self._connection = (health, error)
        self._report()

    def sync_failed(self, exc: Exception) -> None:
        self._sync_error = f"{type(exc).__name__}: {exc}"
        self.ctx.log.exception("email sync failed", extra={"error": self._sync_error})
        self._report()

    def _message_failed(self, error: str) -> None:
        self._message_error = (error, time.monotonic() + MESSAGE_ERROR_HOLD)
        self.ctx.log.warning(error, extra={"error": error})
        self._report()

    def _report(self) -> None:
        states: list[tuple[Health, str | None]] = [self._connection]
        if self._sync_error:
            states.append(("failing", self._sync_error))
        if self._message_error and self._message_error[1] > time.monotonic():
            states.append(("degraded", self._message_error[0]))
        health, error = max(states, key=lambda s: _LEVEL[s[0]])
        self.ctx.report_health(health, error)

    # sync ---------------------------------------------------------------------------------
    async def sync(self, session: Session, uidvalidity: int, fence: int) -> None:
        """Fire every new message that passes the filters, advancing the cursor as it goes."""
        cursor = await self._cursor(session, uidvalidity, fence)
        top = await session.last_uid()
        if top > cursor.last_uid:
            uids = await self._candidates(session, cursor, top)
            for start in range(0, len(uids), BATCH):
                await self._batch(session, cursor, uids[start : start + BATCH])
                await self._save(cursor, fence)
            cursor.advance(top)
            await self._save(cursor, fence)
        self.last_sync = datetime.now(UTC)
        self._sync_error = None
        self._report()

    async def _cursor(self, session: Session, uidvalidity: int, fence: int) -> Cursor:
        if session is not self._session:
            # A new session may follow another replica's turn: the store knows best.
            self._session = session
            self.cursor = Cursor.load(await self.ctx.get_cursor(), self.label)
        old = self.cursor
        if old is not None and old.uidvalidity == uidvalidity:
            return old
        top = await session.last_uid()
        if old is None:
            # Arrival times have whole seconds: this second's arrivals stay in a rescan.
            self.cursor = Cursor(
                self.label, uidvalidity, unseen_until=top or None, horizon=float(int(time.time()))
            )
            self.ctx.log.info(
                f"email: first start on {self.label}: taking unseen messages "
                f"up to UID {top}, then everything new"
            )
        else:
            self.cursor = Cursor(
                self.label,
                uidvalidity,
                rescan_until=top or None,
                horizon=old.horizon,
                recent=old.recent,
            )
            since = datetime.fromtimestamp(old.horizon, UTC).isoformat()
            self._message_failed(
                f"UIDVALIDITY of {self.label} changed from {old.uidvalidity} to {uidvalidity}:"
                f" rescanning messages that arrived after {since} and were not fired yet"
            )
        await self._save(self.cursor, fence)
        return self.cursor

    async def _candidates(self, session: Session, cursor: Cursor, top: int) -> list[int]:
        narrow = self.opts.filters.search_criteria()
        lo = cursor.last_uid + 1
        cuts = sorted(
            {
                p
                for p in (cursor.unseen_until, cursor.rescan_until)
                if p is not None and lo <= p < top
            }
        )
        found: set[int] = set()
        for hi in [*cuts, top]:
            keys = [f"UID {lo}:{hi}"]
            if cursor.unseen_until is not None and hi <= cursor.unseen_until:
                keys.append("UNSEEN")
            if cursor.rescan_until is not None and hi <= cursor.rescan_until:
                keys.append(f"SINCE {_imap_date(cursor.horizon - 86400)}")
            if narrow:
                keys.append(narrow)
            # Filter client-side too: `UID n:m` may answer with UIDs outside the range.
            found.update(u for u in await session.search(" ".join(keys)) if lo <= u <= hi)
            lo = hi + 1
        return sorted(found)

    async def _batch(self, session: Session, cursor: Cursor, uids: list[int]) -> None:
        meta = await session.fetch_meta(uids)
        for uid in uids:
            item = meta.get(uid)
            if item is not None:
                await self._one(session, cursor, item)
            cursor.advance(uid)

    async def _one(self, session: Session, cursor: Cursor, item: Meta) -> None:
        rescan = cursor.rescan_until is not None and item.uid <= cursor.rescan_until
        if rescan and item.internaldate < cursor.horizon:
            return
        too_large = item.size > self.opts.max_message_bytes
        raw = await session.fetch(item.uid, size=item.size, headers_only=too_large)
        if raw is None:
            return  # expunged meanwhile
        outcome: Outcome = await anyio.to_thread.run_sync(
            partial(
                evaluate,
                raw,
                uid=item.uid,
                uidvalidity=cursor.uidvalidity,
                folder=self.opts.endpoint.folder,
                size=item.size,
                truncated=too_large,
                filters=self.opts.filters,
                opts=self._payload_opts,
            )
        )
        if rescan and cursor.knows(outcome.identity):
            return
        if outcome.error is not None:
            self._message_failed(outcome.error)
            self.ctx.record_occurrence("refused", outcome.error)
            cursor.remember(outcome.identity, item.internaldate)
            return
        if outcome.payload is None:  # filtered out
            self.ctx.record_occurrence(
                "filtered", f"message UID {item.uid}: {outcome.filtered or 'no filter matched'}"
            )
            return
        key = f"email:{self.label}:{cursor.uidvalidity}:{item.uid}"
        await self.ctx.fire(FireRequest(payload=outcome.payload, dedupe_key=key))
        cursor.remember(outcome.identity, item.internaldate)
        if outcome.problems:
            self._message_failed("; ".join(outcome.problems))
        if self.opts.mark_read:
            refused = await session.mark_seen([item.uid])
            if refused:
                self._message_failed(
                    f"message UID {item.uid} fired, but \\Seen was refused: {refused}"
                )

    async def _save(self, cursor: Cursor, fence: int) -> None:
        await self.ctx.set_cursor(cursor.to_json(), fence=fence)

    def describe(self) -> dict[str, Any]:
        last = self.last_sync.isoformat().replace("+00:00", "Z") if self.last_sync else None
        out: dict[str, Any] = {"last_sync": last}
        if self.cursor is not None:
            out["uidvalidity"] = self.cursor.uidvalidity
            out["last_uid"] = self.cursor.last_uid
        return out
