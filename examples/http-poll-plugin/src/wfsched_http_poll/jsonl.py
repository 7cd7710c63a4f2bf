"""The ``jsonl-file`` dispatch target: appends each event as one JSON line to a file.

A dispatch target written only against the public ``wfsched`` API, registered by the same
entry point as the trigger type (``register_dispatch_targets``). A workflow chooses it with::

    [dispatch]
    mode = "jsonl-file"
    path = "/var/lib/wfsched/events.jsonl"

Each line is the engine-mode event document (``wfsched.event_document``); the line is flushed
and fsynced before the event counts as dispatched. A write error (disk full, no permission) is
retried like an engine outage; a path that is not absolute is refused at deploy, and so is
any path in a spec deployed over the HTTP API (its author has no access to the host's files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from wfsched import (
    ConfigError,
    DispatchError,
    DispatchTarget,
    Fields,
    SpecError,
    TargetContext,
    TriggerEvent,
    event_document,
)


class JsonlFileTarget(DispatchTarget):
    """Appends every event to ``path`` as a JSON line."""

    name = "jsonl-file"

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        path = Fields(options, allowed={"path"}).str("path")
        if not Path(path).is_absolute():
            raise SpecError("must be an absolute file path", field="path")
        return {"path": path}

    @classmethod
    def untrusted_problems(
        cls, options: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]]
    ) -> list[SpecError]:
        # The daemon would append to any file it may write (often as root): only the operator,
        # deploying with the CLI on the host, chooses a path.
        return [SpecError("is not accepted over the HTTP API; deploy with the CLI", field="path")]

    @classmethod
    def check_settings(
        cls, settings: Mapping[str, Mapping[str, Any]], options: Mapping[str, Any]
    ) -> None:
        if not options.get("path"):
            raise ConfigError(
                "the jsonl-file target needs a path: choose it in a workflow's [dispatch] table"
            )

    def __init__(self, ctx: TargetContext, options: Mapping[str, Any]) -> None:
        super().__init__(ctx, options)
        self.path = Path(options["path"])
        self._lock = anyio.Lock()  # one writer at a time: lines never interleave

    def _append(self, line: bytes) -> None:
        with self.path.open("ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    async def send(self, event: TriggerEvent) -> None:
        line = json.dumps(event_document(event), separators=(",", ":")).encode() + b"\n"
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(self._append, line)
            except OSError as exc:
                raise DispatchError(
                    f"cannot append to {self.path}: {exc.strerror or exc}", retry=True
                ) from None
