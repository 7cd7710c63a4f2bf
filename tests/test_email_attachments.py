"""Stored email attachments against a real Dovecot: private modes, names too long for the
file system, and a failure to store one that must never block the mailbox."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dovecot import Dovecot, dovecot_fixture  # noqa: F401 - fixture `dovecot`
from tests.email_harness import email_spec, mail, running
from tests.polling import eventually
from wfsched.triggers.email import message as _imap_message

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def content(path: str) -> bytes:
    return Path(path).read_bytes()


async def test_a_long_name_is_stored_truncated_privately_and_the_next_message_fires(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    files = tmp_path / "files"
    long_name = "é" * 199 + ".pdf"  # 402 bytes in UTF-8: ENAMETOOLONG on every file system
    with umask(0o022):
        async with running(tmp_path) as h:
            spec = email_spec("wf", dovecot, user, attachments="store", attachments_dir=str(files))
            await h.deploy(spec)
            dovecot.save(user, mail("long", attachments=[(long_name, "application/pdf", b"%PDF")]))
            dovecot.save(user, mail("after"))
            events = await h.wait_events("wf", 2)
            assert [e.payload["subject"] for e in events] == ["long", "after"]
            [attachment] = events[0].payload["attachments"]
            assert attachment["filename"] == long_name
            path = Path(attachment["path"])
            assert content(attachment["path"]) == b"%PDF"
            assert len(path.name.encode()) <= _imap_message.NAME_MAX_BYTES
            assert path.name.startswith("ééé") and path.name.endswith(".pdf")
            assert h.health("wf")[0] == "healthy"
    assert mode(path) == 0o600
    for folder in (files, files / "wf", path.parent):
        assert mode(folder) == 0o700, folder


async def test_an_attachment_that_cannot_be_stored_fires_with_an_error_and_degrades(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    user = dovecot.add_user()
    files = tmp_path / "files"
    files.mkdir()
    (files / "wf").write_text("a file where the workflow's folder belongs")
    async with running(tmp_path) as h:
        spec = email_spec("wf", dovecot, user, attachments="store", attachments_dir=str(files))
        await h.deploy(spec)
        dovecot.save(user, mail("blocked", attachments=[("a.csv", "text/csv", b"1,2\n")]))
        [first] = await h.wait_events("wf", 1)
        [attachment] = first.payload["attachments"]
        assert "path" not in attachment
        assert "a.csv" not in attachment["error"] and "not stored" in attachment["error"]
        assert attachment["sha256"] and attachment["size"] == 4

        def degraded() -> str | None:
            health, error = h.health("wf")
            return error if health == "degraded" else None

        error = await eventually(degraded, 5, "degraded health")
        assert "a.csv" in error and "not stored" in error

        (files / "wf").unlink()
        dovecot.save(user, mail("unblocked", attachments=[("b.csv", "text/csv", b"3,4\n")]))
        events = await h.wait_events("wf", 2)
        assert content(events[1].payload["attachments"][0]["path"]) == b"3,4\n"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("é" * 199 + ".pdf", "é" * 125 + ".pdf"),  # 250 + 4 bytes: no half character
        ("a" * 300, "a" * 255),
        ("x" * 300 + "." + "y" * 40, "x" * 255),  # 40 bytes after a dot: no extension
        ("日本語" * 40 + ".tar.gz", "日本語" * 28 + ".gz"),
        ("../../etc/passwd", "passwd"),
        ("bad\udcffname.txt", "bad\ufffdname.txt"),
    ],
)
def test_safe_filename_cuts_by_bytes_keeping_the_extension(name: str, expected: str) -> None:
    result = _imap_message.safe_filename(name)
    assert result == expected
    assert len(result.encode()) <= _imap_message.NAME_MAX_BYTES
