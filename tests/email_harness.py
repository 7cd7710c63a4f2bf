"""Helpers for email trigger tests: build messages, run triggers in the real runtime.

``running()`` wires the same parts the daemon does (SQLite store, group-commit recorder,
TriggerManager with in-process locks) minus HTTP, so a test deploys a spec and watches
events land in the store.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, Self, TypeVar

import anyio

from tests.polling import eventually
from wfsched.deployments import DeploymentService
from wfsched.locks import LocalLocks
from wfsched.manager import TriggerManager
from wfsched.models import TriggerEvent
from wfsched.plugins import configure
from wfsched.recorder import GroupCommitRecorder
from wfsched.store.sqlite import SqliteStore
from wfsched.timer import Timer

T = TypeVar("T")
_ids = iter(range(1, 1_000_000))


def mail(
    subject: str = "hello",
    *,
    sender: str = "Bob <bob@example.com>",
    to: str = "alice@example.com",
    body: str = "hi there",
    html: str | None = None,
    cc: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    message_id: str | None = "auto",
) -> bytes:
    """A well-formed message as bytes (CRLF line ends, as on the wire)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = "Fri, 28 Nov 2025 14:18:53 +0100"
    if message_id == "auto":
        message_id = f"<m{next(_ids)}.{time.time_ns()}@example.com>"
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


@dataclass
class Harness:
    store: SqliteStore
    manager: TriggerManager
    service: DeploymentService

    async def deploy(self, document: dict[str, Any]) -> None:
        await self.service.deploy([self.service.parse_document(document)])
        await self.manager.reconcile()

    async def undeploy(self, workflow_id: str) -> None:
        await self.service.undeploy([workflow_id])
        await self.manager.reconcile()

    async def events(self, workflow_id: str) -> list[TriggerEvent]:
        """Events of a workflow, oldest first."""
        return list(reversed(await self.store.history(workflow_id, limit=1000)))

    async def wait_events(
        self, workflow_id: str, n: int, timeout: float = 10.0
    ) -> list[TriggerEvent]:
        async def probe() -> list[TriggerEvent] | None:
            events = await self.events(workflow_id)
            return events if len(events) >= n else None

        return await eventually(probe, timeout, f"{n} events of {workflow_id}")

    def health(self, workflow_id: str, trigger_id: str = "email") -> tuple[str, str | None]:
        health = self.manager.health(workflow_id, trigger_id)
        assert health is not None, f"{workflow_id}/{trigger_id} is not running"
        return health

    def describe(self, workflow_id: str, trigger_id: str = "email") -> dict[str, Any]:
        return self.manager.describe(workflow_id, trigger_id)

    async def wait_state(
        self, workflow_id: str, state: str, trigger_id: str = "email", timeout: float = 10.0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            info = self.describe(workflow_id, trigger_id)
            return info if info.get("state") == state and info.get("last_sync") else None

        return await eventually(probe, timeout, f"{workflow_id} in state {state!r}")


@asynccontextmanager
async def running(tmp_path: Path, *, config: str = "") -> AsyncIterator[Harness]:
    """Run the trigger runtime on a fresh SQLite store until the block ends."""
    path = tmp_path / "wfsched.toml"
    path.write_text(config)
    settings, registry = configure(str(path), environ={})
    store = SqliteStore(f"sqlite:///{tmp_path / 'wfsched.db'}")
    await store.open()
    recorder = GroupCommitRecorder(store)
    manager = TriggerManager(
        registry=registry,
        store=store,
        recorder=recorder,
        settings=settings,
        locks=LocalLocks(),
        timer=Timer(recorder, on_cursors=store.set_cursors),
    )
    service = DeploymentService(
        store=store, registry=registry, settings=settings, recorder=recorder, manager=manager
    )
    try:
        async with anyio.create_task_group() as tg:
            recorder.start(tg)
            manager.attach(tg)
            yield Harness(store=store, manager=manager, service=service)
            with anyio.fail_after(15):
                await manager.stop_all()
            tg.cancel_scope.cancel()
    finally:
        await store.close()


def email_spec(workflow_id: str, imap: Any, user: str, **fields: Any) -> dict[str, Any]:
    """A workflow with one email trigger on ``user``'s INBOX of the test Dovecot ``imap``;
    ``fields`` add to or override the trigger's fields."""
    trigger = {
        "type": "email",
        "server": "127.0.0.1",
        "port": imap.port,
        "security": "none",
        "user": user,
        "password": "secret",
        "idle_refresh": 2,
        "check_interval": 0.5,
        "timeout": 5,
        **fields,
    }
    return {"id": workflow_id, "triggers": [trigger]}


class FreezingProxy:
    """A loopback TCP proxy whose open connections can be frozen: bytes stop flowing both
    ways but nothing is closed, as with a peer that died behind a NAT. New connections
    made after :meth:`freeze` flow normally."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._frozen: set[int] = set()
        self._conns: dict[int, tuple[socket.socket, socket.socket]] = {}
        self._ids = iter(range(1, 1_000_000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        for a, b in list(self._conns.values()):
            a.close()
            b.close()

    def freeze(self) -> None:
        """Stop forwarding on every connection open now."""
        self._frozen.update(self._conns)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target, timeout=3)
            conn_id = next(self._ids)
            self._conns[conn_id] = (client, upstream)
            threading.Thread(
                target=self._pipe, args=(conn_id, client, upstream), daemon=True
            ).start()

    def _pipe(self, conn_id: int, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                if conn_id in self._frozen:
                    self._stop.wait(0.1)
                    continue
                ready, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            if conn_id not in self._frozen:
                self._conns.pop(conn_id, None)
                a.close()
                b.close()
