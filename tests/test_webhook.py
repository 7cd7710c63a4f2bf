"""The ``webhook`` trigger: validation, payloads, and the public ingress over real HTTP.

HTTP tests run ``wfsched serve`` as a subprocess (one per module on SQLite, plus dedicated ones
for PostgreSQL, a locked store and ``kill -9``) and check what the store holds afterwards.
"""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from tests.conftest import PG_DSN, backend_missing
from tests.daemon_proc import Daemon, wait_for
from tests.tcpproxy import TcpProxy
from wfsched.errors import SpecError
from wfsched.httpjson import BadBody
from wfsched.triggers.webhook import TokenBucket, WebhookTrigger
from wfsched.triggers.webhook.auth import sign_hmac_sha256_hex, sign_standard_webhooks
from wfsched.triggers.webhook.payload import decode_body

# GitHub's documented example ("Validating webhook deliveries").
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
# The Standard Webhooks example message (spec and reference libraries).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OLD_SECRET = "the-previous-secret"
JWT_SECRET = "jwt-secret-of-at-least-32-bytes-for-hs256!"
HOOK = "/api/v1/public/webhook/workflow/"

SPECS: dict[str, list[dict[str, Any]]] = {
    "gh": [
        {
            "type": "webhook",
            "dedupe_header": "X-GitHub-Delivery",
            "auth": {
                "type": "hmac",
                "header": "X-Hub-Signature-256",
                "secret": ["env:OLD_SECRET", "env:GH_SECRET"],
            },
        }
    ],
    "sw": [{"type": "webhook", "auth": {"type": "standard-webhooks", "secret": "env:SW_SECRET"}}],
    "tok": [
        {
            "type": "webhook",
            "methods": ["post", "PUT"],
            "auth": {"type": "token", "secret": "tok-0123456789"},
        }
    ],
    "basic": [
        {
            "type": "webhook",
            "auth": {"type": "basic", "username": "alice", "password": ["old-pw", "new-pw"]},
        }
    ],
    "jwt": [
        {
            "type": "webhook",
            "auth": {"type": "jwt", "secret": JWT_SECRET, "audience": "wfsched", "issuer": "ci"},
        }
    ],
    "open": [
        {
            "type": "webhook",
            "methods": ["POST", "GET"],
            "max_body_bytes": 1024,
            "payload": {"team": "ops"},
        }
    ],
    "limited": [
        {"type": "webhook", "rate_limit": 2, "auth": {"type": "hmac", "secret": "limited-secret"}}
    ],
    "broken": [{"type": "webhook", "auth": {"type": "hmac", "secret": "env:WFSCHED_UNSET_X"}}],
}
ENV = {"GH_SECRET": GH_SECRET, "OLD_SECRET": OLD_SECRET, "SW_SECRET": SW_SECRET}


def write_specs(folder: Path, specs: dict[str, list[dict[str, Any]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for wf, triggers in specs.items():
        (folder / f"{wf}.json").write_text(json.dumps({"id": wf, "triggers": triggers}))
    return folder


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("webhook")
    d = Daemon(workdir, env=ENV)
    d.cli("deploy", str(write_specs(workdir / "specs", SPECS)))
    with d:
        wait_for(
            lambda: len(d.get("/api/v1/public/webhooks/status").json()["webhooks"]) == len(SPECS),
            message="every webhook running",
        )
        yield d


def sqlite_events(d: Daemon, workflow_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(d.workdir / "wfsched.db") as conn:
        rows = conn.execute(
            "SELECT execution_id, payload FROM events WHERE workflow_id=? ORDER BY execution_id",
            (workflow_id,),
        ).fetchall()
    return [{"execution_id": r[0], "payload": json.loads(r[1])} for r in rows]


def post(
    d: Daemon, wf: str, body: bytes = b"", method: str = "POST", **headers: str
) -> httpx.Response:
    return d.request(
        method,
        HOOK + wf,
        content=body,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


def sw_headers(
    body: bytes, *, ts: int | None = None, msg_id: str = "msg_1", secret: str = SW_SECRET
) -> dict[str, str]:
    stamp = int(time.time()) if ts is None else ts
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_standard_webhooks(secret, msg_id, stamp, body),
    }


# --- validation and payloads (no server) ---------------------------------------------------


def test_it_fills_in_the_spec_defaults() -> None:
    assert WebhookTrigger.validate({}) == {
        "methods": ["POST"],
        "max_body_bytes": 1024 * 1024,
        "auth": {"type": "none"},
    }
    assert WebhookTrigger.validate(
        {"methods": ["get", "POST", "GET"], "rate_limit": 5, "dedupe_header": "X-Request-Id"}
    ) == {
        "methods": ["GET", "POST"],
        "max_body_bytes": 1024 * 1024,
        "auth": {"type": "none"},
        "dedupe_header": "x-request-id",
        "rate_limit": 5,
    }


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"methodz": ["POST"]}, "methodz", "did you mean 'methods'"),
        ({"max_body_byte": 10}, "max_body_byte", "did you mean 'max_body_bytes'"),
        ({"methods": ["FETCH"]}, "methods", "'FETCH' is not one of"),
        ({"methods": []}, "methods", "at least one"),
        ({"max_body_bytes": -1}, "max_body_bytes", "at least 0"),
        ({"max_body_bytes": 1 << 30}, "max_body_bytes", "at most"),
        ({"rate_limit": 0}, "rate_limit", "> 0"),
        ({"rate_limit": float("nan")}, "rate_limit", "> 0"),
        ({"dedupe_header": "Authorization"}, "dedupe_header", "credentials"),
        ({"dedupe_header": "bad header"}, "dedupe_header", "header name"),
        ({"auth": {"type": "hmac", "secrt": "x"}}, "auth.secrt", "did you mean 'secret'"),
        ({"auth": {"type": "hamc"}}, "auth.type", "did you mean 'hmac'"),
    ],
)
def test_it_refuses_invalid_fields_naming_them(
    config: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as info:
        WebhookTrigger.validate(config)
    assert info.value.field == field
    assert words in str(info.value)


def test_it_warns_about_a_public_webhook_without_auth() -> None:
    [warning] = WebhookTrigger.warnings(WebhookTrigger.validate({}))
    assert "without auth" in warning
    assert WebhookTrigger.warnings({"auth": {"type": "hmac", "secret": "s"}}) == []


def test_deploy_and_check_warn_about_a_public_webhook_without_auth(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    specs = write_specs(tmp_path / "specs", {"open": [{"type": "webhook"}], "safe": SPECS["tok"]})
    deployed = d.cli("deploy", str(specs))
    assert "open: trigger 'webhook': public webhook without auth" in deployed.stderr
    assert "safe:" not in deployed.stderr
    [specs_check] = [c for c in d.cli_json("check")["checks"] if c["name"] == "specs"]
    assert specs_check["ok"]
    assert len(specs_check["warnings"]) == 1
    assert specs_check["warnings"][0].startswith("open: trigger 'webhook': public webhook")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", None, (None, None)),
        (b'{"a": [1, 2]}', "application/json", ({"a": [1, 2]}, "json")),
        (b'{"a": 1}', "application/vnd.github+json; charset=utf-8", ({"a": 1}, "json")),
        (b' [1, "x"]', None, ([1, "x"], "json")),
        (b"{not json", None, ("{not json", "text")),
        (b"a=1&b=2", "application/x-www-form-urlencoded", ("a=1&b=2", "text")),
        ("café".encode("latin-1"), "text/plain; charset=latin-1", ("café", "text")),
        (b"\xff\xfe\x00", None, (base64.b64encode(b"\xff\xfe\x00").decode(), "base64")),
        (b"a\x00b", "text/plain", (base64.b64encode(b"a\x00b").decode(), "base64")),
    ],
)
def test_it_decodes_bodies_by_content_type(
    body: bytes, content_type: str | None, expected: tuple[Any, str | None]
) -> None:
    assert decode_body(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", "not valid JSON"),
        (b'{"a": NaN}', "NaN"),
        (b"[" * 100 + b"]" * 100, "nested deeper than 64"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64"),
        (b'{"a": "x\\u0000y"}', "\\u0000"),
        (b'["\\ud800"]', "surrogate"),
        (b"1" * 5000, "usable JSON"),
        (b'{"a": "\xff"}', "UTF-8"),
    ],
)
def test_it_refuses_json_that_is_broken_or_unstorable(body: bytes, words: str) -> None:
    with pytest.raises(BadBody) as info:
        decode_body(body, "application/json")
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"x", "text/plain; charset=no-such-codec", "unknown"),
        (b"x", "text/plain; charset=base64", "unknown"),
        (b"hello", "text/plain; charset=utf-7", "not accepted"),
        (b"caf\xe9", "text/plain; charset=utf-8", "not valid utf-8"),
        (b"a\x00b", "text/plain; charset=utf-8", "NUL"),
        (b"\\ud800", "text/plain; charset=raw_unicode_escape", "surrogate"),
    ],
)
def test_it_refuses_text_that_does_not_decode_strictly_in_its_declared_charset(
    body: bytes, content_type: str, words: str
) -> None:
    with pytest.raises(BadBody) as info:
        decode_body(body, content_type)
    assert (info.value.code, words in str(info.value)) == ("invalid_body", True), info.value


def test_it_refills_the_token_bucket_at_the_configured_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(2, clock=lambda: now[0])
    assert [bucket.take(), bucket.take()] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0.0
    slow = TokenBucket(0.1, clock=lambda: now[0])
    assert slow.take() == 0.0
    assert slow.take() == pytest.approx(10.0)


# --- ingress over HTTP ---------------------------------------------------------------------


@pytest.mark.slow
def test_it_accepts_githubs_documented_example_and_records_it_once(daemon: Daemon) -> None:
    r = post(
        daemon,
        "gh",
        GH_BODY,
        X_Hub_Signature_256=GH_SIGNATURE,
        X_GitHub_Delivery="d-1",
        Cookie="session=abc",
    )
    assert r.status_code == 202, r.text
    first = r.json()
    assert first == {
        "execution_id": first["execution_id"],
        "workflow_id": "gh",
        "status": "accepted",
    }
    again = post(daemon, "gh", GH_BODY, X_Hub_Signature_256=GH_SIGNATURE, X_GitHub_Delivery="d-1")
    assert again.status_code == 202
    assert again.json()["execution_id"] == first["execution_id"]
    assert again.json()["duplicate"] is True
    [event] = [e for e in sqlite_events(daemon, "gh") if e["execution_id"] == first["execution_id"]]
    payload = event["payload"]
    assert payload["method"] == "POST"
    assert payload["path"] == HOOK + "gh"
    assert payload["body"] == "Hello, World!"
    assert payload["body_encoding"] == "text"
    assert payload["headers"]["x-github-delivery"] == "d-1"
    assert "x-hub-signature-256" not in payload["headers"]
    assert "cookie" not in payload["headers"]


@pytest.mark.slow
def test_it_refuses_a_changed_body_or_signature_and_records_nothing(daemon: Daemon) -> None:
    before = len(sqlite_events(daemon, "gh"))
    assert post(daemon, "gh", GH_BODY + b" ", X_Hub_Signature_256=GH_SIGNATURE).status_code == 401
    flipped = GH_SIGNATURE[:-1] + "6"
    r = post(daemon, "gh", GH_BODY, X_Hub_Signature_256=flipped)
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    assert "x-hub-signature-256" in r.json()["detail"]
    assert post(daemon, "gh", GH_BODY).status_code == 401
    assert len(sqlite_events(daemon, "gh")) == before


@pytest.mark.slow
def test_it_accepts_signatures_from_every_rotated_secret(daemon: Daemon) -> None:
    for secret in (OLD_SECRET, GH_SECRET):
        body = json.dumps({"secret": len(secret)}).encode()
        r = post(daemon, "gh", body, X_Hub_Signature_256=sign_hmac_sha256_hex(secret, body))
        assert r.status_code == 202, r.text
    body = b"{}"
    wrong = sign_hmac_sha256_hex("not-a-configured-secret", body)
    assert post(daemon, "gh", body, X_Hub_Signature_256=wrong).status_code == 401


@pytest.mark.slow
def test_it_verifies_standard_webhooks_and_records_a_webhook_id_once(daemon: Daemon) -> None:
    body = json.dumps({"type": "invoice.paid", "amount": 42}).encode()
    headers = sw_headers(body, msg_id="msg_once")
    first = daemon.request(
        "POST", HOOK + "sw", content=body, headers={**headers, "content-type": "application/json"}
    )
    assert first.status_code == 202, first.text
    # A redelivery is signed again (new timestamp) but keeps its webhook-id.
    again_headers = sw_headers(body, msg_id="msg_once", ts=int(time.time()) - 5)
    again = daemon.request("POST", HOOK + "sw", content=body, headers=again_headers)
    assert again.json()["execution_id"] == first.json()["execution_id"]
    [event] = [
        e for e in sqlite_events(daemon, "sw") if e["execution_id"] == first.json()["execution_id"]
    ]
    assert event["payload"]["body"] == {"type": "invoice.paid", "amount": 42}
    assert event["payload"]["headers"]["webhook-id"] == "msg_once"
    assert "webhook-signature" not in event["payload"]["headers"]


@pytest.mark.slow
def test_it_accepts_one_valid_signature_among_several(daemon: Daemon) -> None:
    body = b'{"n": 1}'
    headers = sw_headers(body, msg_id="msg_multi")
    other = sw_headers(body, msg_id="msg_multi", secret="whsec_" + "A" * 32)
    headers["webhook-signature"] = (
        f"v1a,ignored {other['webhook-signature']} {headers['webhook-signature']}"
    )
    assert daemon.request("POST", HOOK + "sw", content=body, headers=headers).status_code == 202
    headers["webhook-signature"] = other["webhook-signature"]
    headers["webhook-id"] = "msg_multi_2"
    assert daemon.request("POST", HOOK + "sw", content=body, headers=headers).status_code == 401


@pytest.mark.slow
def test_it_refuses_replays_outside_the_five_minute_tolerance(daemon: Daemon) -> None:
    spec_example = {
        "webhook-id": SW_MSG_ID,
        "webhook-timestamp": str(SW_TIMESTAMP),
        "webhook-signature": SW_SIGNATURE,
    }
    r = daemon.request("POST", HOOK + "sw", content=SW_BODY, headers=spec_example)
    assert r.status_code == 401
    assert "in the past" in r.json()["detail"]
    now = int(time.time())
    for offset, word in ((-330, "past"), (330, "future")):
        r = daemon.request(
            "POST",
            HOOK + "sw",
            content=SW_BODY,
            headers=sw_headers(SW_BODY, ts=now + offset, msg_id=f"m{offset}"),
        )
        assert r.status_code == 401
        assert word in r.json()["detail"]
    for offset in (-240, 240):
        r = daemon.request(
            "POST",
            HOOK + "sw",
            content=SW_BODY,
            headers=sw_headers(SW_BODY, ts=now + offset, msg_id=f"ok{offset}"),
        )
        assert r.status_code == 202, r.text


@pytest.mark.slow
def test_it_checks_token_basic_and_jwt_credentials(daemon: Daemon) -> None:
    r = post(daemon, "tok", b"{}")
    assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
    assert post(daemon, "tok", b"{}", Authorization="Bearer wrong").status_code == 401
    assert post(daemon, "tok", b"{}", Authorization="Bearer tok-0123456789").status_code == 202

    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()

    for password, status in (("old-pw", 202), ("new-pw", 202), ("guess", 401)):
        assert post(daemon, "basic", b"x", Authorization=basic(password)).status_code == status
    assert "Basic" in post(daemon, "basic", b"x").headers["www-authenticate"]

    now = int(time.time())
    claims = {"aud": "wfsched", "iss": "ci", "exp": now + 60, "sub": "deployer"}
    good = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    assert post(daemon, "jwt", b"{}", Authorization=f"Bearer {good}").status_code == 202
    for bad in ({**claims, "aud": "other"}, {**claims, "iss": "x"}, {**claims, "exp": now - 120}):
        token = jwt.encode(bad, JWT_SECRET, algorithm="HS256")
        assert post(daemon, "jwt", b"{}", Authorization=f"Bearer {token}").status_code == 401
    for wf in ("tok", "basic", "jwt"):
        for event in sqlite_events(daemon, wf):
            assert "authorization" not in event["payload"]["headers"]


@pytest.mark.slow
def test_it_answers_405_with_the_allowed_methods(daemon: Daemon) -> None:
    r = post(daemon, "gh", method="GET")
    assert (r.status_code, r.headers["allow"], r.json()["error"]) == (
        405,
        "POST",
        "method_not_allowed",
    )
    assert post(daemon, "tok", method="DELETE").headers["allow"] == "POST, PUT"
    assert post(daemon, "open", method="HEAD").status_code == 405
    r = daemon.request("GET", HOOK + "open", params={"page": "2", "q": "é"})
    assert r.status_code == 202
    [event] = [
        e for e in sqlite_events(daemon, "open") if e["execution_id"] == r.json()["execution_id"]
    ]
    assert event["payload"]["method"] == "GET"
    assert event["payload"]["query"] == {"page": "2", "q": "é"}
    assert event["payload"]["body"] is None
    assert event["payload"]["team"] == "ops"


def raw_request(port: int, head: bytes, chunks: list[bytes], timeout: float = 5) -> bytes:
    """Send a request byte by byte as given (no terminator added); return what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server may close as soon as it has answered
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
        return data


@pytest.mark.slow
def test_it_refuses_oversized_bodies_with_413_while_reading(daemon: Daemon) -> None:
    r = post(daemon, "open", b"x" * 1025)
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
    assert post(daemon, "open", b"x" * 1024).status_code == 202
    # Chunked, with no declared length and no final chunk: 413 comes before the body ends.
    head = (
        f"POST {HOOK}open HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"400\r\n" + b"y" * 1024 + b"\r\n"
    answer = raw_request(daemon.port, head, [chunk, chunk])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


@pytest.mark.slow
def test_it_rate_limits_authenticated_requests_only(daemon: Daemon) -> None:
    codes = [
        post(daemon, "limited", b"{}", X_Signature_256="sha256=" + "0" * 64).status_code
        for _ in range(4)
    ]
    assert codes == [401] * 4
    signature = sign_hmac_sha256_hex("limited-secret", b"{}")
    # The unsigned flood used none of the budget: the first signed request passes.
    assert post(daemon, "limited", b"{}", X_Signature_256=signature).status_code == 202
    # A burst at once (concurrent, so a slow fsync per commit cannot refill the bucket) is cut.
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: post(daemon, "limited", b"{}", X_Signature_256=signature), range(8))
        )
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    assert {r.status_code for r in answers} <= {202, 429}
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"] == "rate_limited"


@pytest.mark.slow
def test_it_answers_400_for_bad_input_and_keeps_binary_bodies(daemon: Daemon) -> None:
    json_type = {"Content_Type": "application/json"}
    for body in (b"{", b"[" * 500 + b"]" * 500, b'{"a": Infinity}', b'"\\u0000"'):
        r = post(daemon, "open", body, **json_type)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_json"), body[:20]
    r = daemon.request(
        "POST",
        HOOK + "open",
        content=b"{}",
        headers=[("content-type", "application/json"), ("content-type", "text/plain")],
    )
    assert r.status_code == 400
    assert "repeated" in r.json()["detail"]
    r = daemon.request(
        "POST", HOOK + "open", content=b"{}", headers=[("webhook-id", "a"), ("webhook-id", "b")]
    )
    assert r.status_code == 400
    assert post(daemon, "open", b"{}", webhook_id="a b").status_code == 400
    assert daemon.request("POST", HOOK + "open?x=%00", content=b"").status_code == 400
    binary = bytes(range(256))
    r = post(daemon, "open", binary, Content_Type="application/octet-stream")
    assert r.status_code == 202
    [event] = [
        e for e in sqlite_events(daemon, "open") if e["execution_id"] == r.json()["execution_id"]
    ]
    assert event["payload"]["body_encoding"] == "base64"
    assert base64.b64decode(event["payload"]["body"]) == binary


def webhook_answers(d: Daemon, status: int) -> float:
    """``wfsched_webhook_requests_total`` for one status, from the daemon's /metrics."""
    line = f'wfsched_webhook_requests_total{{code="{status}"}} '
    found = [x for x in d.get("/metrics").text.splitlines() if x.startswith(line)]
    return float(found[0][len(line) :]) if found else 0.0


def test_nothing_else_lives_under_the_per_workflow_webhook_path(daemon: Daemon) -> None:
    """An id with a slash, or none, is no route (404 JSON), never a redirect to a webhook,
    and not counted as a webhook answer."""
    before, recorded = webhook_answers(daemon, 404), len(sqlite_events(daemon, "open"))
    for path in (HOOK + "open/", HOOK + "open/more", HOOK + "open//", HOOK):
        for method in ("POST", "GET"):
            r = daemon.request(method, path, content=b"{}" if method == "POST" else b"")
            assert (r.status_code, r.json()) == (
                404,
                {"error": "not_found", "detail": f"no route {path}"},
            ), (method, path)
            assert "location" not in r.headers
    assert webhook_answers(daemon, 404) == before
    assert len(sqlite_events(daemon, "open")) == recorded
    # The other routes keep Starlette's trailing-slash redirect.
    r = daemon.get("/health/")
    assert (r.status_code, r.headers["location"]) == (307, f"{daemon.url}/health")


@pytest.mark.slow
def test_it_answers_404_for_an_unknown_or_paused_workflow(daemon: Daemon) -> None:
    r = post(daemon, "nope", b"{}")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    daemon.cli("pause", "open")
    try:
        wait_for(lambda: post(daemon, "open", b"{}").status_code == 404, message="paused")
    finally:
        daemon.cli("resume", "open")
    wait_for(lambda: post(daemon, "open", b"{}").status_code == 202, message="resumed")


@pytest.mark.slow
def test_it_answers_503_while_an_auth_secret_cannot_be_resolved(daemon: Daemon) -> None:
    r = post(daemon, "broken", b"{}")
    assert (r.status_code, r.json()["error"]) == (503, "trigger_unavailable")
    assert r.headers["retry-after"]

    def failing() -> dict[str, Any] | None:
        [trigger] = daemon.cli_json("status", "broken")["triggers"]
        return trigger if trigger["health"] == "failing" else None

    trigger = wait_for(failing, timeout=15, message="health failing")
    assert "WFSCHED_UNSET_X" in trigger["last_error"]
    assert sqlite_events(daemon, "broken") == []


@pytest.mark.slow
def test_it_answers_503_and_records_nothing_while_sqlite_is_locked(daemon: Daemon) -> None:
    before = len(sqlite_events(daemon, "open"))
    blocker = sqlite3.connect(daemon.workdir / "wfsched.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        r = httpx.post(daemon.url + HOOK + "open", content=b"{}", timeout=30)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (r.status_code, r.json()["error"]) == (503, "store_unavailable")
    assert r.headers["retry-after"] == "5"
    # The 503 came at store.commit_timeout (5 s), before SQLite's own 10 s busy timeout: the
    # insert still waiting may commit once the lock goes. At least once, never a lost 202.
    assert len(sqlite_events(daemon, "open")) <= before + 1
    assert post(daemon, "open", b"{}").status_code == 202


@pytest.mark.slow
def test_it_loses_no_acknowledged_event_when_killed(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.cli("deploy", str(write_specs(tmp_path / "specs", {"crash": [{"type": "webhook"}]})))
    acked: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                try:
                    r = http.post(d.url + HOOK + "crash", content=b'{"n": 1}')
                except httpx.HTTPError:
                    continue
                if r.status_code == 202:
                    acked.append(r.json()["execution_id"])

    with d:
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(acked) >= 200, timeout=30, message="200 acknowledgements")
            d.kill()
        finally:
            stop.set()
            for t in threads:
                t.join()
        d.start()
        stored = {e["execution_id"] for e in sqlite_events(d, "crash")}
    assert acked
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged events were lost"


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_schema() -> Iterator[str]:
    try:
        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        backend_missing(f"PostgreSQL at {PG_DSN} ({exc})")
        raise
    schema = f"t_hook_{int(time.time() * 1000) % 10**9}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.mark.slow
def test_it_records_on_postgres_and_answers_503_when_it_is_unreachable(
    tmp_path: Path, pg_schema: str
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(PG_DSN)
    port = params.get("port", 5432)
    assert port is not None
    with TcpProxy(str(params.get("host", "127.0.0.1")), int(port)) as proxy:
        url = (
            f"postgresql://{params.get('user', 'postgres')}@127.0.0.1:{proxy.port}/"
            f"{params.get('dbname', 'test')}?options=-csearch_path%3D{pg_schema}"
        )
        d = Daemon(tmp_path, env={"DATABASE_URL": url})
        d.cli("deploy", str(write_specs(tmp_path / "specs", {"pg": [{"type": "webhook"}]})))
        with d:
            headers = {"webhook-id": "evt-1"}
            first = d.request("POST", HOOK + "pg", content=b'{"a": 1}', headers=headers)
            assert first.status_code == 202, first.text
            again = d.request("POST", HOOK + "pg", content=b'{"a": 1}', headers=headers)
            assert again.json()["execution_id"] == first.json()["execution_id"]
            proxy.cut()
            down = httpx.post(d.url + HOOK + "pg", content=b'{"a": 2}', timeout=30)
            assert (down.status_code, down.json()["error"]) == (503, "store_unavailable")
            assert d.get("/health").status_code == 503
            proxy.restore()
            after = wait_for(
                lambda: d.request("POST", HOOK + "pg", content=b'{"a": 3}').status_code == 202,
                timeout=30,
                message="recovery",
            )
            assert after
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT payload FROM {pg_schema}.wfsched_events WHERE workflow_id = 'pg'"
        ).fetchall()
    bodies = sorted(json.dumps(r[0]["body"]) for r in rows)
    assert bodies == ['{"a": 1}', '{"a": 3}']


def _answers(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole answers (head and Content-Length body) read off a raw connection."""
    data = b""
    answers: list[bytes] = []
    while len(answers) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            answers.append(head + b"\r\n\r\n" + rest[:length])
            data = rest[length:]
    return answers


def _raw(d: Daemon, payload: bytes) -> socket.socket:
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(payload)
    return sock


def test_pipelined_webhook_requests_are_answered_in_order_on_one_connection(
    daemon: Daemon,
) -> None:
    # Answers are written whole by the webhook route itself: three requests sent at once, a
    # 202, a 405 (with its Allow) and a 202, come back in order, each with its own body.
    request = (
        "{method} " + HOOK + "open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: {n}\r\n\r\n{body}"
    )
    sent = "".join(
        request.format(method=m, n=len(b), body=b)
        for m, b in (("POST", '{"n":1}'), ("PUT", '{"n":2}'), ("POST", '{"n":3}'))
    )
    with _raw(daemon, sent.encode()) as sock:
        first, refused, third = _answers(sock, 3)
    assert first.startswith(b"HTTP/1.1 202 ") and third.startswith(b"HTTP/1.1 202 ")
    assert refused.startswith(b"HTTP/1.1 405 ") and b"\r\nallow: GET, POST\r\n" in refused
    ids = [json.loads(a.split(b"\r\n\r\n", 1)[1])["execution_id"] for a in (first, third)]
    stored = [e for e in sqlite_events(daemon, "open") if e["execution_id"] in ids]
    assert [e["payload"]["body"]["n"] for e in stored] == [1, 3]
    for answer in (first, refused, third):
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert b"\r\ncontent-type: application/json\r\n" in head
        assert b"\r\ndate: " in head and b"connection: close" not in head


@pytest.mark.parametrize(
    "version, extra", [("HTTP/1.0", ""), ("HTTP/1.1", "Connection: close\r\n")]
)
def test_a_webhook_answer_on_a_connection_not_kept_alive_says_close_and_closes(
    daemon: Daemon, version: str, extra: str
) -> None:
    body = '{"n":1}'
    request = (
        f"POST {HOOK}open {version}\r\nHost: x\r\n{extra}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    with _raw(daemon, request.encode()) as sock:
        [answer] = _answers(sock, 1)
        assert sock.recv(1) == b""  # closed by the server
    assert answer.startswith(b"HTTP/1.1 202 ")
    assert b"\r\nconnection: close" in answer.split(b"\r\n\r\n")[0].lower()
