"""One IMAP connection over imap-tools/imaplib: blocking, used from one worker thread at a
time (``_imap_session`` runs it off the event loop under deadlines).

The socket carries a timeout, so a dead peer cannot block a read forever, and ``abort`` may
be called from any thread to make a blocked call return at once. Nothing here ever sends
EXPUNGE: flags are set with ``UID STORE`` directly (imap-tools' ``flag()`` expunges after).
"""

from __future__ import annotations

import imaplib
import re
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import ImapToolsError, MailboxFolderSelectError, MailboxLoginError

from wfsched.triggers.email.options import Endpoint

imaplib.Commands.setdefault("IDLE", ("AUTH", "SELECTED"))
_META = re.compile(rb"UID (\d+)|RFC822\.SIZE (\d+)|INTERNALDATE \"([^\"]+)\"")
_UID = re.compile(rb"UID (\d+)")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
        start=1,
    )
}


class ImapError(Exception):
    """The connection or the server failed; the watcher reconnects with backoff."""


class ConfigProblem(ImapError):
    """Login refused or folder missing: retrying will not help until someone acts."""


@dataclass(frozen=True, slots=True)
class Meta:
    uid: int
    size: int
    internaldate: float
    """Epoch seconds of the server's arrival time."""


class Connection:
    """A logged-in IMAP session with one folder selected. Blocking; one thread at a time."""

    def __init__(self, endpoint: Endpoint, password: str, timeout: float) -> None:
        self.endpoint = endpoint
        self._password = password
        self.timeout = timeout
        self.box: Any = None
        self.idle_supported = False
        self.uidvalidity = 0
        self._idle_tag: bytes | None = None
        self._guard = threading.Lock()
        self._aborted = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # session ------------------------------------------------------------------------------
    def open(self) -> int:
        """Connect, log in, select the folder; return its UIDVALIDITY."""
        ep = self.endpoint
        box: Any
        if ep.security == "ssl":
            box = MailBox(
                ep.server, ep.port, timeout=self.timeout, ssl_context=ssl.create_default_context()
            )
        elif ep.security == "starttls":
            box = MailBoxStartTls(
                ep.server, ep.port, timeout=self.timeout, ssl_context=ssl.create_default_context()
            )
        else:
            box = MailBoxUnencrypted(ep.server, ep.port, timeout=self.timeout)
        with self._guard:
            self.box = box
            if self._aborted:
                # Abandoned while connecting: never leave a logged-in orphan behind.
                _shutdown(box.client.sock)
                raise ImapError("connection abandoned")
        client = self.box.client
        try:
            self.box.login(ep.user, self._password, initial_folder=None)
        except MailboxLoginError as exc:
            raise ConfigProblem(f"login as {ep.user!r} refused: {_server_text(exc)}") from None
        typ, data = client.capability()
        caps = b" ".join(d for d in data if isinstance(d, bytes)).upper().split()
        self.idle_supported = typ == "OK" and b"IDLE" in caps
        try:
            self.box.folder.set(ep.folder)
        except MailboxFolderSelectError as exc:
            raise ConfigProblem(
                f"folder {ep.folder!r} cannot be selected: {_server_text(exc)}"
            ) from None
        value = client.untagged_responses.get("UIDVALIDITY", [b"0"])[-1]
        self.uidvalidity = int(value)
        client.untagged_responses.clear()
        return self.uidvalidity

    def _ok(self, what: str, result: tuple[str, list[Any]]) -> list[Any]:
        typ, data = result
        if typ != "OK":
            raise ImapError(f"{what} failed: {typ} {_bytes_text(data)}")
        return data

    def _forget_untagged(self, *, warnings_are_errors: bool = False) -> None:
        # imaplib keeps every unsolicited response forever; on a long session that leaks.
        client = self.box.client
        bye = client.untagged_responses.get("BYE")
        trouble = [
            *client.untagged_responses.get("NO", []),
            *client.untagged_responses.get("BAD", []),
        ]
        client.untagged_responses.clear()
        if bye:
            raise ImapError(f"server closed the session: {_bytes_text(bye)}")
        if trouble and warnings_are_errors:
            # Unprompted NO/BAD while idle: the session is in trouble (Dovecot says "Internal
            # error" here when a selected folder vanished). A fresh session is cheap.
            raise ImapError(f"server reported: {_bytes_text(trouble)}")

    def search(self, criteria: str) -> list[int]:
        """``UID SEARCH``; ``criteria`` is ASCII IMAP syntax."""
        data = self._ok("UID SEARCH", self.box.client.uid("SEARCH", criteria))
        uids = [int(x) for chunk in data if chunk for x in chunk.split()]
        self._forget_untagged()
        return uids

    def last_uid(self) -> int:
        """UID of the newest message (0 when the folder is empty)."""
        # `UID *` names the newest message even when it is below any given bound.
        return max(self.search("UID *"), default=0)

    def fetch_meta(self, uids: list[int]) -> dict[int, Meta]:
        """Size and arrival time of each message (vanished ones are left out)."""
        if not uids:
            return {}
        data = self._ok(
            "UID FETCH",
            self.box.client.uid(
                "FETCH", ",".join(map(str, uids)), "(UID RFC822.SIZE INTERNALDATE)"
            ),
        )
        out: dict[int, Meta] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid = size = 0
            date = 0.0
            for m in _META.finditer(line):
                if m.group(1):
                    uid = int(m.group(1))
                elif m.group(2):
                    size = int(m.group(2))
                elif m.group(3):
                    date = _parse_date(m.group(3).decode("ascii", "replace"))
            if uid:
                out[uid] = Meta(uid, size, date)
        self._forget_untagged()
        return out

    def fetch(self, uid: int, *, headers_only: bool = False) -> bytes | None:
        """Raw message (or its header) with BODY.PEEK, which leaves \\Seen alone."""
        part = "BODY.PEEK[HEADER]" if headers_only else "BODY.PEEK[]"
        data = self._ok("UID FETCH", self.box.client.uid("FETCH", str(uid), f"(UID {part})"))
        self._forget_untagged()
        for item in data:
            if isinstance(item, tuple) and (m := _UID.search(item[0])) and int(m.group(1)) == uid:
                return bytes(item[1])
        return None

    def mark_seen(self, uids: list[int]) -> str | None:
        """Set \\Seen; return the server's refusal (a read-only folder, say) instead of failing."""
        if not uids:
            return None
        typ, data = self.box.client.uid(
            "STORE", ",".join(map(str, uids)), "+FLAGS.SILENT", r"(\Seen)"
        )
        self._forget_untagged()
        return None if typ == "OK" else f"{typ} {_bytes_text(data)}"

    def check_uidvalidity(self) -> None:
        """Raise ImapError when the folder's UIDVALIDITY moved under this session.

        Servers do not always end a session whose folder was reset or deleted and recreated;
        some keep answering from the old view, so nothing new would ever show up.
        """
        status = self.box.folder.status(self.endpoint.folder, ["UIDVALIDITY"])
        self._forget_untagged()
        current = status.get("UIDVALIDITY")
        if current is not None and current != self.uidvalidity:
            raise ImapError(
                f"UIDVALIDITY of the folder changed under the session "
                f"({self.uidvalidity} -> {current}); selecting it again"
            )

    def noop(self) -> None:
        self._ok("NOOP", self.box.client.noop())
        self._forget_untagged(warnings_are_errors=True)

    # IDLE ---------------------------------------------------------------------------------
    def idle_start(self) -> None:
        client = self.box.client
        tag = client._command("IDLE")
        while client._get_response() is not None:
            if client.tagged_commands.get(tag):
                typ, data = client.tagged_commands.pop(tag)
                raise ImapError(f"IDLE refused: {typ} {_bytes_text(data)}")
        self._idle_tag = tag

    def idle_wait(self, timeout: float) -> bool:
        """Wait during IDLE; True when the server spoke, False on timeout or :meth:`wake`."""
        client = self.box.client
        if self._buffered():
            return True
        ready, _, _ = select.select([client.sock, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            try:
                while self._wake_r.recv(64):
                    pass
            except BlockingIOError:
                pass
        return client.sock in ready

    def _buffered(self) -> bool:
        # A response may already sit in imaplib's reader or the TLS layer, where select()
        # cannot see it; peek without blocking.
        client = self.box.client
        sock = client.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        old = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            return bool(client.file.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
            return False
        finally:
            sock.settimeout(old)

    def idle_done(self) -> None:
        tag, self._idle_tag = self._idle_tag, None
        if tag is None:
            return
        client = self.box.client
        client.send(b"DONE\r\n")
        self._ok("IDLE", client._get_tagged_response(tag))
        self._forget_untagged(warnings_are_errors=True)

    def wake(self) -> None:
        """Interrupt :meth:`idle_wait` (from any thread)."""
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # teardown -----------------------------------------------------------------------------
    def logout(self) -> None:
        """Say goodbye politely (best effort)."""
        if self.box is not None:
            try:
                if self._idle_tag is not None:
                    self.idle_done()
                self.box.client.logout()
            except Exception:  # noqa: BLE001, S110 - the socket is going away either way
                pass
        self.abort()
        # Only a healthy session gets here, so no abandoned thread still selects on these.
        self._wake_r.close()
        self._wake_w.close()

    def abort(self) -> None:
        """Shut the socket down now (from any thread); a blocked reader returns at once.

        The descriptors are closed by the garbage collector once no thread uses them, so a
        still-running abandoned thread never reads a recycled descriptor.
        """
        with self._guard:
            self._aborted = True
            sock = getattr(getattr(self.box, "client", None), "sock", None)
        if sock is not None:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _parse_date(text: str) -> float:
    try:
        day, month, rest = text.strip().split("-", 2)
        year, clock, zone = rest.split(" ")
        hh, mm, ss = (int(x) for x in clock.split(":"))
        epoch = (
            datetime(int(year), _MONTHS[month], int(day), hh, mm, ss) - datetime(1970, 1, 1)
        ).total_seconds()
        offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[0] == "-" else 1)
        return epoch - offset
    except (ValueError, KeyError, IndexError):
        return 0.0


def _bytes_text(data: Any) -> str:
    parts = [
        d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d)
        for d in (data or [])
        if d is not None
    ]
    return " ".join(parts)[:300]


def _server_text(exc: ImapToolsError) -> str:
    # MailboxLoginError's text carries the server's answer, never the command's arguments.
    return str(getattr(exc, "command_result", exc))[:300]
