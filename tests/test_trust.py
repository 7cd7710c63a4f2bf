"""Trust boundaries: who may deploy what, who is a client, who fired.

Every test runs against a real ``wfsched serve`` subprocess over real HTTP, and reads what
the SQLite store holds afterwards.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_proc import Daemon, wait_for
from wfsched.triggers.webhook.auth import sign_hmac_sha256_hex, sign_standard_webhooks

pytestmark = pytest.mark.slow

TOKEN = "trust-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "limited-secret-0123456789"
HOOK = "/api/v1/public/webhook/workflow/"
MANAGEMENT = [
    ("GET", "/api/v1/deployment/workflows"),
    ("POST", "/api/v1/deployment/workflows/x/deploy"),
    ("PUT", "/api/v1/deployment/workflows/x/deploy"),
    ("DELETE", "/api/v1/deployment/workflows/x/undeploy"),
    ("GET", "/api/v1/deployment/workflows/x/status"),
    ("POST", "/api/v1/triggers/workflows/x/manual"),
    ("POST", "/api/v1/triggers/workflows/x/webhook"),
    ("GET", "/api/v1/triggers/workflows/x/status"),
    ("GET", "/api/v1/triggers/health"),
    ("GET", "/api/v1/public/webhooks/status"),
]
# Deployed with the CLI on the host, which may use env:/file: references.
HOST_SPECS: dict[str, list[dict[str, Any]]] = {
    "ops": [{"type": "manual", "require_confirmation": False}],
    "limited": [
        {"type": "webhook", "rate_limit": 2, "auth": {"type": "hmac", "secret": "env:HMAC_SECRET"}}
    ],
    "sw": [
        {
            "type": "webhook",
            "dedupe_header": "X-Request-Id",
            "auth": {"type": "standard-webhooks", "secret": "env:SW_SECRET"},
        }
    ],
    "mail": [
        {
            "type": "email",
            "id": "mail",
            "server": "127.0.0.1",
            "port": 9,
            "user": "ops",
            "password": "file:/etc/wfsched/imap-password",
            "enabled": False,
        }
    ],
}


def local_address() -> str | None:
    """A non-loopback address of this machine, to be a "remote" client of a 0.0.0.0 bind."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("203.0.113.1", 9))  # no packet is sent: this only picks a route
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def write_specs(folder: Path, specs: dict[str, list[dict[str, Any]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for wf, triggers in specs.items():
        (folder / f"{wf}.json").write_text(json.dumps({"id": wf, "triggers": triggers}))
    return folder


def events(d: Daemon, workflow_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(d.workdir / "wfsched.db") as conn:
        rows = conn.execute(
            "SELECT execution_id, payload FROM events WHERE workflow_id=? ORDER BY execution_id",
            (workflow_id,),
        ).fetchall()
    return [{"execution_id": r[0], "payload": json.loads(r[1])} for r in rows]


def webhooks_running(d: Daemon, count: int, headers: dict[str, str]) -> None:
    wait_for(
        lambda: (
            len(d.get("/api/v1/public/webhooks/status", headers=headers).json()["webhooks"])
            >= count
        ),
        message="webhooks running",
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Bound to every address with a token; the environment asks uvicorn to trust any proxy."""
    workdir = tmp_path_factory.mktemp("trust")
    env = {
        "HOST": "0.0.0.0",
        "WFSCHED_API_TOKEN": TOKEN,
        "FORWARDED_ALLOW_IPS": "*",
        "SW_SECRET": SW_SECRET,
        "HMAC_SECRET": HMAC_SECRET,
    }
    d = Daemon(workdir, env=env)
    d.cli("deploy", str(write_specs(workdir / "specs", HOST_SPECS)))
    with d:
        webhooks_running(d, 2, AUTH)
        yield d


@pytest.fixture(scope="module")
def public_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Bound to every address without a token: the management API is closed."""
    workdir = tmp_path_factory.mktemp("public")
    env = {"HOST": "0.0.0.0", "FORWARDED_ALLOW_IPS": "*", "WFSCHED_API_TOKEN": ""}
    d = Daemon(workdir, env=env)
    d.cli("deploy", str(write_specs(workdir / "specs", {"open": [{"type": "webhook"}]})))
    with d:
        wait_for(lambda: d.request("POST", HOOK + "open").status_code == 202, message="webhook")
        yield d


def deploy(d: Daemon, spec: dict[str, Any], method: str = "POST") -> httpx.Response:
    path = f"/api/v1/deployment/workflows/{spec['id']}/deploy"
    return d.request(method, path, json=spec, headers=AUTH)


# --- env:/file: references over the API ----------------------------------------------------

REFERENCE_CASES = [
    ("token", {"type": "webhook", "auth": {"type": "token", "secret": "REF"}}, "auth.secret"),
    (
        "hmac-rotated",
        {"type": "webhook", "auth": {"type": "hmac", "secret": ["a-literal-secret", "REF"]}},
        "auth.secret",
    ),
    (
        "sw",
        {"type": "webhook", "auth": {"type": "standard-webhooks", "secret": "REF"}},
        "auth.secret",
    ),
    (
        "basic-user",
        {"type": "webhook", "auth": {"type": "basic", "username": "REF", "password": "pw"}},
        "auth.username",
    ),
    (
        "basic-password",
        {"type": "webhook", "auth": {"type": "basic", "username": "u", "password": "REF"}},
        "auth.password",
    ),
    ("jwt-secret", {"type": "webhook", "auth": {"type": "jwt", "secret": "REF"}}, "auth.secret"),
    (
        "jwt-key",
        {"type": "webhook", "auth": {"type": "jwt", "public_key": "REF"}},
        "auth.public_key",
    ),
    (
        "email",
        {"type": "email", "server": "imap.attacker.example", "user": "x", "password": "REF"},
        "password",
    ),
]


def _with_reference(value: Any, ref: str) -> Any:
    if isinstance(value, dict):
        return {k: _with_reference(v, ref) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_reference(v, ref) for v in value]
    return ref if value == "REF" else value


@pytest.mark.parametrize("ref", ["env:WFSCHED_API_TOKEN", "file:/etc/shadow"])
@pytest.mark.parametrize(
    ("name", "trigger", "field"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES]
)
def test_the_api_refuses_secret_references_in_every_secret_field(
    daemon: Daemon, ref: str, name: str, trigger: dict[str, Any], field: str
) -> None:
    workflow_id = f"ref-{name}"
    spec = {"id": workflow_id, "triggers": [{"id": "t1", **_with_reference(trigger, ref)}]}
    r = deploy(daemon, spec)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_spec"
    assert f"'{field}'" in body["detail"] and "'t1'" in body["detail"], body
    assert "env:/file:" in body["detail"]
    assert "\n" not in body["detail"]
    status = daemon.get(f"/api/v1/deployment/workflows/{workflow_id}/status", headers=AUTH)
    assert status.status_code == 404, "nothing may be stored"
    # An update of a deployed workflow is refused the same way and changes nothing.
    r = deploy(daemon, {**spec, "id": "ops"}, method="PUT")
    assert r.status_code == 422, r.text
    [ops] = daemon.get("/api/v1/deployment/workflows/ops/status", headers=AUTH).json()["triggers"]
    assert ops["type"] == "manual"


def test_the_api_refuses_an_email_server_that_would_receive_the_configured_password(
    daemon: Daemon,
) -> None:
    spec = {"id": "steal", "triggers": [{"type": "email", "server": "imap.attacker.example"}]}
    r = deploy(daemon, spec)
    assert r.status_code == 422, r.text
    assert "'password'" in r.json()["detail"]
    assert daemon.get("/api/v1/deployment/workflows/steal/status", headers=AUTH).status_code == 404


def test_the_api_accepts_reference_like_text_outside_secret_fields(daemon: Daemon) -> None:
    spec = {
        "id": "lookalike",
        "triggers": [
            {"type": "webhook", "payload": {"note": "env:HOME", "path": "file:/tmp/x"}},
            {
                "type": "email",
                "server": "imap.example.com",
                "user": "file:me",
                "password": "a-literal-password",
                "filters": {"subject": "env: production"},
                "enabled": False,
            },
        ],
    }
    r = deploy(daemon, spec)
    assert r.status_code == 201, r.text


def test_the_cli_on_the_host_still_deploys_references(daemon: Daemon) -> None:
    # HOST_SPECS were deployed with env:/file: references by the fixture; they run.
    workflows = {w["workflow_id"] for w in daemon.cli_json("list")}
    assert {"limited", "sw", "mail"} <= workflows
    r = daemon.get("/api/v1/deployment/workflows/mail/status", headers=AUTH)
    assert r.json()["triggers"][0]["config"]["password"] == "file:/etc/wfsched/imap-password"


# --- management routes on a public bind -----------------------------------------------------


def test_a_public_bind_without_a_token_closes_every_management_route(
    public_daemon: Daemon,
) -> None:
    d = public_daemon
    for method, path in MANAGEMENT:
        r = d.request(method, path, json={})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "api_token_required", (method, path)
        assert "server.api_token" in r.json()["detail"]
    # A forwarding header claiming loopback changes nothing.
    r = d.get("/api/v1/deployment/workflows", headers={"X-Forwarded-For": "127.0.0.1"})
    assert r.status_code == 403
    # Public routes keep working.
    assert d.get("/health").status_code == 200
    assert d.get("/metrics").status_code == 200
    assert d.get("/openapi.json").status_code == 200
    assert d.request("POST", HOOK + "open", json={"a": 1}).status_code == 202
    github = d.request("POST", "/api/v1/public/webhooks/github", content=b"{}")
    assert github.status_code not in (401, 403), github.text


def test_a_public_bind_without_a_token_warns_once_at_start(public_daemon: Daemon) -> None:
    warnings = [
        line
        for line in public_daemon.log_lines()
        if line.get("level") == "warning" and "api_token" in line.get("event", "")
    ]
    assert len(warnings) == 1, public_daemon.logs()
    assert "0.0.0.0" in warnings[0]["event"]


def test_a_public_bind_with_a_token_serves_management_and_does_not_warn(daemon: Daemon) -> None:
    assert daemon.get("/api/v1/deployment/workflows", headers=AUTH).status_code == 200
    assert daemon.get("/api/v1/deployment/workflows").status_code == 401
    assert daemon.get("/api/v1/public/webhooks/status").status_code == 401
    assert not [
        line
        for line in daemon.log_lines()
        if line.get("level") == "warning" and "api_token" in line.get("event", "")
    ]


# --- who is the client, who fired ----------------------------------------------------------


def fire_manual(d: Daemon, base: str, headers: dict[str, str], **client: Any) -> str:
    with httpx.Client(**client) as http:
        r = http.post(
            base + "/api/v1/triggers/workflows/ops/manual",
            json={"data": {"n": 1}},
            headers=headers,
            timeout=10,
        )
    assert r.status_code == 202, r.text
    [event] = [e for e in events(d, "ops") if e["execution_id"] == r.json()["execution_id"]]
    return str(event["payload"]["user"])


def test_the_manual_user_is_the_authenticated_caller_not_a_header(daemon: Daemon) -> None:
    headers = {**AUTH, "X-Wfsched-User": "mallory"}
    assert fire_manual(daemon, daemon.url, headers) == "api-token@127.0.0.1"


def test_an_inherited_forwarded_allow_ips_does_not_make_proxy_headers_trusted(
    daemon: Daemon,
) -> None:
    # FORWARDED_ALLOW_IPS='*' is in the daemon's environment; trusted_proxies is empty.
    headers = {**AUTH, "X-Forwarded-For": "203.0.113.9"}
    assert fire_manual(daemon, daemon.url, headers) == "api-token@127.0.0.1"
    address = local_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    # A remote peer claiming to forward for 127.0.0.1 stays remote.
    base = f"http://{address}:{daemon.port}"
    headers = {**AUTH, "X-Forwarded-For": "127.0.0.1"}
    assert fire_manual(daemon, base, headers) == f"api-token@{address}"


def test_proxy_headers_are_believed_from_trusted_proxies_only(tmp_path: Path) -> None:
    env = {"WFSCHED_TRUSTED_PROXIES": "127.0.0.1/32", "FORWARDED_ALLOW_IPS": ""}
    with Daemon(tmp_path, env=env) as d:
        path = "/api/v1/deployment/workflows"
        assert d.get(path).status_code == 200
        # The proxy on 127.0.0.1 says the client is remote: loopback trust no longer applies.
        r = d.get(path, headers={"X-Forwarded-For": "203.0.113.9"})
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
        r = d.get("/api/v1/public/webhooks/status", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 401


# --- webhook rate limit and dedupe -----------------------------------------------------------


def test_an_unsigned_flood_does_not_use_up_the_rate_limit(daemon: Daemon) -> None:
    bad = {"X-Signature-256": "sha256=" + "0" * 64}
    codes = [
        daemon.request("POST", HOOK + "limited", content=b"{}", headers=bad).status_code
        for _ in range(20)
    ]
    assert set(codes) == {401}, codes
    body = b'{"signed": true}'
    good = {"X-Signature-256": sign_hmac_sha256_hex(HMAC_SECRET, body)}
    signed = [
        daemon.request("POST", HOOK + "limited", content=body, headers=good).status_code
        for _ in range(2)
    ]
    assert signed == [202, 202]
    # Signed requests past the rate are still limited.
    more = [
        daemon.request("POST", HOOK + "limited", content=body, headers=good).status_code
        for _ in range(6)
    ]
    assert 429 in more, more


def test_a_standard_webhooks_id_dedupes_whatever_the_dedupe_header_says(daemon: Daemon) -> None:
    body = b'{"type": "invoice.paid"}'
    answers = []
    for attempt in range(4):
        stamp = int(time.time()) - attempt
        headers = {
            "webhook-id": "msg_replayed",
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign_standard_webhooks(SW_SECRET, "msg_replayed", stamp, body),
            "content-type": "application/json",
        }
        request_id = {1: "req-1", 3: "req-3"}.get(attempt)  # replays: another one, or none
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        r = daemon.request("POST", HOOK + "sw", content=body, headers=headers)
        assert r.status_code == 202, r.text
        answers.append(r.json()["execution_id"])
    assert len(set(answers)) == 1
    recorded = [e for e in events(daemon, "sw") if e["payload"]["body"] == {"type": "invoice.paid"}]
    assert len(recorded) == 1
