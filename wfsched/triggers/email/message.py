"""One fetched message → the email event payload, attachments included.

Parsing is lenient like every mail client, except where content would be lost or invented:
a message without headers, a multipart body without its boundary, or base64 that cannot be
decoded is *malformed*, and the watcher records it as an error instead of firing garbage.
These functions block (CPU, file writes) and run in worker threads.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from imap_tools import MailMessage

from wfsched.triggers.email.filters import Candidate, Filters

# Defects after which the parsed message no longer says what the sender sent.
FATAL_DEFECTS = frozenset(
    {
        "NoBoundaryInMultipartDefect",
        "StartBoundaryNotFoundDefect",
        "InvalidBase64LengthDefect",
    }
)
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:]")
_SURROGATE = re.compile("[\ud800-\udfff]")
NAME_MAX_BYTES = 255
"""The longest file name (in bytes) of ext4, XFS, btrfs, APFS and most others."""
MAX_EXTENSION_BYTES = 16
"""A longer tail after the last dot is part of the name, not a type to keep."""
DIR_MODE = 0o700
"""Stored attachments are private (the files are 0600, as ``mkstemp`` creates them)."""


class Malformed(Exception):
    """The message cannot be parsed faithfully; the text says why."""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class Parsed:
    """The parts of a message the payload and the filters use."""

    message_id: str | None
    sender: str
    sender_name: str
    to: list[str]
    cc: list[str]
    recipients_full: list[str]
    subject: str
    date: str | None
    text: str
    html: str
    attachments: list[Attachment]
    identity: str
    """Message-ID, or a hash of the raw bytes when there is none: survives a UID reset."""

    def candidate(self) -> Candidate:
        full_from = f"{self.sender_name} <{self.sender}>" if self.sender_name else self.sender
        return Candidate(
            sender=[self.sender, full_from],
            recipients=[*self.to, *self.cc, *self.recipients_full],
            subject=self.subject,
            body=self.text or self.html,
            has_attachments=bool(self.attachments),
        )


def parse(raw: bytes) -> Parsed:
    """Parse raw RFC 5322 bytes; raise :class:`Malformed` when the content cannot be trusted."""
    try:
        msg = MailMessage.from_bytes(raw)
        if not raw.strip() or not msg.obj.keys():
            raise Malformed("no header fields (not an RFC 5322 message)")
        attachments = [Attachment(a.filename, a.content_type, a.payload) for a in msg.attachments]
        text, html = _lines(msg.text), _lines(msg.html)
        _check_defects(msg.obj)
        message_id = (msg.obj.get("Message-ID") or "").strip() or None
        sender = msg.from_values
        return Parsed(
            message_id=message_id,
            sender=msg.from_,
            sender_name=sender.name if sender else "",
            to=list(msg.to),
            cc=list(msg.cc),
            recipients_full=[a.full for a in (*msg.to_values, *msg.cc_values)],
            subject=msg.subject,
            date=_date(msg.date_str),
            text=text,
            html=html,
            attachments=attachments,
            identity=message_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        )
    except Malformed:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is a malformed message
        raise Malformed(f"cannot be parsed: {type(exc).__name__}: {exc}") from None


def _lines(value: str) -> str:
    return value.replace("\r\n", "\n")


def _check_defects(message: Message) -> None:
    for part in message.walk():
        for defect in part.defects:
            name = type(defect).__name__
            if name in FATAL_DEFECTS:
                raise Malformed(f"{part.get_content_type()} part: {name}")


def _date(value: str) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError):
        return None


def safe_filename(name: str) -> str:
    """A file name that stays inside its directory and fits a file system, whatever the sender
    wrote: at most ``NAME_MAX_BYTES`` in UTF-8, cut between characters, extension kept."""
    base = _UNSAFE_NAME.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip().lstrip(".")
    base = _SURROGATE.sub("\ufffd", base) or "attachment"
    if len(base.encode()) <= NAME_MAX_BYTES:
        return base
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or len(ext.encode()) > MAX_EXTENSION_BYTES:
        stem, ext = base, ""
    suffix = f".{ext}" if ext else ""
    budget = NAME_MAX_BYTES - len(suffix.encode())
    # Cutting UTF-8 bytes can split the last character; "ignore" drops that partial one.
    return stem.encode()[:budget].decode("utf-8", "ignore") + suffix


@dataclass(frozen=True, slots=True)
class PayloadOptions:
    attachments: str
    max_attachment_bytes: int
    attachments_dir: Path
    workflow_id: str


def attachment_json(att: Attachment, opts: PayloadOptions) -> dict[str, Any]:
    """Describe one attachment in the configured mode (``store`` writes the file)."""
    out: dict[str, Any] = {
        "filename": att.filename,
        "content_type": att.content_type,
        "size": len(att.data),
        "sha256": att.sha256,
    }
    if opts.attachments == "inline":
        if len(att.data) <= opts.max_attachment_bytes:
            out["content"] = base64.b64encode(att.data).decode("ascii")
        else:
            out["content"] = None
            out["omitted"] = f"larger than max_attachment_bytes ({opts.max_attachment_bytes})"
    elif opts.attachments == "store":
        try:
            out["path"] = str(store_attachment(att, opts.attachments_dir / opts.workflow_id))
        except Exception as exc:  # noqa: BLE001 - one file must never block the mailbox
            # The message still fires, without ``path``: the workflow sees what is missing,
            # and the trigger turns degraded (``Outcome.problems``).
            out["error"] = f"not stored: {_reason(exc)}"
    return out


def _reason(exc: BaseException) -> str:
    """Why a write failed, without the path (it repeats the sender's file name)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents mode 0700, whatever the umask."""
    missing: list[Path] = []
    for folder in (directory, *directory.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # a concurrent writer made it; its mode is its own
        os.chmod(folder, DIR_MODE)


def store_attachment(att: Attachment, directory: Path) -> Path:
    """Write under ``directory/<sha256>/<name>`` atomically; identical content is written once.

    Files are 0600 and the folders this creates 0700."""
    target_dir = directory / att.sha256
    target = target_dir / safe_filename(att.filename)
    if target.is_file() and target.stat().st_size == len(att.data):
        return target
    _private_dirs(target_dir)
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(att.data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the watcher does with one message: fire ``payload``, skip it, or report ``error``."""

    identity: str
    payload: dict[str, Any] | None = None
    error: str | None = None
    problems: tuple[str, ...] = ()
    """What went wrong in a message that fires anyway (an attachment not stored)."""
    filtered: str | None = None
    """Why a message the filters turned away did not fire."""


def evaluate(
    raw: bytes,
    *,
    uid: int,
    uidvalidity: int,
    folder: str,
    size: int,
    truncated: bool,
    filters: Filters,
    opts: PayloadOptions,
) -> Outcome:
    """Parse, filter and render one message (runs in a worker thread)."""
    try:
        parsed = parse(raw)
    except Malformed as exc:
        identity = "sha256:" + hashlib.sha256(raw).hexdigest()
        return Outcome(identity=identity, error=f"message UID {uid} is malformed: {exc}")
    candidate = parsed.candidate()
    if not filters.matches(candidate):
        return Outcome(identity=parsed.identity, filtered=filters.why_not(candidate))
    payload: dict[str, Any] = {
        "uid": uid,
        "uidvalidity": uidvalidity,
        "folder": folder,
        "message_id": parsed.message_id,
        "from": parsed.sender,
        "from_name": parsed.sender_name,
        "to": parsed.to,
        "cc": parsed.cc,
        "subject": parsed.subject,
        "date": parsed.date,
        "text": parsed.text,
        "html": parsed.html,
        "size": size,
        "attachments": [attachment_json(a, opts) for a in parsed.attachments],
    }
    if truncated:
        payload["truncated"] = True
    problems = tuple(
        f"message UID {uid}: attachment {a['filename']!r} {a['error']}"
        for a in payload["attachments"]
        if "error" in a
    )
    return Outcome(identity=parsed.identity, payload=payload, problems=problems)
