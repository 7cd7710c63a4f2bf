"""Shared parts of the github trigger's tests: keys, signed deliveries, the in-process service.

``service()`` runs the real web app, store (SQLite) and trigger manager in this process behind
httpx's ASGI transport. Fixtures are registered under their short names (``standin``, ``key_pem``,
``key_path``); test modules import the ``*_fixture`` functions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.daemon_proc import Daemon
from tests.github_standin import GitHubStandIn, PullRequest, commit_entry, sign
from wfsched.backends import open_store
from wfsched.deployments import DeploymentService
from wfsched.locks import LocalLocks
from wfsched.manager import TriggerManager
from wfsched.occurrences import OccurrenceLog
from wfsched.plugins import configure
from wfsched.recorder import GroupCommitRecorder
from wfsched.store import Store
from wfsched.timer import Timer
from wfsched.triggers.github.app import GitHubApp, app_for
from wfsched.triggers.github.app import load_settings as github_settings
from wfsched.web.app import WebServices, create_app

FIXTURES = Path(__file__).parent / "fixtures" / "github"
SECRET = "It's a Secret to Everybody"
OLD_SECRET = "the previous secret still accepted while rotating"
APP_ID = "29310"
INGRESS = "/api/v1/public/webhooks/github"


@pytest.fixture(scope="module", name="key_pem")
def key_pem_fixture() -> tuple[bytes, bytes]:
    """A fresh RSA key pair for the test App: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(name="standin")
def standin_fixture(key_pem: tuple[bytes, bytes]) -> Iterator[GitHubStandIn]:
    with GitHubStandIn(app_id=APP_ID, public_key=key_pem[1], webhook_secret=SECRET) as fake:
        yield fake


def body_of(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def headers_for(
    event: str, body: bytes, *, guid: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
    }


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

    async def post(
        self, name: str, *, event: str | None = None, guid: str | None = None, **kw: Any
    ) -> httpx.Response:
        body = body_of(name)
        headers = headers_for(event or name.split(".")[0], body, guid=guid, **kw)
        return await self.http.post(INGRESS, content=body, headers=headers)

    async def events(self) -> list[Any]:
        return await self.store.history(None, limit=1000)


@asynccontextmanager
async def service(
    tmp_path: Path, key_path: Path | None = None, api_url: str = "http://127.0.0.1:9", **env: str
) -> AsyncIterator[Service]:
    config = tmp_path / "wfsched.toml"
    config.write_text("")
    environ = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/wfsched.db",
        "GITHUB_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}",
        "GITHUB_API_URL": api_url,
        "WFSCHED_PLUGINS_DIR": str(tmp_path / "plugins"),
        **env,
    }
    if key_path is not None:
        environ |= {"GITHUB_APP_ID": APP_ID, "GITHUB_APP_PRIVATE_KEY": f"file:{key_path}"}
    settings, registry = configure(str(config), environ=environ)
    store = open_store(settings.store_url)
    await store.open()
    recorder = GroupCommitRecorder(store)
    manager = TriggerManager(
        registry=registry,
        store=store,
        recorder=recorder,
        settings=settings,
        locks=LocalLocks(),
        timer=Timer(recorder, on_cursors=store.set_cursors),
        ledger=OccurrenceLog(store),
    )
    deployments = DeploymentService(
        store=store,
        registry=manager.registry,
        settings=settings,
        recorder=recorder,
        manager=manager,
    )
    app = create_app(
        WebServices(
            settings=settings, store=store, deployments=deployments, manager=manager, api_token=""
        )
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wfsched") as http:
            yield Service(http=http, store=store, deployments=deployments, manager=manager)
    finally:
        await store.close()


@pytest.fixture(name="key_path")
def key_path_fixture(tmp_path: Path, key_pem: tuple[bytes, bytes]) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(key_pem[0])
    return path


def add_pull(standin: GitHubStandIn, files: list[str]) -> None:
    meta = json.loads(body_of("pull_request.opened"))["pull_request"]
    standin.pulls[("Codertocat/Hello-World", 2)] = PullRequest(
        meta=meta,
        files=files,
        commits=[commit_entry("ec26c3e57ca3a959ca5aad62de7213c562f8c821", "Update README.md")],
    )


def github_app(standin: GitHubStandIn, key_path: Path) -> GitHubApp:
    return app_for(
        github_settings(
            {
                "app_id": APP_ID,
                "private_key": f"file:{key_path}",
                "api_url": standin.url,
                "webhook_secret": SECRET,
            }
        )
    )


def failed(
    standin: GitHubStandIn, name: str, *, at: float | None = None, guid: str | None = None
) -> dict[str, Any]:
    return standin.record_attempt(
        guid or str(uuid.uuid4()),
        name.split(".")[0],
        body_of(name),
        status_code=0,
        status="failed to connect to host",
        at=at,
    )


def github_env(standin: GitHubStandIn, key_path: Path, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_APP_ID": APP_ID,
        "GITHUB_APP_PRIVATE_KEY": f"file:{key_path}",
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": standin.url,
        "GITHUB_REDELIVERY_WINDOW": "1h",
        **extra,
    }


def deploy_github_specs(d: Daemon) -> None:
    """Two workflows with github triggers: still one recovery loop per deployment."""
    specs = d.workdir / "specs"
    specs.mkdir(exist_ok=True)
    gh = spec(
        "gh",
        events=["push", "pull_request", "issues"],
        repository="Codertocat/*",
        fetch_context=True,
    )
    (specs / "gh.json").write_text(json.dumps(gh))
    (specs / "issues.json").write_text(json.dumps(spec("issues", events="issues")))
    d.cli("deploy", str(specs))


def lose_deliveries(standin: GitHubStandIn) -> list[dict[str, Any]]:
    """Deliveries sent while nobody listens: GitHub records them failed."""
    lost = [
        standin.deliver("pull_request", body_of("pull_request.opened")),
        standin.deliver("issues", body_of("issues.labeled")),
    ]
    assert [a["status_code"] for a in lost] == [0, 0]
    return lost


def redelivered_ok(standin: GitHubStandIn, attempts: list[dict[str, Any]]) -> bool:
    return all(any(a["status"] == "OK" for a in standin.attempts_of(x["guid"])) for x in attempts)


async def until(predicate: Any, timeout: float = 5.0, message: str = "condition") -> None:
    """Poll ``predicate`` on the event loop until it holds; fail after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
