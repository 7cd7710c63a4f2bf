"""Log output: JSON lines, one write per event-loop tick, nothing lost at exit."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from wfsched.logs import (
    JsonFormatter,
    TickHandler,
    _only_handler,
    log_fields,
    register_secret,
    setup_logging,
)


class Sink:
    """A stream that records each write call."""

    def __init__(self, broken: bool = False) -> None:
        self.writes: list[str] = []
        self.broken = broken

    def write(self, text: str) -> int:
        if self.broken:
            raise OSError("stderr is gone")
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        if self.broken:
            raise OSError("stderr is gone")

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in "".join(self.writes).splitlines()]


Logged = tuple[logging.Logger, Sink, TickHandler]
"""The ``logger`` fixture: a logger, the sink its handler writes to, and the handler."""


@pytest.fixture
def logger() -> Iterator[Logged]:
    sink = Sink()
    handler = TickHandler(sink)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("wfsched.test-logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, sink, handler
    log.removeHandler(handler)


def test_outside_an_event_loop_each_line_is_written_at_once(logger: Logged) -> None:
    log, sink, _ = logger
    log.info("fired", extra={"execution_id": "01ABC", "status": "pending"})
    assert len(sink.writes) == 1
    [line] = sink.lines()
    assert line["event"] == "fired"
    assert line["execution_id"] == "01ABC"


def test_in_an_event_loop_the_lines_of_one_tick_go_out_in_one_write(logger: Logged) -> None:
    log, sink, _ = logger

    async def burst() -> int:
        for n in range(500):
            log.info("dispatch attempt", extra={"attempt": n})
        before = len(sink.writes)
        await asyncio.sleep(0)
        return before

    written_during_the_tick = asyncio.run(burst())
    assert written_during_the_tick == 0
    assert len(sink.writes) == 1
    assert [line["attempt"] for line in sink.lines()] == list(range(500))


def test_flush_writes_what_waits_so_nothing_is_lost_when_the_loop_stops(logger: Logged) -> None:
    log, sink, handler = logger

    # The loop stops before the write it scheduled can run; logging.shutdown flushes.
    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: log.info("stopped", extra={"status": "stopped"}))
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()
    assert sink.writes == []
    handler.flush()
    assert [line["event"] for line in sink.lines()] == ["stopped"]


def test_a_broken_stream_never_raises_into_the_event_loop() -> None:
    handler = TickHandler(Sink(broken=True))
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("wfsched.test-logs-broken")
    log.addHandler(handler)
    log.propagate = False
    errors: list[object] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        log.warning("anything")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    try:
        asyncio.run(main())
    finally:
        log.removeHandler(handler)
    assert errors == []


@pytest.fixture
def installed() -> Iterator[Sink]:
    """setup_logging's own root handler, writing to a Sink; the root's handlers restored.

    The test's body runs with pytest's capture handlers on the root too: a test that wants
    the installed handler alone removes them (``alone``)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sink = Sink()
    setup_logging("json", "info")
    root.handlers[0].setStream(sink)  # type: ignore[attr-defined]
    yield sink
    root.handlers[:] = handlers
    root.setLevel(level)


def alone() -> TickHandler:
    """Leave setup_logging's handler alone on the root, as in the daemon."""
    root = logging.getLogger()
    [handler] = [h for h in root.handlers if isinstance(h, TickHandler)]
    root.handlers[:] = [handler]
    return handler


FIELDS = {
    "workflow_id": "wf-1",
    "trigger_type": "manual",
    "trigger_id": "t",
    "execution_id": "01ABC",
    "duration_ms": 1.5,
    "status": "dispatched",
    "attempt": 1,
    "error": None,
    "code": None,
    "mode": "engine",
}


def test_log_fields_writes_the_line_a_record_with_those_extras_gives(installed: Sink) -> None:
    log = logging.getLogger("wfsched.test-log-fields")
    handler = alone()
    assert _only_handler(log, logging.INFO) is handler  # the direct path, no LogRecord
    register_secret("hunter2-secret")
    fields = {**FIELDS, "error": "engine said hunter2-secret"}
    log.info("dispatch attempt", extra=fields)
    log_fields(log, logging.INFO, "dispatch attempt", fields)
    log_fields(log, logging.DEBUG, "below the level", fields)
    handler.flush()
    by_record, direct = sink_lines = installed.lines()
    assert len(sink_lines) == 2
    assert by_record.pop("timestamp") and direct.pop("timestamp")
    assert direct == by_record
    assert direct["error"] == "engine said ***"
    assert list(direct) == [
        "level",
        "service",
        "event",
        "logger",
        *[
            k
            for k in (
                "workflow_id",
                "trigger_id",
                "trigger_type",
                "execution_id",
                "duration_ms",
                "status",
                "error",
                "attempt",
                "mode",
            )
            if k in direct
        ],
    ]


def test_log_fields_leaves_a_line_to_logging_when_another_handler_or_filter_would_see_it(
    installed: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("wfsched.test-log-fields-caplog")
    assert _only_handler(log, logging.INFO) is None  # pytest's handlers are on the root too
    with caplog.at_level(logging.INFO, logger="wfsched.test-log-fields-caplog"):
        log_fields(log, logging.INFO, "fired", FIELDS)
    [record] = caplog.records
    assert record.getMessage() == "fired"
    assert record.execution_id == "01ABC"  # type: ignore[attr-defined]


def test_timestamps_are_utc_iso_with_microseconds_unless_zero(installed: Sink) -> None:
    formatter = JsonFormatter()
    at = datetime(2026, 12, 6, 23, 10, 5, 123456, tzinfo=UTC).timestamp()
    on_the_second = datetime(2026, 12, 6, 23, 10, 6, tzinfo=UTC).timestamp()
    lines = [
        json.loads(formatter.render(t, "INFO", "wfsched", "x", {})) for t in (at, on_the_second)
    ]
    assert [line["timestamp"] for line in lines] == [
        "2026-12-06T23:10:05.123456Z",
        "2026-12-06T23:10:06Z",
    ]
