"""A uvicorn server in a thread of the test process, on uvloop as the daemon runs it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
import uvloop

from tests.daemon_proc import free_port, wait_for


@contextmanager
def uvicorn_thread(
    app: Any,
    http: Any,
    *,
    before_stop: Callable[[asyncio.AbstractEventLoop], None] = lambda loop: None,
    **options: Any,
) -> Iterator[tuple[uvicorn.Server, asyncio.AbstractEventLoop]]:
    """Serve ``app`` with protocol class ``http`` on a free port until the block ends;
    ``before_stop`` runs first (to release what the app holds), then the server stops."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        http=http,
        log_config=None,
        lifespan="off",
        **options,
    )
    server = uvicorn.Server(config)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(server.serve()))
    thread.start()
    try:
        wait_for(lambda: server.started, message="uvicorn started")
        yield server, loop
    finally:
        before_stop(loop)
        server.should_exit = True
        thread.join(10)
        loop.close()
