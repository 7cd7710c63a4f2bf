"""Log output: JSON lines, one write per event-loop tick, nothing lost at exit."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest

from wfsched.logs import JsonFormatter, TickHandler


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


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, Sink, TickHandler]]:
    sink = Sink()
    handler = TickHandler(sink)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("wfsched.test-logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, sink, handler
    log.removeHandler(handler)


def test_outside_an_event_loop_each_line_is_written_at_once(logger: tuple) -> None:
    log, sink, _ = logger
    log.info("fired", extra={"execution_id": "01ABC", "status": "pending"})
    assert len(sink.writes) == 1
    [line] = sink.lines()
    assert line["event"] == "fired"
    assert line["execution_id"] == "01ABC"


def test_in_an_event_loop_the_lines_of_one_tick_go_out_in_one_write(logger: tuple) -> None:
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


def test_flush_writes_what_waits_so_nothing_is_lost_when_the_loop_stops(logger: tuple) -> None:
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
