"""The github trigger end to end: signed real deliveries, the GitHub API stand-in, the daemon.

In-process tests run the real web app, store (SQLite) and trigger manager behind httpx's ASGI
transport; the stand-in GitHub API listens on loopback. The outage test runs ``wfsched serve``
as a subprocess, with the stand-in sending (and redelivering) signed deliveries to it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.daemon_proc import Daemon, wait_for
from tests.github_standin import GitHubStandIn, PullRequest, commit_entry, file_entry, sign
from wfsched.config import load_settings
from wfsched.daemon import open_store
from wfsched.deployments import DeploymentService
from wfsched.events import GroupCommitRecorder
from wfsched.locks import LocalLocks
from wfsched.plugins import load_registry
from wfsched.runtime import TriggerManager
from wfsched.store import Store
from wfsched.timers import Timer
from wfsched.triggers._github_app import GitHubApp, RateLimited, app_for, client
from wfsched.triggers._github_app import load_settings as github_settings
from wfsched.web import WebServices, create_app

FIXTURES = Path(__file__).parent / "fixtures" / "github"
SECRET = "It's a Secret to Everybody"
OLD_SECRET = "the previous secret still accepted while rotating"
APP_ID = "29310"
INGRESS = "/api/v1/public/webhooks/github"


@pytest.fixture(scope="module")
def key_pem() -> tuple[bytes, bytes]:
    """A fresh RSA key pair for the test App: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture
def standin(key_pem: tuple[bytes, bytes]) -> Iterator[GitHubStandIn]:
    with GitHubStandIn(app_id=APP_ID, public_key=key_pem[1], webhook_secret=SECRET) as fake:
        yield fake


def body_of(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def headers_for(event: str, body: bytes, *, guid: str | None = None,
                secret: str = SECRET) -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": guid or str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body), "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/044aadd"}


def spec(workflow_id: str, **trigger: Any) -> dict[str, Any]:
    return {"id": workflow_id, "triggers": [{"type": "github", **trigger}]}


@dataclass
class Service:
    """The daemon's parts in this process."""

    http: httpx.AsyncClient
    store: Store
    deployments: DeploymentService
    manager: TriggerManager

    async def deploy(self, *documents: dict[str, Any]) -> None:
        await self.deployments.deploy([self.deployments.parse_document(d) for d in documents])
        await self.manager.reconcile()

    async def post(self, name: str, *, event: str | None = None,
                   guid: str | None = None, **kw: Any) -> httpx.Response:
        body = body_of(name)
        headers = headers_for(event or name.split(".")[0], body, guid=guid, **kw)
        return await self.http.post(INGRESS, content=body, headers=headers)

    async def events(self) -> list[Any]:
        return await self.store.history(None, limit=1000)


@asynccontextmanager
async def service(tmp_path: Path, key_path: Path | None = None,
                  api_url: str = "http://127.0.0.1:9", **env: str) -> AsyncIterator[Service]:
    config = tmp_path / "wfsched.toml"
    config.write_text("")
    environ = {"DATABASE_URL": f"sqlite:///{tmp_path}/wfsched.db",
               "GITHUB_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}", "GITHUB_API_URL": api_url,
               "WFSCHED_PLUGINS_DIR": str(tmp_path / "plugins"), **env}
    if key_path is not None:
        environ |= {"GITHUB_APP_ID": APP_ID, "GITHUB_APP_PRIVATE_KEY": f"file:{key_path}"}
    settings = load_settings(str(config), environ=environ)
    store = open_store(settings.store_url)
    await store.open()
    recorder = GroupCommitRecorder(store)
    manager = TriggerManager(registry=load_registry(None), store=store, recorder=recorder,
                             settings=settings, locks=LocalLocks(),
                             timer=Timer(recorder, on_cursors=store.set_cursors))
    deployments = DeploymentService(store=store, registry=manager.registry, settings=settings,
                                    recorder=recorder, manager=manager)
    app = create_app(WebServices(settings=settings, store=store, deployments=deployments,
                                 manager=manager, api_token=""))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wfsched") as http:
            yield Service(http=http, store=store, deployments=deployments, manager=manager)
    finally:
        await store.close()


@pytest.fixture
def key_path(tmp_path: Path, key_pem: tuple[bytes, bytes]) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(key_pem[0])
    return path


# --- ingress -------------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


async def test_it_refuses_bad_or_missing_signatures_and_records_nothing(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(spec("any-push"))
        body = body_of("push.new-branch")
        good = headers_for("push", body)
        cases = {
            "missing": {k: v for k, v in good.items() if k != "X-Hub-Signature-256"},
            "other secret": headers_for("push", body, secret="not the secret"),
            "sha1 form": {**good, "X-Hub-Signature-256": "sha1=" + "0" * 40},
            "garbage": {**good, "X-Hub-Signature-256": "sha256=zz"},
        }
        for name, headers in cases.items():
            answer = await svc.http.post(INGRESS, content=body, headers=headers)
            assert answer.status_code == 401, name
            assert answer.json()["error"] == "unauthorized"
        tampered = body.replace(b"Codertocat", b"Codertocar", 1)
        answer = await svc.http.post(INGRESS, content=tampered, headers=good)
        assert answer.status_code == 401
        assert await svc.events() == []
        # the previous secret still works during a rotation
        rotated = headers_for("push", body, secret=OLD_SECRET)
        assert (await svc.http.post(INGRESS, content=body, headers=rotated)).status_code == 202


async def test_it_answers_ping_and_unmatched_events_with_no_trigger_deployed(
        tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        ping = await svc.post("ping.app", event="ping", guid="ping-1")
        assert ping.status_code == 200
        assert ping.json() == {"status": "ok", "event": "ping", "delivery_id": "ping-1",
                               "matched": []}
        push = await svc.post("push.new-branch", guid="push-1")
        assert push.status_code == 202
        assert push.json()["matched"] == [] and push.json()["delivery_id"] == "push-1"
        assert await svc.events() == []


async def test_it_refuses_malformed_deliveries_and_records_nothing(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(spec("any-push"))
        body = body_of("push.new-branch")
        good = headers_for("push", body)
        bad_json = b'{"ref": '
        deep = b"[" * 100 + b"]" * 100
        cases = [
            ({k: v for k, v in good.items() if k != "X-GitHub-Event"}, body, 400),
            ({k: v for k, v in good.items() if k != "X-GitHub-Delivery"}, body, 400),
            (headers_for("push", bad_json), bad_json, 400),
            (headers_for("push", deep), deep, 400),
            ({**good, "X-GitHub-Hook-Installation-Target-Type": "integration",
              "X-GitHub-Hook-Installation-Target-ID": "999"}, body, 401),
        ]
        for headers, content, status in cases:
            answer = await svc.http.post(INGRESS, content=content, headers=headers)
            assert answer.status_code == status, answer.text
            assert set(answer.json()) == {"error", "detail"}
        assert await svc.events() == []


async def test_it_fires_every_matching_workflow_once_and_ignores_a_repeat(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(
            spec("on-master", branches="master", payload={"team": "web"}),
            spec("any-codertocat", repository="Codertocat/*"),
            spec("on-tags", tags="*"),
            spec("pull-requests", events="pull_request"),
        )
        first = await svc.post("push.new-branch", guid="guid-1")
        assert first.status_code == 202
        matched = first.json()["matched"]
        assert sorted(m["workflow_id"] for m in matched) == ["any-codertocat", "on-master"]
        assert not any(m["duplicate"] for m in matched)
        events = await svc.events()
        assert len(events) == 2
        payload = next(e.payload for e in events if e.workflow_id == "on-master")
        assert payload["event"] == "push" and payload["action"] is None
        assert payload["delivery_id"] == "guid-1"
        assert payload["repository"] == "Codertocat/Hello-World"
        assert payload["ref"] == "refs/heads/master" and payload["sender"] == "Codertocat"
        assert payload["body"] == json.loads(body_of("push.new-branch"))
        assert payload["context"] is None and payload["team"] == "web"
        assert all(e.dedupe_key == "github:guid-1" for e in events)
        # GitHub's redelivery (same GUID) records nothing new and answers the same ids
        again = await svc.post("push.new-branch", guid="guid-1")
        assert again.status_code == 202
        assert {m["execution_id"] for m in again.json()["matched"]} == \
            {m["execution_id"] for m in matched}
        assert all(m["duplicate"] for m in again.json()["matched"])
        assert len(await svc.events()) == 2


async def test_it_answers_503_and_acknowledges_nothing_when_the_store_is_down(
        tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(spec("any-push"))
        await svc.store.close()
        answer = await svc.post("push.new-branch", guid="while-down")
        assert answer.status_code == 503
        await svc.store.open()
        assert await svc.events() == []
        assert (await svc.post("push.new-branch", guid="while-down")).status_code == 202
        assert len(await svc.events()) == 1


async def test_it_shows_the_filters_in_status(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(spec("docs", events=["pull_request"], paths=["docs/**", "!docs/x/**"],
                              fetch_context=True))
        status = await svc.deployments.status("docs")
        details = status["triggers"][0]["details"]
        assert details == {"path": INGRESS, "events": ["pull_request"],
                           "paths": ["docs/**", "!docs/x/**"], "fetch_context": True}


# --- with the GitHub API stand-in ---------------------------------------------------------


def add_pull(standin: GitHubStandIn, files: list[str]) -> None:
    meta = json.loads(body_of("pull_request.opened"))["pull_request"]
    standin.pulls[("Codertocat/Hello-World", 2)] = PullRequest(
        meta=meta, files=files,
        commits=[commit_entry("ec26c3e57ca3a959ca5aad62de7213c562f8c821", "Update README.md")])


async def test_it_filters_pull_requests_on_the_files_the_api_lists(
        tmp_path: Path, standin: GitHubStandIn, key_path: Path) -> None:
    add_pull(standin, [f"docs/page{i}.md" for i in range(150)] + ["src/app.py"])
    standin.page_size = 100  # two pages: the matching file is on the second one
    async with service(tmp_path, key_path, standin.url) as svc:
        await svc.deploy(
            spec("src", events="pull_request", paths="src/**"),
            spec("docs-only", events="pull_request", paths=["docs/**", "!src/**"]),
            spec("tests", events="pull_request", paths="tests/**"),
        )
        answer = await svc.post("pull_request.synchronize")
        assert answer.status_code == 202
        assert [m["workflow_id"] for m in answer.json()["matched"]] == ["src"]
        # one token exchange, one listing (two pages) shared by the three triggers
        assert standin.token_requests == [1]
        listed = [p for _, p in standin.requests if p.endswith("/files")]
        assert len(listed) == 2
        [event] = await svc.events()
        assert "context_error" not in event.payload


async def test_it_attaches_pull_request_and_push_context(
        tmp_path: Path, standin: GitHubStandIn, key_path: Path) -> None:
    add_pull(standin, ["README.md", "docs/a.md"])
    push = json.loads(body_of("push.new-branch"))
    standin.commits[("Codertocat/Hello-World", push["after"])] = commit_entry(
        push["after"], "Initial commit", files=["README.md"])
    async with service(tmp_path, key_path, standin.url) as svc:
        await svc.deploy(spec("ctx", events=["pull_request", "push"], fetch_context=True))
        assert (await svc.post("pull_request.opened")).status_code == 202
        assert (await svc.post("push.new-branch")).status_code == 202
        events = {e.payload["event"]: e.payload for e in await svc.events()}
        pr = events["pull_request"]["context"]
        assert pr["pull_request"]["number"] == 2 and pr["pull_request"]["mergeable"] is True
        assert pr["pull_request"]["base"]["ref"] == "master"
        assert [f["filename"] for f in pr["files"]] == ["README.md", "docs/a.md"]
        assert "patch" not in pr["files"][0]
        assert pr["commits"][0]["message"] == "Update README.md"
        assert pr["commits"][0]["author"]["login"] == "Codertocat"
        pushed = events["push"]["context"]
        assert [f["filename"] for f in pushed["files"]] == ["README.md"]
        assert [c["sha"] for c in pushed["commits"]] == [push["after"]]
        assert all("context_error" not in p for p in events.values())
        assert standin.token_requests == [1]  # the installation token is cached


async def test_it_records_a_failed_fetch_in_the_event_and_never_drops_it(
        tmp_path: Path, standin: GitHubStandIn, key_path: Path) -> None:
    async with service(tmp_path, key_path, standin.url) as svc:
        await svc.deploy(spec("ctx", events="pull_request", fetch_context=True),
                         spec("paths", events="pull_request", paths="docs/**"))
        answer = await svc.post("pull_request.opened")  # the stand-in knows no such PR: 404
        assert answer.status_code == 202
        assert sorted(m["workflow_id"] for m in answer.json()["matched"]) == ["ctx", "paths"]
        events = {e.workflow_id: e.payload for e in await svc.events()}
        assert "404" in events["ctx"]["context_error"]
        assert events["ctx"]["context"] is None
        assert events["paths"]["context_error"].startswith("paths filter not applied")
        # a delivery without an installation cannot be looked up either
        answer = await svc.post("pull_request.closed")  # installation 1 again, still 404
        no_install = await svc.post("push.tag-deleted")  # push: not a context event here
        assert answer.status_code == no_install.status_code == 202


@pytest.mark.slow
async def test_it_bounds_the_context_fetch_within_githubs_response_budget(
        tmp_path: Path, standin: GitHubStandIn, key_path: Path) -> None:
    add_pull(standin, ["docs/a.md"])
    standin.delay = 8.0
    async with service(tmp_path, key_path, standin.url) as svc:
        await svc.deploy(spec("ctx", events="pull_request", fetch_context=True))
        started = time.monotonic()
        answer = await svc.post("pull_request.opened")
        elapsed = time.monotonic() - started
        assert answer.status_code == 202 and elapsed < 7.0
        [event] = await svc.events()
        assert "within 5 s" in event.payload["context_error"]


async def test_it_refuses_deliveries_when_no_webhook_secret_is_configured(tmp_path: Path) -> None:
    async with service(tmp_path, GITHUB_WEBHOOK_SECRET="") as svc:
        await svc.deploy(spec("any-push"))
        answer = await svc.post("push.new-branch")
        assert answer.status_code == 503
        assert "github.webhook_secret" in answer.json()["detail"]
        assert await svc.events() == []


# --- the App client ------------------------------------------------------------------------


def github_app(standin: GitHubStandIn, key_path: Path) -> GitHubApp:
    return app_for(github_settings({"app_id": APP_ID, "private_key": f"file:{key_path}",
                                    "api_url": standin.url, "webhook_secret": SECRET}))


async def test_it_signs_app_jwts_as_github_requires(standin: GitHubStandIn, key_path: Path,
                                                    key_pem: tuple[bytes, bytes]) -> None:
    app = github_app(standin, key_path)
    token = app.jwt()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, key_pem[1], algorithms=["RS256"])
    now = time.time()
    assert claims["iss"] == APP_ID
    assert now - 62 <= claims["iat"] <= now - 58
    assert claims["exp"] - now < 600 and claims["exp"] > now + 500
    async with client() as http:
        await app.call(http, "GET", "/app/hook/deliveries")
    assert standin.jwt_claims[-1]["iss"] == APP_ID


async def test_it_caches_installation_tokens_until_shortly_before_expiry(
        standin: GitHubStandIn, key_path: Path) -> None:
    add_pull(standin, ["a.md"])
    app = github_app(standin, key_path)
    path = "/repos/Codertocat/Hello-World/pulls/2"
    async with client() as http:
        for _ in range(3):
            await app.call(http, "GET", path, installation_id=1)
        assert standin.token_requests == [1]
        standin.token_ttl = 240  # under the 5-minute margin: every call takes a fresh token
        app.forget_token(1)
        await app.call(http, "GET", path, installation_id=1)
        await app.call(http, "GET", path, installation_id=1)
        assert standin.token_requests == [1, 1, 1]
        standin.token_ttl = 3600
        await app.call(http, "GET", path, installation_id=1)
        standin.tokens.clear()  # revoked: one 401, then one new token and one retry
        answer = await app.call(http, "GET", path, installation_id=1)
        assert answer.status_code == 200
        assert standin.token_requests == [1, 1, 1, 1, 1]


async def test_it_honours_rate_limits_before_calling_again(standin: GitHubStandIn,
                                                           key_path: Path) -> None:
    from tests.github_standin import Scripted

    app = github_app(standin, key_path)
    reset = int(time.time()) + 120
    standin.script = [Scripted(403, {"x-ratelimit-remaining": "0",
                                     "x-ratelimit-reset": str(reset)},
                               {"message": "API rate limit exceeded"})]
    async with client() as http:
        with pytest.raises(RateLimited) as caught:
            await app.call(http, "GET", "/app/hook/deliveries")
        assert 100 < caught.value.wait <= 120
        calls = len(standin.requests)
        with pytest.raises(RateLimited):  # no request is sent before the reset
            await app.call(http, "GET", "/app/hook/deliveries")
        assert len(standin.requests) == calls
        app._blocked_until.clear()
        standin.script = [Scripted(429, {"retry-after": "1"})]
        started = time.monotonic()
        answer = await app.call(http, "GET", "/app/hook/deliveries", max_wait=5)
        assert answer.status_code == 200 and time.monotonic() - started >= 0.9
        assert len(standin.requests) == calls + 2
