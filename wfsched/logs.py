"""JSON log lines on stderr with the seed's fields, and redaction of secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, service, event and the known fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat()[:-6] + "Z",
            "level": record.levelname.lower(),
            "service": "wfsched",
            "event": redact(record.getMessage()),
            "logger": record.name,
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return dumps(line)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{n}={record.__dict__[n]}" for n in FIELDS if record.__dict__.get(n) is not None
        )
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        text = f"{ts} {record.levelname:<7} {record.getMessage()} {extras}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
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

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
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


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    """Send wfsched's logs to stderr in ``fmt`` (json or text)."""
    # Neither format shows the caller's file and line, the thread or the process: skip
    # collecting them for every record (the logging HOWTO's "Optimization" settings).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = TickHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiosmtpd", "mail.log", "imap_tools", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


log = logging.getLogger("wfsched")
