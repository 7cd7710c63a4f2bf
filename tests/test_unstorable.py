"""Input no store can hold is refused with 400 before it joins a shared commit.

A ``wfsched serve`` subprocess per store (SQLite and PostgreSQL): each bad body is sent among
concurrent valid requests to another workflow, which must all be answered 202; valid but
unusual bodies must read back from the store exactly as sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.daemon_proc import Daemon, wait_for
from wfsched.backends import open_store
from wfsched.triggers.github.ingress import BadDelivery
from wfsched.triggers.github.ingress import decode as decode_delivery
from wfsched.web.requests import HttpError, parse_json

HOOK = "/api/v1/public/webhook/workflow/"
SPECS = {
    "bad": [{"type": "webhook"}],
    "good": [{"type": "webhook"}],
    "man": [{"type": "manual"}],
}
JSON = "application/json"

# (body, content type, error code): each must be refused, and must not fail anyone else.
UNSTORABLE = [
    (b"+2AA-", "text/plain; charset=utf-7", "invalid_body"),  # decodes to a lone surrogate
    (b"hello", "text/plain; charset=UTF-7", "invalid_body"),
    (b"x", "text/plain; charset=no-such-codec", "invalid_body"),
    (b"caf\xe9", "text/plain; charset=utf-8", "invalid_body"),
    (b"a\x00b", "text/plain; charset=utf-8", "invalid_body"),
    (b"\\ud800", "text/plain; charset=unicode_escape", "invalid_body"),
    (b'{"n": 1e400}', JSON, "invalid_json"),
    (b'{"n": -1e400, "big": 1234567890123456789012}', JSON, "invalid_json"),
    (b'["\\ud800"]', JSON, "invalid_json"),
    (b'{"s": "a\\u0000b"}', JSON, "invalid_json"),
    (b'{"a\\u0000": 1}', JSON, "invalid_json"),
]

# Valid bodies at the edges of what JSON and the stores hold: each must read back identical.
ROUND_TRIP = [
    (b'{"big": 123456789012345678901234567890, "neg": -18446744073709551616}', JSON),
    (b'{"max": 1.7976931348623157e308, "tiny": 5e-324, "zero": -0.0}', JSON),
    (b'{"emoji": "\\ud83d\\ude00", "raw": "\xf0\x9f\x98\x80", "ctl": "\\u0001"}', JSON),
    ("naïve ☃".encode("utf-16"), "text/plain; charset=utf-16"),
    ("café".encode("latin-1"), "text/plain; charset=ISO-8859-1"),
    (bytes(range(256)), "application/octet-stream"),
]


@pytest.fixture
def daemon(store_url: str, tmp_path: Path) -> Iterator[Daemon]:
    specs = tmp_path / "specs"
    specs.mkdir()
    for wf, triggers in SPECS.items():
        (specs / f"{wf}.json").write_text(json.dumps({"id": wf, "triggers": triggers}))
    d = Daemon(tmp_path / "d", env={"DATABASE_URL": store_url})
    d.cli("deploy", str(specs))
    with d:
        wait_for(
            lambda: len(d.get("/api/v1/public/webhooks/status").json()["webhooks"]) == 2,
            message="both webhooks running",
        )
        yield d


async def _burst(url: str, bad: tuple[bytes, str], good: int) -> list[httpx.Response]:
    """One bad request among ``good`` valid ones, all in flight at once (bad ones first)."""
    body, content_type = bad
    limits = httpx.Limits(max_connections=good + 3)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        bads = [
            http.post(HOOK + "bad", content=body, headers={"content-type": content_type})
            for _ in range(3)
        ]
        goods = [http.post(HOOK + "good", json={"n": i}) for i in range(good)]
        return list(await asyncio.gather(*bads, *goods))


@pytest.mark.slow
def test_unstorable_bodies_get_400_and_never_fail_concurrent_requests(daemon: Daemon) -> None:
    for body, content_type, code in UNSTORABLE:
        answers = asyncio.run(_burst(daemon.url, (body, content_type), 40))
        statuses = [(r.status_code, r.json().get("error")) for r in answers]
        assert [s for s, _ in statuses[3:]] == [202] * 40, (body, content_type, statuses)
        assert statuses[:3] == [(400, code)] * 3, (body, content_type, statuses[:3])
        assert answers[0].json()["detail"]
    r = daemon.request("POST", HOOK + "good?%00=1", content=b"")
    assert (r.status_code, r.json()["error"]) == (400, "bad_request")


@pytest.mark.slow
def test_management_routes_refuse_what_the_store_cannot_hold(daemon: Daemon) -> None:
    for body in (b'{"x": 1e400}', b'{"x": "\\ud800"}', b'{"x": "\\u0000"}'):
        manual = b'{"confirm": true, "data": ' + body + b"}"
        r = daemon.request(
            "POST",
            "/api/v1/triggers/workflows/man/manual",
            content=manual,
            headers={"content-type": JSON},
        )
        assert (r.status_code, r.json()["error"]) == (400, "invalid_json"), body
        r = daemon.request(
            "POST",
            "/api/v1/triggers/workflows/good/webhook",
            content=body,
            headers={"content-type": JSON},
        )
        assert (r.status_code, r.json()["error"]) == (400, "invalid_json"), body


@pytest.mark.slow
def test_what_is_stored_reads_back_identical(daemon: Daemon, store_url: str) -> None:
    sent: dict[str, tuple[bytes, str]] = {}
    for body, content_type in ROUND_TRIP:
        r = daemon.request(
            "POST", HOOK + "good", content=body, headers={"content-type": content_type}
        )
        assert r.status_code == 202, (body, r.text)
        sent[r.json()["execution_id"]] = (body, content_type)

    async def read() -> dict[str, Any]:
        store = open_store(store_url)
        await store.open()
        try:
            return {i: (await store.get_event(i)).payload for i in sent}
        finally:
            await store.close()

    stored = anyio.run(read)
    for execution_id, (body, content_type) in sent.items():
        payload = stored[execution_id]
        if payload["body_encoding"] == "json":
            assert _numbers_exact(payload["body"]) == json.loads(body, parse_float=Decimal)
        elif payload["body_encoding"] == "text":
            charset = content_type.partition("charset=")[2]
            assert payload["body"] == body.decode(charset)
        else:
            assert payload["body_encoding"] == "base64"
            assert base64.b64decode(payload["body"]) == body


def _numbers_exact(value: Any) -> Any:
    """``value`` with every number as the Decimal its JSON text means.

    JSON has numbers, not ints and floats: PostgreSQL's jsonb keeps the decimal and writes
    ``1.7976931348623157e308`` back as its 309 digits (read as a Python int), and has no -0.
    """
    if isinstance(value, dict):
        return {k: _numbers_exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_exact(v) for v in value]
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


@pytest.mark.parametrize(
    "body", [b'{"a": 1e400}', b'{"a": NaN}', b'{"a": "\\ud800"}', b'{"a": "\\u0000"}']
)
def test_parse_json_of_management_routes_refuses_unstorable_json(body: bytes) -> None:
    with pytest.raises(HttpError) as info:
        parse_json(body)
    assert info.value.code == "invalid_json"


def test_parse_json_keeps_big_integers_exact() -> None:
    assert parse_json(b'{"a": 123456789012345678901234567890, "b": 1e308}') == {
        "a": 123456789012345678901234567890,
        "b": 1e308,
    }


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"a": 1e400}', JSON),
        (b'{"a": "\\ud800"}', JSON),
        (b'{"a": "\\u0000"}', JSON),
        (b'{"a": NaN}', JSON),
        (
            b"payload=" + urllib.parse.quote('{"a": "\\u0000"}').encode(),
            "application/x-www-form-urlencoded",
        ),
    ],
)
def test_github_deliveries_that_cannot_be_stored_are_refused(
    body: bytes, content_type: str
) -> None:
    with pytest.raises(BadDelivery):
        decode_delivery(body, content_type)


def test_github_deliveries_keep_big_integers_exact() -> None:
    assert decode_delivery(b'{"id": 123456789012345678901234567890}', JSON) == {
        "id": 123456789012345678901234567890
    }
