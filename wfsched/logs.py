"""JSON log lines on stderr with the seed's fields, and redaction of secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from wfsched.jsontext import dumps

FIELDS = (
    "workflow_id",
    "trigger_id",
    "trigger_type",
    "execution_id",
    "duration_ms",
    "status",
    "error",
    "attempt",
    "mode",
    "code",
    "path",
    "method",
)
_SECRETS: set[str] = set()
# Credentials that may sit inside URLs or headers quoted in error messages.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


def register_secret(value: str) -> None:
    """Make sure ``value`` never appears in a log line (values under 4 chars are ignored)."""
    if len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """Remove known secrets, URL passwords and bearer tokens from text."""
    # Substring checks first: every field of every log line passes here, and the regexes
    # cost ~20x more than the checks on the usual text that holds neither.
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    if "bearer" in text.lower():
        text = _BEARER.sub(r"\1***", text)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _timestamp(created: float) -> str:
    """``created`` as ISO 8601 UTC with a ``Z`` (microseconds unless zero), the whole seconds
    rendered once per second: the datetime round trip cost more than the rest of a line."""
    global _SECOND
    whole = int(created)
    micro = round((created - whole) * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    second = _SECOND
    if second[0] != whole:
        second = _SECOND = (whole, datetime.fromtimestamp(whole, UTC).isoformat()[:-6])
    return f"{second[1]}.{micro:06d}Z" if micro else second[1] + "Z"


_SECOND = (-1, "")
"""The last whole second :func:`_timestamp` rendered, and its text."""


class _LineFormatter(logging.Formatter, ABC):
    """A formatter whose lines are made by :meth:`render` from a record's parts, so a hot
    line can be rendered from its fields without a ``LogRecord``."""

    def format(self, record: logging.LogRecord) -> str:
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        return self.render(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            record.__dict__,
            exception,
        )

    @abstractmethod
    def render(
        self,
        created: float,
        levelname: str,
        name: str,
        event: str,
        fields: Mapping[str, Any],
        exception: str | None = None,
    ) -> str:
        """The line of a record made of these parts."""


class JsonFormatter(_LineFormatter):
    """One JSON object per line: timestamp, level, service, event and the known fields."""

    def __init__(self) -> None:
        super().__init__()
        self._heads: dict[tuple[str, str, str], str] = {}
        self._secrets = -1

    def render(
        self,
        created: float,
        levelname: str,
        name: str,
        event: str,
        fields: Mapping[str, Any],
        exception: str | None = None,
    ) -> str:
        """The line of a record made of these parts (``fields``: any mapping holding some of
        :data:`FIELDS`). What follows the timestamp up to the fields is the same for every
        line of one logger, level and message: rendered once and kept."""
        if self._secrets != len(_SECRETS):  # a new secret: redact the kept parts again
            self._heads.clear()
            self._secrets = len(_SECRETS)
        key = (levelname, name, event)
        head = self._heads.get(key)
        if head is None:
            head = (
                dumps({"level": levelname.lower(), "service": "wfsched", "event": redact(event)})[
                    1:-1
                ]
                + ',"logger":'
                + dumps(name)
            )
            if len(self._heads) >= HEADS:
                self._heads.clear()
            self._heads[key] = head
        rest: dict[str, Any] = {}
        for field in FIELDS:
            value = fields.get(field)
            if value is not None:
                rest[field] = redact(value) if isinstance(value, str) else value
        if exception is not None:
            rest["exception"] = redact(exception)
        tail = dumps(rest)[1:] if rest else "}"
        return f'{{"timestamp":"{_timestamp(created)}",{head}{"," if rest else ""}{tail}'


HEADS = 1024
"""Distinct (level, logger, message) heads a JSON formatter keeps rendered."""


class TextFormatter(_LineFormatter):
    """Human-readable lines with the same redaction."""

    def render(
        self,
        created: float,
        levelname: str,
        name: str,
        event: str,
        fields: Mapping[str, Any],
        exception: str | None = None,
    ) -> str:
        extras = " ".join(f"{n}={fields[n]}" for n in FIELDS if fields.get(n) is not None)
        ts = datetime.fromtimestamp(created, UTC).strftime("%H:%M:%S.%f")[:-3]
        text = f"{ts} {levelname:<7} {event} {extras}".rstrip()
        if exception is not None:
            text += "\n" + exception
        return redact(text)


class TickHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one event-loop tick in one write.

    Inside a running event loop a formatted line waits for the end of the current tick (a
    burst of fires and dispatches logs thousands of lines a second: one write(2) per tick
    instead of one per line); anywhere else (the CLI, worker threads) it is written at once.
    ``flush`` writes what waits, so nothing is left behind at exit.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = -1

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop running in this thread, if any. The last one found is kept with its
        thread: ``asyncio.get_running_loop`` makes a getpid system call every time."""
        loop = self._loop
        if loop is not None and self._loop_thread == threading.get_ident() and loop.is_running():
            return loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self._loop, self._loop_thread = loop, threading.get_ident()
        return loop

    def emit(self, record: logging.LogRecord) -> None:
        loop = self._running_loop()
        if loop is None:
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own policy for a record it cannot format
            self.handleError(record)
            return
        self._lines.append(line)
        if len(self._lines) == 1:
            loop.call_soon(self.flush)

    def emit_line(self, line: str) -> None:
        """Write a line formatted by :func:`log_fields` as ``emit`` writes a record's."""
        with self.lock or contextlib.nullcontext():
            loop = self._running_loop()
            if loop is None:
                with contextlib.suppress(OSError, ValueError):
                    self.stream.write(line + self.terminator)
                    self.flush()
                return
            self._lines.append(line)
            if len(self._lines) == 1:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            lines, self._lines = self._lines, []
            # A closed or broken stderr loses the lines, as with StreamHandler, and never
            # raises into the event loop (whose error report would log, and fail, again).
            with contextlib.suppress(OSError, ValueError):
                if lines:
                    self.stream.write("\n".join(lines) + "\n")
                super().flush()
        finally:
            self.release()


def log_fields(logger: logging.Logger, level: int, event: str, fields: Mapping[str, Any]) -> None:
    """``logger.log(level, event, extra=fields)``, for the lines written on every fire and
    every dispatch attempt: when the line goes only to the handler :func:`setup_logging`
    installed, it is formatted straight from ``fields``, with no LogRecord (whose making and
    formatting cost several times the rest of the line). The line is the same either way."""
    if not logger.isEnabledFor(level):
        return
    handler = _only_handler(logger, level)
    if handler is None:
        logger.log(level, event, extra=fields)
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter | TextFormatter)  # checked by _only_handler
    handler.emit_line(
        formatter.render(time.time(), logging.getLevelName(level), logger.name, event, fields)
    )


def _only_handler(logger: logging.Logger, level: int) -> TickHandler | None:
    """The installed handler when it alone would get a record of ``logger`` at ``level``
    (no filter on the way, no other handler), else None (then logging handles the record)."""
    handler = _INSTALLED
    if handler is None or logger.disabled:
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            if current.handlers != [handler] or current.parent is not None:
                return None
            if handler.filters or level < handler.level:
                return None
            if type(handler.formatter) not in (JsonFormatter, TextFormatter):
                return None
            return handler
        if not current.propagate:
            return None
        current = current.parent
    return None


_INSTALLED: TickHandler | None = None
"""The root handler :func:`setup_logging` installed."""


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    """Send wfsched's logs to stderr in ``fmt`` (json or text)."""
    # Neither format shows the caller's file and line, the thread or the process: skip
    # collecting them for every record (the logging HOWTO's "Optimization" settings).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _INSTALLED
    handler = TickHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _INSTALLED = handler
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiosmtpd", "mail.log", "imap_tools", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


log = logging.getLogger("wfsched")
