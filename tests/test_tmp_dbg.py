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
from tests.email_harness import FreezingProxy, Harness, email_spec, eventually, mail, running
from wfsched.locks import LocalLocks
from wfsched.triggers._imap_hub import Hub
from wfsched.triggers._imap_options import Endpoint, Tuning

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
        import time as TT; t0=TT.monotonic(); dovecot.delete_folder(user, "Work"); print("delete", TT.monotonic()-t0)
        dovecot.create_folder(user, "Work")
        dovecot.save(user, mail("new in the recreated folder"), folder="Work")
        for message in old:
            dovecot.save(user, message, folder="Work")
        print("all saved", TT.monotonic()-t0, h.describe("wf"))
        import faulthandler, sys, time as T
        try:
            await h.wait_events("wf", 4, timeout=15)
        except AssertionError:
            print("STATE", h.describe("wf"), T.monotonic())
            faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
            print(dovecot.log()[-3000:])
            raise
        await caught_up(h, dovecot, user, folder="Work")
        events = await h.events("wf")
        assert [e.payload["subject"] for e in events] == [
            "old 0",
            "old 1",
            "old 2",
            "new in the recreated folder",
        ]
        assert events[-1].payload["uid"] == 1


