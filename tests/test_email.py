"""The email trigger against a real Dovecot: IDLE, polling, filters, attachments, and the
failures that make IMAP triggers go silent or fire twice elsewhere (kicked sessions, server
restarts, UIDVALIDITY resets, malformed mail, refused logins)."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.dovecot import (  # noqa: F401 - fixture `dovecot`
    PASSWORD,
    Dovecot,
    dovecot_fixture,
    private_dovecot,
)
from tests.email_harness import FreezingProxy, Harness, email_spec, mail, running
from tests.polling import eventually
from wfsched.locks import LocalLocks
from wfsched.triggers.email.hub import Hub
from wfsched.triggers.email.options import Endpoint, Tuning

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BROKEN = (
    b"From: mallory@example.com\r\nSubject: broken\r\nMessage-ID: <broken@example.com>\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\nno boundary anywhere\r\n'
)


async def caught_up(
    h: Harness, server: Dovecot, user: str, wf: str = "wf", folder: str = "INBOX"
) -> None:
    """Wait until the trigger's cursor has passed every message now in the folder."""
    top = server.status(user, folder)["uidnext"] - 1

    async def probe() -> bool:
        return bool(h.describe(wf).get("last_uid", -1) >= top)

    await eventually(probe, 10, f"{wf} to reach UID {top}")


async def test_it_fires_new_mail_while_idling_within_two_seconds(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    dovecot.save(user, mail("unseen before start"))
    dovecot.save(user, mail("seen before start"))
    dovecot.add_flags(user, 2, "\\Seen")
    dovecot.save(user, mail("deleted by another client"))
    dovecot.add_flags(user, 3, "\\Deleted")
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user))
        first = await h.wait_events("wf", 2)
        assert [e.payload["subject"] for e in first] == [
            "unseen before start",
            "deleted by another client",
        ]
        await h.wait_state("wf", "idle")

        started = time.monotonic()
        dovecot.save(user, mail("while idling", html="<p>hi</p>", cc="carol@example.com"))
        events = await h.wait_events("wf", 3, timeout=5)
        latency = time.monotonic() - started
        assert latency < 2.0, f"IDLE fire took {latency:.2f} s"

        payload = events[-1].payload
        assert payload["uid"] == 4
        assert payload["subject"] == "while idling"
        assert payload["from"] == "bob@example.com"
        assert payload["to"] == ["alice@example.com"]
        assert payload["cc"] == ["carol@example.com"]
        assert payload["text"] == "hi there\n"
        assert payload["html"] == "<p>hi</p>\n"
        assert payload["message_id"].endswith("@example.com>")
        assert payload["date"] == "2025-11-28T14:18:53+01:00"
        assert payload["attachments"] == []
        assert events[-1].trigger_type == "email"
        assert h.health("wf") == ("healthy", None)
        # \Seen only after the fire; nothing expunged, even the \Deleted message.
        await eventually(lambda: "\\Seen" in dovecot.flags(user, 4), 5, "\\Seen on 4")
        assert dovecot.status(user)["messages"] == 4


async def test_it_polls_when_idle_is_off_never_refires_and_keeps_flags_without_mark_read(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user, idle=False, mark_read=False))
        info = await h.wait_state("wf", "polling")
        assert info["idle"] is False
        dovecot.save(user, mail("polled"))
        events = await h.wait_events("wf", 1, timeout=5)
        assert events[0].payload["subject"] == "polled"
        await caught_up(h, dovecot, user)
        assert "\\Seen" not in dovecot.flags(user, 1)  # fetched with BODY.PEEK
        # More polls with the cursor at the newest UID: a search reaching `*` would return
        # that message again; it must not fire twice.
        syncs = {h.describe("wf")["last_sync"]}
        for _ in range(3):
            await eventually(lambda: h.describe("wf")["last_sync"] not in syncs, 5, "a poll")
            syncs.add(h.describe("wf")["last_sync"])
        assert len(await h.events("wf")) == 1


async def test_it_fires_only_messages_that_pass_the_filters(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    pdf = [("invoice.pdf", "application/pdf", b"%PDF-1.4 fake")]
    filters = {
        "from": "*@billing.example.org",
        "subject": r"re:^invoice\s+\d+",
        "has_attachments": True,
    }
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user, filters=filters))
        await h.wait_state("wf", "idle")
        dovecot.save(user, mail("Invoice 1", sender="a@billing.example.org", attachments=pdf))
        dovecot.save(user, mail("Invoice 2", sender="a@elsewhere.example.org", attachments=pdf))
        dovecot.save(user, mail("Reminder 3", sender="a@billing.example.org", attachments=pdf))
        dovecot.save(user, mail("Invoice 4", sender="a@billing.example.org"))
        dovecot.save(
            user, mail("INVOICE 5", sender="Billing <A@BILLING.EXAMPLE.ORG>", attachments=pdf)
        )
        await caught_up(h, dovecot, user)
        events = await h.events("wf")
        assert [e.payload["subject"] for e in events] == ["Invoice 1", "INVOICE 5"]


async def test_it_renders_attachments_in_every_mode_over_one_shared_connection(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    small, big = b"a,b\n1,2\n", bytes(range(256)) * 12
    store_dir = tmp_path / "files"
    async with running(tmp_path) as h:
        for mode in ("metadata", "inline", "store"):
            await h.deploy(
                email_spec(
                    mode,
                    dovecot,
                    user,
                    attachments=mode,
                    max_attachment_bytes=1000,
                    attachments_dir=str(store_dir),
                )
            )
        for mode in ("metadata", "inline", "store"):
            await h.wait_state(mode, "idle")
        assert h.describe("store")["shared_by"] == 3
        assert dovecot.sessions(user) == 1

        dovecot.save(
            user,
            mail(
                "files",
                attachments=[
                    ("data.csv", "text/csv", small),
                    ("../../etc/blob.bin", "application/octet-stream", big),
                ],
            ),
        )
        meta, inline, stored = [
            (await h.wait_events(m, 1))[0].payload["attachments"]
            for m in ("metadata", "inline", "store")
        ]
        sha_small, sha_big = (hashlib.sha256(d).hexdigest() for d in (small, big))
        assert meta == [
            {
                "filename": "data.csv",
                "content_type": "text/csv",
                "size": len(small),
                "sha256": sha_small,
            },
            {
                "filename": "../../etc/blob.bin",
                "content_type": "application/octet-stream",
                "size": len(big),
                "sha256": sha_big,
            },
        ]
        assert base64.b64decode(inline[0]["content"]) == small
        assert inline[1]["content"] is None and "max_attachment_bytes" in inline[1]["omitted"]
        paths = [Path(a["path"]) for a in stored]
        assert paths == [
            store_dir / "store" / sha_small / "data.csv",
            store_dir / "store" / sha_big / "blob.bin",
        ]
        assert [p.read_bytes() for p in paths] == [small, big]

        # The last trigger leaving closes the shared connection.
        await h.undeploy("metadata")
        await h.undeploy("inline")
        dovecot.save(user, mail("still watched"))
        await h.wait_events("store", 2)
        assert dovecot.sessions(user) == 1
        await h.undeploy("store")
        await eventually(lambda: dovecot.sessions(user) == 0, 10, "no session left")


async def test_it_records_a_malformed_message_as_an_error_and_moves_on(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user))
        await h.wait_state("wf", "idle")
        for message in (mail("good 1"), BROKEN, mail("good 2")):
            dovecot.save(user, message)
        events = await h.wait_events("wf", 2)
        await caught_up(h, dovecot, user)
        assert [e.payload["subject"] for e in await h.events("wf")] == ["good 1", "good 2"]
        health, error = h.health("wf")
        assert health == "degraded"
        assert error is not None and "UID 2" in error and "malformed" in error
        assert "\\Seen" not in dovecot.flags(user, 2)  # left for a human to look at
        assert events[1].payload["uid"] == 3


async def test_it_survives_kicked_sessions_without_loss_double_or_leaked_sessions(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user))
        await h.wait_state("wf", "idle")
        kicks = 8
        for i in range(kicks):
            connects = h.describe("wf")["connects"]
            dovecot.save(user, mail(f"before kick {i}"))
            dovecot.kick(user)
            dovecot.save(user, mail(f"after kick {i}"))

            # Back in session and synced: a session kicked before its first sync counts as a
            # failed attempt, and failures in a row back off (up to 16 s at the fifth).
            async def reconnected(before: int = connects) -> bool:
                info = h.describe("wf")
                return bool(info["connects"] > before and info.get("state") == "idle")

            await eventually(reconnected, 10, f"reconnect after kick {i}")
        events = await h.wait_events("wf", 2 * kicks, timeout=15)
        await caught_up(h, dovecot, user)
        events = await h.events("wf")
        uids = [e.payload["uid"] for e in events]
        assert sorted(uids) == list(range(1, 2 * kicks + 1))
        assert dovecot.sessions(user) <= 1
        await h.wait_state("wf", "idle")
        assert h.health("wf") == ("healthy", None)


async def test_it_recovers_from_a_server_restart_without_loss_or_double(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user))
        await h.wait_state("wf", "idle")
        dovecot.save(user, mail("one"))
        await h.wait_events("wf", 1)
        dovecot.save(user, mail("two, maybe seen before the stop"))
        dovecot.stop()

        async def degraded() -> bool:
            return h.health("wf")[0] != "healthy"

        await eventually(degraded, 10, "the outage to show in health")
        assert "127.0.0.1" in (h.health("wf")[1] or "")
        dovecot.start()
        dovecot.save(user, mail("three"))
        await h.wait_events("wf", 3, timeout=20)
        await caught_up(h, dovecot, user)
        assert [e.payload["uid"] for e in await h.events("wf")] == [1, 2, 3]
        await h.wait_state("wf", "idle")
        assert h.health("wf") == ("healthy", None)


async def test_it_rescans_safely_after_a_uidvalidity_reset(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user))
        await h.wait_state("wf", "idle")
        for i in range(3):
            dovecot.save(user, mail(f"old {i}"))
        await h.wait_events("wf", 3)
        old = dovecot.status(user)["uidvalidity"]
        dovecot.set_uid_validity(user, old + 1000)
        dovecot.save(user, mail("new after reset"))
        events = await h.wait_events("wf", 4, timeout=15)
        await eventually(
            lambda: h.describe("wf").get("uidvalidity") == old + 1000,
            10,
            "the new UIDVALIDITY in the cursor",
        )
        await caught_up(h, dovecot, user)
        events = await h.events("wf")
        assert [e.payload["subject"] for e in events] == [
            "old 0",
            "old 1",
            "old 2",
            "new after reset",
        ]
        assert events[-1].payload["uidvalidity"] == old + 1000
        health, error = h.health("wf")
        assert health == "degraded" and error is not None and "UIDVALIDITY" in error


async def test_it_rescans_a_recreated_folder_by_message_id(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    dovecot.create_folder(user, "Work")
    old = [mail(f"old {i}") for i in range(3)]
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user, folder="Work"))
        await h.wait_state("wf", "idle")
        for message in old:
            dovecot.save(user, message, folder="Work")
        await h.wait_events("wf", 3)
        # The folder comes back renumbered: the new mail first (UID 1), then the old ones.
        # Trusting UIDs would fire an old message again (UID 4) and skip the new one (UID 1).
        dovecot.delete_folder(user, "Work")
        dovecot.create_folder(user, "Work")
        dovecot.save(user, mail("new in the recreated folder"), folder="Work")
        for message in old:
            dovecot.save(user, message, folder="Work")
        await h.wait_events("wf", 4, timeout=15)
        await caught_up(h, dovecot, user, folder="Work")
        events = await h.events("wf")
        assert [e.payload["subject"] for e in events] == [
            "old 0",
            "old 1",
            "old 2",
            "new in the recreated folder",
        ]
        assert events[-1].payload["uid"] == 1


async def test_it_reports_a_refused_login_as_failing_without_the_password(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    async with running(tmp_path) as h:
        await h.deploy(email_spec("wf", dovecot, user, password="wrong-password-1234"))
        await h.deploy(email_spec("nofolder", dovecot, user, folder="Nope"))

        async def failing() -> tuple[str, str | None] | None:
            health = h.health("wf")
            return health if health[0] == "failing" else None

        _, error = await eventually(failing, 10, "failing health")
        assert error is not None and "login" in error and user in error
        assert "wrong-password-1234" not in error

        async def folder_failing() -> str | None:
            health, error = h.health("nofolder")
            return error if health == "failing" else None

        assert "folder 'Nope' cannot be selected" in await eventually(folder_failing, 10)


async def test_it_notices_a_connection_gone_silent_and_reconnects(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    with FreezingProxy(dovecot.port) as proxy:
        async with running(tmp_path) as h:
            await h.deploy(
                email_spec("wf", dovecot, user, port=proxy.port, timeout=1, idle_refresh=1)
            )
            await h.wait_state("wf", "idle")
            connects = h.describe("wf")["connects"]
            proxy.freeze()  # no FIN, no RST: only deadlines can tell
            dovecot.save(user, mail("sent into the silence"))
            events = await h.wait_events("wf", 1, timeout=10)
            assert events[0].payload["subject"] == "sent into the silence"
            assert h.describe("wf")["connects"] > connects


class StallingReader:
    """A subscriber whose first sync hangs forever (say, a wedged store call)."""

    tuning = Tuning(idle=True, idle_refresh=1.0, check_interval=1.0, timeout=1.0)

    def __init__(self) -> None:
        self.syncs = 0
        self.reports: list[tuple[str, str | None]] = []
        self.locks = LocalLocks()

    def lock(self, name: str, *, ttl: float) -> Any:
        return self.locks.hold(name, ttl=ttl)

    async def sync(self, session: Any, uidvalidity: int, fence: int) -> None:
        self.syncs += 1
        if self.syncs == 1:
            await anyio.sleep_forever()

    def sync_failed(self, exc: Exception) -> None:
        raise AssertionError(f"unexpected {exc!r}")

    def connection(self, health: str, error: str | None) -> None:
        self.reports.append((health, error))


async def test_its_watchdog_restarts_a_stalled_watcher(dovecot: Dovecot) -> None:
    user = dovecot.add_user()
    endpoint = Endpoint(
        server="127.0.0.1", port=dovecot.port, security="none", user=user, folder="INBOX"
    )
    reader = StallingReader()
    hub = Hub()
    async with (
        anyio.create_task_group() as tg,
        hub.subscribe(endpoint, PASSWORD, reader) as watcher,
    ):
        tg.start_soon(watcher.participate, reader)
        await eventually(lambda: reader.syncs >= 2, 15, "a second sync after the stall")
        assert any(h == "degraded" and e and "watchdog" in e for h, e in reader.reports)
        await eventually(lambda: reader.reports[-1] == ("healthy", None), 5, "healthy again")
        assert watcher.connects == 2
        tg.cancel_scope.cancel()
    assert hub.watchers() == []


async def test_it_watches_over_implicit_tls_and_starttls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_dovecot(tls=True) as server:
        assert server.ca_file is not None
        # OpenSSL's default trust store honours SSL_CERT_FILE: trust the test certificate.
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
        user = server.add_user()
        async with running(tmp_path) as h:
            await h.deploy(
                email_spec(
                    "ssl", server, user, server="localhost", port=server.tls_port, security="ssl"
                )
            )
            await h.deploy(
                email_spec("starttls", server, user, server="localhost", security="starttls")
            )
            for wf in ("ssl", "starttls"):
                await h.wait_state(wf, "idle")
            started = time.monotonic()
            server.save(user, mail("over TLS"))
            for wf in ("ssl", "starttls"):
                [event] = await h.wait_events(wf, 1, timeout=5)
                assert event.payload["subject"] == "over TLS"
            assert time.monotonic() - started < 2.0
            assert server.sessions(user) == 2  # different ports: separate connections
