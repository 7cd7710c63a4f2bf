"""Unit tests of the email trigger's pure parts: fields, filters, MIME parsing, payloads,
and the cursor's memory for a UIDVALIDITY rescan. No server needed."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.email_harness import mail
from wfsched import SpecError
from wfsched.triggers.email.filters import Candidate, compile_filters
from wfsched.triggers.email.message import (
    Malformed,
    PayloadOptions,
    evaluate,
    parse,
    safe_filename,
)
from wfsched.triggers.email.options import resolve, validate, warnings
from wfsched.triggers.email.reader import RECENT_MAX, Cursor

NO_FILTERS = compile_filters({})


def candidate(**kw: Any) -> Candidate:
    base: dict[str, Any] = {
        "sender": ["bob@example.com", "Bob <bob@example.com>"],
        "recipients": ["alice@example.com"],
        "subject": "Invoice 42",
        "body": "Please pay.",
        "has_attachments": False,
    }
    return Candidate(**{**base, **kw})


# fields -------------------------------------------------------------------------------------
def test_it_fills_in_defaults_and_keeps_mailbox_fields_for_the_config() -> None:
    out = validate({"filters": {"subject": "*invoice*"}})
    assert out["folder"] == "INBOX" and out["attachments"] == "metadata"
    assert out["mark_read"] is True and out["idle"] is True
    assert "server" not in out and "password" not in out


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"sever": "imap.example.com"}, "sever", "did you mean 'server'"),
        ({"security": "tls"}, "security", "'ssl', 'starttls', 'none'"),
        ({"port": 70000}, "port", "TCP port"),
        ({"attachments": "all"}, "attachments", "'metadata', 'inline', 'store'"),
        ({"filters": {"subjet": "x"}}, "filters.subjet", "did you mean 'subject'"),
        ({"filters": {"from": "re:(unclosed"}}, "filters.from", "invalid regular expression"),
        ({"filters": {"has_attachments": "yes"}}, "filters.has_attachments", "true or false"),
        ({"filters": {"to": []}}, "filters.to", "pattern or a list"),
        ({"idle_refresh": "45m"}, "idle_refresh", "29m"),
        ({"check_interval": "soon"}, "check_interval", "duration"),
        ({"max_attachment_bytes": -1}, "max_attachment_bytes", "at least 0"),
    ],
)
def test_it_refuses_bad_fields_naming_them(fields: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate(fields)
    assert caught.value.field == field
    assert text in str(caught.value)


def test_it_warns_about_a_literal_password_and_clear_text() -> None:
    assert warnings({"password": "env:IMAP_PW", "security": "ssl"}) == []
    found = warnings({"password": "hunter22", "security": "none"})
    assert len(found) == 2 and all("hunter22" not in w for w in found)


def test_it_takes_mailbox_settings_from_the_email_config_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEST_IMAP_PW", "from-env")
    section = {
        "server": "imap.example.com",
        "port": 993,
        "security": "starttls",
        "user": "ops@example.com",
        "password": "env:TEST_IMAP_PW",
        "check_interval": 90,
    }
    opts = resolve(validate({"folder": "Bills"}), section)
    assert opts.endpoint.label == "ops@example.com@imap.example.com:143/Bills"
    assert opts.password == "from-env"
    assert opts.tuning.check_interval == 90 and opts.tuning.idle_refresh == 300
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    opts = resolve(
        validate({"server": "mx", "user": "u", "password": f"file:{secret}"}),
        {"security": "ssl", "port": 993},
    )
    assert (opts.endpoint.port, opts.password) == (993, "from-file")


def test_it_explains_what_is_missing_without_showing_secrets() -> None:
    with pytest.raises(Exception, match="no IMAP server"):
        resolve(validate({}), {})
    with pytest.raises(Exception, match="no IMAP password"):
        resolve(validate({"server": "mx", "user": "u"}), {"password": ""})
    with pytest.raises(Exception, match="TEST_UNSET_VAR is not set"):
        resolve(validate({"server": "mx", "user": "u", "password": "env:TEST_UNSET_VAR"}), {})


# filters ------------------------------------------------------------------------------------
def test_its_globs_match_whole_values_case_insensitively() -> None:
    filters = compile_filters({"from": "*@EXAMPLE.com", "subject": "invoice *"})
    assert filters.matches(candidate())
    assert not filters.matches(candidate(subject="Re: Invoice 42"))
    assert not filters.matches(candidate(sender=["bob@example.org"]))


def test_its_regexes_search_and_lists_match_any() -> None:
    filters = compile_filters({"subject": r"re:\binvoice\s+\d+", "to": ["ops@*", "alice@*"]})
    assert filters.matches(candidate(subject="Fwd: INVOICE 7"))
    assert not filters.matches(candidate(recipients=["bob@example.com"]))


def test_it_matches_the_display_name_and_the_body_and_attachments() -> None:
    filters = compile_filters({"from": "Bob *", "body": "*pay*", "has_attachments": True})
    assert not filters.matches(candidate())
    assert filters.matches(candidate(has_attachments=True))
    assert not compile_filters({"has_attachments": False}).matches(candidate(has_attachments=True))


def test_it_narrows_the_server_search_only_where_a_literal_is_certain() -> None:
    filters = compile_filters(
        {"from": ["*@a.example", "*@b.example"], "to": "ops@*", "subject": "re:^x", "body": "*ab*"}
    )
    assert filters.search_criteria() == (
        'OR FROM "@a.example" FROM "@b.example" OR TO "ops@" CC "ops@"'
    )
    assert compile_filters({"subject": 'say "hi" *'}).search_criteria() == ""


# MIME ---------------------------------------------------------------------------------------
def test_it_parses_text_html_addresses_and_attachments() -> None:
    raw = mail(
        "Grüße",
        sender="=?utf-8?q?J=C3=BCrgen?= <j@example.com>",
        cc="c@example.com",
        html="<b>hi</b>",
        attachments=[("r.pdf", "application/pdf", b"%PDF")],
    )
    parsed = parse(raw)
    assert (parsed.subject, parsed.sender, parsed.sender_name) == (
        "Grüße",
        "j@example.com",
        "Jürgen",
    )
    assert parsed.cc == ["c@example.com"] and parsed.text == "hi there\n"
    assert parsed.html == "<b>hi</b>\n"
    [att] = parsed.attachments
    assert (att.filename, att.content_type, att.data) == ("r.pdf", "application/pdf", b"%PDF")
    assert parsed.identity == parsed.message_id


def test_it_identifies_a_message_without_message_id_by_its_bytes() -> None:
    raw = mail(message_id=None)
    assert parse(raw).identity == "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"this is not a mail at all\r\njust text\r\n", "no header fields"),
        (b"", "no header fields"),
        (
            b'From: a@b.c\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\nno parts\r\n',
            "StartBoundaryNotFoundDefect",
        ),
        (
            b"From: a@b.c\r\nContent-Type: multipart/mixed\r\n\r\nhello\r\n",
            "NoBoundaryInMultipartDefect",
        ),
        (
            (
                b'From: a@b.c\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n--XX\r\n'
                b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
                b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\nQUJDR\r\n--XX--\r\n'
            ),
            "InvalidBase64LengthDefect",
        ),
    ],
)
def test_it_calls_a_message_malformed_where_content_would_be_lost(raw: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        parse(raw)


def test_it_is_lenient_with_defects_that_lose_nothing() -> None:
    # A missing closing boundary is common and harmless.
    raw = (
        b'From: a@b.c\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary="XX"\r\n'
        b"\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    )
    assert parse(raw).text.strip() == "hi"


def opts(tmp_path: Path, mode: str, limit: int = 1000) -> PayloadOptions:
    return PayloadOptions(
        attachments=mode, max_attachment_bytes=limit, attachments_dir=tmp_path, workflow_id="wf"
    )


def test_it_renders_the_payload_of_spec_section_6(tmp_path: Path) -> None:
    raw = mail("s", attachments=[("a.txt", "text/plain", b"abc")])
    outcome = evaluate(
        raw,
        uid=7,
        uidvalidity=9,
        folder="INBOX",
        size=len(raw),
        truncated=False,
        filters=NO_FILTERS,
        opts=opts(tmp_path, "inline"),
    )
    payload = outcome.payload
    assert payload is not None
    assert {
        "uid",
        "message_id",
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "text",
        "html",
        "attachments",
    } <= payload.keys()
    assert payload["attachments"] == [
        {
            "filename": "a.txt",
            "content_type": "text/plain",
            "size": 3,
            "sha256": hashlib.sha256(b"abc").hexdigest(),
            "content": base64.b64encode(b"abc").decode(),
        }
    ]


def test_it_reports_malformed_and_filtered_messages_without_a_payload(tmp_path: Path) -> None:
    args: dict[str, Any] = {
        "uid": 3,
        "uidvalidity": 1,
        "folder": "INBOX",
        "size": 1,
        "truncated": False,
        "opts": opts(tmp_path, "metadata"),
    }
    broken = evaluate(b"garbage", filters=NO_FILTERS, **args)
    assert broken.payload is None and broken.error and "UID 3" in broken.error
    skipped = evaluate(mail("other"), filters=compile_filters({"subject": "x"}), **args)
    assert skipped.payload is None and skipped.error is None


def test_it_stores_attachments_inside_their_directory_whatever_the_name(tmp_path: Path) -> None:
    raw = mail(
        attachments=[("../../../etc/passwd", "text/plain", b"x"), ("..", "text/plain", b"y")]
    )
    outcome = evaluate(
        raw,
        uid=1,
        uidvalidity=1,
        folder="INBOX",
        size=1,
        truncated=False,
        filters=NO_FILTERS,
        opts=opts(tmp_path, "store"),
    )
    assert outcome.payload is not None
    paths = [Path(a["path"]) for a in outcome.payload["attachments"]]
    assert [p.name for p in paths] == ["passwd", "attachment"]
    assert all(p.resolve().is_relative_to(tmp_path / "wf") for p in paths)
    assert safe_filename("a\x00b:c") == "a_b_c"


# cursor -------------------------------------------------------------------------------------
def position(cursor: Cursor) -> tuple[int, int | None]:
    """``(last_uid, unseen_until)`` of the cursor, read as it is now (after a call that moved it;
    not as a test's own assignment before that call left it)."""
    return cursor.last_uid, cursor.unseen_until


def test_its_cursor_round_trips_and_ignores_another_mailbox() -> None:
    cursor = Cursor("u@h:1/INBOX", 5, last_uid=9, unseen_until=3, horizon=1.5)
    cursor.remember("<a@b>", 2.0)
    assert Cursor.load(cursor.to_json(), "u@h:1/INBOX") == cursor
    assert Cursor.load(cursor.to_json(), "u@h:1/Other") is None
    assert Cursor.load({"mailbox": "u@h:1/INBOX", "uidvalidity": "x"}, "u@h:1/INBOX") is None


def test_its_cursor_forgets_the_oldest_and_moves_the_horizon_past_them() -> None:
    cursor = Cursor("m", 1, horizon=100.0)
    for i in range(RECENT_MAX + 5):
        cursor.remember(f"<{i}@x>", 1000.0 + i)
    assert len(cursor.recent) == RECENT_MAX
    assert cursor.horizon == 1005.0  # the last one forgotten arrived at 1004
    assert cursor.knows(f"<{RECENT_MAX + 4}@x>") and not cursor.knows("<0@x>")
    cursor.unseen_until = 10
    cursor.advance(12)
    assert position(cursor) == (12, None)
