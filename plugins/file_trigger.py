"""The ``file`` trigger type: fires when a file matching a glob appears or changes.

A drop-in plugin written only against the public ``wfsched`` API: copy this file into any
``plugins.dir`` and the type is available. Payload: ``path``, ``size``, ``mtime``, ``sha256``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from wfsched import BaseTrigger, Fields, FireRequest, SpecError, hookimpl

Snapshot = dict[str, list[Any]]  # path -> [mtime_ns, size, sha256]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan(directory: Path, pattern: str, previous: Snapshot) -> Snapshot:
    """Return the matching files' state; hashes only files whose mtime or size changed."""
    current: Snapshot = {}
    for path in sorted(directory.glob(pattern)):
        try:
            if not path.is_file():
                continue
            stat = path.stat()
            key = str(path)
            old = previous.get(key)
            if old and old[0] == stat.st_mtime_ns and old[1] == stat.st_size:
                current[key] = old
            else:
                current[key] = [stat.st_mtime_ns, stat.st_size, _sha256(path)]
        except OSError:
            continue  # vanished or unreadable between glob and stat: next scan decides
    return current


class FileTrigger(BaseTrigger):
    """Watches ``directory`` for files matching ``pattern`` (polling every ``interval`` s)."""

    type = "file"
    has_run = True

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        fields = Fields(config, allowed={"directory", "pattern", "interval", "fire_existing"})
        directory = fields.str("directory")
        pattern = fields.str("pattern", "*")
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise SpecError("must be a relative glob inside the directory", field="pattern")
        return {
            "directory": directory,
            "pattern": pattern,
            "interval": fields.number("interval", 2.0, minimum=0.05),
            "fire_existing": fields.bool("fire_existing", False),
        }

    def describe(self) -> dict[str, Any]:
        return {"watch": str(Path(self.config["directory"]) / self.config["pattern"])}

    async def run(self) -> None:
        directory = Path(self.config["directory"])
        pattern = self.config["pattern"]
        cursor = await self.ctx.get_cursor()
        if isinstance(cursor, dict):
            known: Snapshot = cursor
        elif self.config["fire_existing"]:
            known = {}
        else:
            known = await anyio.to_thread.run_sync(scan, directory, pattern, {})
            await self.ctx.set_cursor(known)
        while True:
            if not await anyio.to_thread.run_sync(directory.is_dir):
                self.ctx.report_health("degraded", f"directory {directory} does not exist")
            else:
                current = await anyio.to_thread.run_sync(scan, directory, pattern, known)
                for path, state in current.items():
                    if known.get(path) != state:
                        await self._fire(path, state)
                if current != known:
                    known = current
                    await self.ctx.set_cursor(known)
                self.ctx.report_health("healthy")
            await anyio.sleep(self.config["interval"])

    async def _fire(self, path: str, state: list[Any]) -> None:
        mtime_ns, size, sha256 = state
        mtime = datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")
        await self.ctx.fire(
            FireRequest(
                payload={"path": path, "size": size, "mtime": mtime, "sha256": sha256},
                dedupe_key=f"file:{path}:{mtime_ns}:{sha256}",
            )
        )


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(FileTrigger)
