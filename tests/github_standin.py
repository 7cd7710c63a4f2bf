"""A local stand-in for the GitHub API and for GitHub's webhook sender, in the real shapes.

API (Starlette, served by uvicorn in a thread on a free loopback port):

- ``GET /app`` and ``POST /app/installations/{id}/access_tokens`` (App JWT, verified with the
  test's public key)
- ``GET /app/hook/deliveries`` (cursor pagination via ``Link``), ``GET …/{id}`` and
  ``POST /app/hook/deliveries/{id}/attempts`` (redelivers: re-sends the stored signed delivery)
- ``GET /repos/{o}/{r}/pulls/{n}``, ``…/files``, ``…/commits`` (page pagination via ``Link``),
  ``GET /repos/{o}/{r}/commits/{sha}``, ``GET /repos/{o}/{r}/compare/{base}...{head}``
- ``GET /repos/{o}/{r}/installation`` (App JWT; ``installations`` maps repositories to ids)
- ``POST /repos/{o}/{r}/actions/workflows/{workflow}/dispatches`` (installation token of that
  repository; ``workflows`` declares each workflow's inputs and refs, 422 as GitHub words it;
  accepted ones are kept in ``dispatches``)

Sender: :meth:`GitHubStandIn.deliver` signs a body and POSTs it to ``target_url`` with GitHub's
headers, recording the attempt as GitHub would (``status``/``status_code``; connection failures
are ``status_code`` 0). Knobs: ``script`` (answers for the next API requests), ``delay``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import anyio
import httpx
import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from tests.daemon_proc import free_port, wait_for


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Scripted:
    """One scripted API answer (consumed by the next API request)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class ActionsWorkflow:
    """A workflow with a ``workflow_dispatch`` trigger: its declared inputs and known refs."""

    inputs: tuple[str, ...] = ()
    refs: tuple[str, ...] = ("main",)


@dataclass
class Dispatched:
    """One accepted ``workflow_dispatch`` call."""

    repository: str
    workflow: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class PullRequest:
    meta: dict[str, Any]
    files: list[str]
    commits: list[dict[str, Any]] = field(default_factory=list)


def file_entry(name: str, status: str = "modified") -> dict[str, Any]:
    sha = hashlib.sha1(name.encode()).hexdigest()
    return {
        "sha": sha,
        "filename": name,
        "status": status,
        "additions": 3,
        "deletions": 1,
        "changes": 4,
        "blob_url": f"https://github.com/o/r/blob/{sha}/{name}",
        "raw_url": f"https://github.com/o/r/raw/{sha}/{name}",
        "contents_url": f"https://api.github.com/repos/o/r/contents/{name}?ref={sha}",
        "patch": "@@ -1 +1 @@\n-a\n+b",
    }


def commit_entry(
    sha: str, message: str, login: str = "Codertocat", files: list[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sha": sha,
        "node_id": "C_" + sha[:10],
        "url": f"https://api.github.com/commits/{sha}",
        "html_url": f"https://github.com/o/r/commit/{sha}",
        "commit": {
            "author": {
                "name": login,
                "email": f"{login}@example.com",
                "date": "2019-05-15T15:20:30Z",
            },
            "committer": {
                "name": login,
                "email": f"{login}@example.com",
                "date": "2019-05-15T15:20:30Z",
            },
            "message": message,
            "comment_count": 0,
            "tree": {"sha": "0" * 40, "url": "https://api.github.com/trees/x"},
            "verification": {"verified": False, "reason": "unsigned"},
        },
        "author": {"login": login, "id": 21031067, "type": "User"},
        "committer": {"login": login, "id": 21031067, "type": "User"},
        "parents": [],
    }
    if files is not None:
        out["stats"] = {
            "total": 4 * len(files),
            "additions": 3 * len(files),
            "deletions": len(files),
        }
        out["files"] = [file_entry(f) for f in files]
    return out


class GitHubStandIn:
    """The fake GitHub: API state, request log and the webhook sender."""

    def __init__(
        self, *, app_id: str, public_key: bytes, webhook_secret: str, prefix: str = ""
    ) -> None:
        self.app_id = app_id
        self.prefix = prefix
        """Path the API is served under: ``/api/v3`` on GitHub Enterprise Server."""
        self.public_key = public_key
        self.webhook_secret = webhook_secret
        self.target_url: str | None = None
        self.token_ttl = 3600.0
        self.page_size: int | None = None
        self.delay = 0.0
        self.script: list[Scripted] = []
        self.tokens: dict[str, tuple[int, float]] = {}
        self.token_requests: list[int] = []
        self.jwt_claims: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.pulls: dict[tuple[str, int], PullRequest] = {}
        self.commits: dict[tuple[str, str], dict[str, Any]] = {}
        self.attempts: list[dict[str, Any]] = []
        self.payloads: dict[str, tuple[str, bytes]] = {}
        self.redeliver_requests: list[int] = []
        self.installations: dict[str, int] = {}
        self.workflows: dict[tuple[str, str], ActionsWorkflow] = {}
        self.dispatches: list[Dispatched] = []
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- auth ----------------------------------------------------------------------------
    def _app_auth(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return _gh_error(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                header[7:],
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=5,
            )
        except jwt.PyJWTError:
            return _gh_error(401, "A JSON web token could not be decoded")
        self.jwt_claims.append(claims)
        if str(claims["iss"]) != self.app_id or claims["exp"] - claims["iat"] > 600:
            return _gh_error(401, "'Expiration time' claim ('exp') is too far in the future")
        return None

    def _installation_auth(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header.split(" ", 1)[1] if " " in header else ""
        known = self.tokens.get(token)
        if known is None or known[1] < time.time():
            return _gh_error(401, "Bad credentials")
        return None

    async def _gate(self, request: Request) -> Response | None:
        with self._lock:
            self.requests.append((request.method, request.url.path))
            scripted = self.script.pop(0) if self.script else None
        if self.delay:
            await anyio.sleep(self.delay)
        if scripted is not None:
            return JSONResponse(
                scripted.body or {"message": "scripted"},
                status_code=scripted.status,
                headers=scripted.headers,
            )
        return None

    # --- API routes ----------------------------------------------------------------------
    async def get_app(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._app_auth(request)):
            return early
        return JSONResponse({"id": int(self.app_id), "slug": "wfsched-test", "name": "wfsched"})

    async def access_tokens(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._app_auth(request)):
            return early
        installation = int(request.path_params["id"])
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = time.time() + self.token_ttl
        with self._lock:
            self.tokens[token] = (installation, expires)
            self.token_requests.append(installation)
        return JSONResponse(
            {
                "token": token,
                "expires_at": iso(expires),
                "permissions": {"contents": "read", "pull_requests": "read", "metadata": "read"},
                "repository_selection": "all",
            },
            status_code=201,
        )

    def _paged(self, request: Request, items: list[Any]) -> Response:
        per_page = min(int(request.query_params.get("per_page", 30)), 100)
        per_page = min(per_page, self.page_size or per_page)
        page = int(request.query_params.get("page", 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            nxt = request.url.include_query_params(page=page + 1, per_page=per_page)
            headers["Link"] = f'<{nxt}>; rel="next"'
        return JSONResponse(chunk, headers=headers)

    def _pull(self, request: Request) -> PullRequest | None:
        key = (
            f"{request.path_params['owner']}/{request.path_params['repo']}",
            int(request.path_params["number"]),
        )
        return self.pulls.get(key)

    async def pull(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._installation_auth(request)):
            return early
        pr = self._pull(request)
        if pr is None:
            return _gh_error(404, "Not Found")
        return JSONResponse(
            {
                **pr.meta,
                "mergeable": True,
                "mergeable_state": "clean",
                "changed_files": len(pr.files),
                "commits": len(pr.commits),
            }
        )

    async def pull_files(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._installation_auth(request)):
            return early
        pr = self._pull(request)
        if pr is None:
            return _gh_error(404, "Not Found")
        return self._paged(request, [file_entry(f) for f in pr.files])

    async def pull_commits(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._installation_auth(request)):
            return early
        pr = self._pull(request)
        if pr is None:
            return _gh_error(404, "Not Found")
        return self._paged(request, pr.commits)

    async def commit(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._installation_auth(request)):
            return early
        repo = f"{request.path_params['owner']}/{request.path_params['repo']}"
        found = self.commits.get((repo, request.path_params["sha"]))
        return JSONResponse(found) if found else _gh_error(422, "No commit found for SHA")

    async def compare(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._installation_auth(request)):
            return early
        repo = f"{request.path_params['owner']}/{request.path_params['repo']}"
        _, head = request.path_params["basehead"].split("...", 1)
        found = self.commits.get((repo, head))
        if found is None:
            return _gh_error(404, "Not Found")
        return JSONResponse(
            {
                "status": "ahead",
                "ahead_by": 1,
                "behind_by": 0,
                "total_commits": 1,
                "commits": [found],
                "files": found.get("files", []),
            }
        )

    async def installation(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._app_auth(request)):
            return early
        repo = f"{request.path_params['owner']}/{request.path_params['repo']}"
        found = self.installations.get(repo)
        if found is None:
            return _gh_error(404, "Not Found")
        return JSONResponse({"id": found, "app_id": int(self.app_id), "target_type": "User"})

    async def workflow_dispatch(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._installation_auth(request)):
            return early
        repo = f"{request.path_params['owner']}/{request.path_params['repo']}"
        header = request.headers.get("authorization", "")
        installation = self.tokens[header.split(" ", 1)[1]][0]
        if self.installations.get(repo) != installation:
            return _gh_error(404, "Not Found")  # a token of another installation
        workflow = self.workflows.get((repo, request.path_params["workflow"]))
        if workflow is None:
            return _gh_error(404, "Not Found")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _gh_error(400, "Problems parsing JSON")
        ref, inputs = body.get("ref"), body.get("inputs") or {}
        if not isinstance(ref, str):
            return _gh_error(422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
        if ref not in workflow.refs:
            return _gh_error(422, f"No ref found for: {ref}")
        if len(inputs) > 10:
            return _gh_error(422, "you may only define up to 10 `inputs` for a `workflow_dispatch`")
        unexpected = sorted(set(inputs) - set(workflow.inputs))
        if unexpected:
            return _gh_error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
        with self._lock:
            self.dispatches.append(
                Dispatched(repo, request.path_params["workflow"], body, dict(request.headers))
            )
        return Response(status_code=204)

    async def deliveries(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._app_auth(request)):
            return early
        per_page = min(int(request.query_params.get("per_page", 30)), 100)
        per_page = min(per_page, self.page_size or per_page)
        cursor = request.query_params.get("cursor")
        with self._lock:  # newest first, as GitHub lists them
            rows = sorted(self.attempts, key=lambda a: (a["delivered_at"], a["id"]), reverse=True)
        if cursor:
            ids = [r["id"] for r in rows]
            start = int(cursor.removeprefix("v1_"))
            rows = rows[ids.index(start) :] if start in ids else []
        page, rest = rows[:per_page], rows[per_page:]
        headers = {}
        if rest:
            nxt = request.url.remove_query_params("cursor").include_query_params(
                per_page=per_page, cursor=f"v1_{rest[0]['id']}"
            )
            headers["Link"] = f'<{nxt}>; rel="next"'
        return JSONResponse([_listed(r) for r in page], headers=headers)

    async def attempts_route(self, request: Request) -> Response:
        if (early := await self._gate(request)) or (early := self._app_auth(request)):
            return early
        ident = int(request.path_params["id"])
        original = next((a for a in self.attempts if a["id"] == ident), None)
        if original is None:
            return _gh_error(404, "Not Found")
        with self._lock:
            self.redeliver_requests.append(ident)
        task = BackgroundTask(self._redeliver, original["guid"])
        return JSONResponse({}, status_code=202, background=task)

    async def _redeliver(self, guid: str) -> None:
        event, body = self.payloads[guid]
        await anyio.to_thread.run_sync(
            lambda: self.deliver(event, body, guid=guid, redelivery=True)
        )

    def app(self) -> Starlette:
        repo = "/repos/{owner}/{repo}"
        routes: list[BaseRoute] = [
            Route("/app", self.get_app, methods=["GET"]),
            Route(
                "/app/installations/{id:int}/access_tokens",
                self.access_tokens,
                methods=["POST"],
            ),
            Route("/app/hook/deliveries", self.deliveries, methods=["GET"]),
            Route("/app/hook/deliveries/{id:int}/attempts", self.attempts_route, methods=["POST"]),
            Route(repo + "/pulls/{number:int}", self.pull, methods=["GET"]),
            Route(repo + "/pulls/{number:int}/files", self.pull_files, methods=["GET"]),
            Route(repo + "/pulls/{number:int}/commits", self.pull_commits, methods=["GET"]),
            Route(repo + "/commits/{sha}", self.commit, methods=["GET"]),
            Route(repo + "/compare/{basehead}", self.compare, methods=["GET"]),
            Route(repo + "/installation", self.installation, methods=["GET"]),
            Route(
                repo + "/actions/workflows/{workflow}/dispatches",
                self.workflow_dispatch,
                methods=["POST"],
            ),
        ]
        return Starlette(routes=[Mount(self.prefix, routes=routes)] if self.prefix else routes)

    # --- the webhook sender --------------------------------------------------------------
    def record_attempt(
        self,
        guid: str,
        event: str,
        body: bytes,
        *,
        status_code: int,
        status: str,
        redelivery: bool = False,
        at: float | None = None,
    ) -> dict[str, Any]:
        """Add a row to the deliveries list without sending anything (a past attempt)."""
        data = json.loads(body)
        installation = data.get("installation") or {}
        row = {
            "id": next(self._ids),
            "guid": guid,
            "delivered_at": at or time.time(),
            "redelivery": redelivery,
            "duration": 0.05,
            "status": status,
            "status_code": status_code,
            "event": event,
            "action": data.get("action"),
            "installation_id": installation.get("id"),
            "repository_id": (data.get("repository") or {}).get("id"),
        }
        with self._lock:
            self.payloads[guid] = (event, body)
            self.attempts.append(row)
        return row

    def deliver(
        self, event: str, body: bytes, *, guid: str | None = None, redelivery: bool = False
    ) -> dict[str, Any]:
        """Send a signed delivery to ``target_url`` and record the attempt as GitHub does."""
        guid = guid or str(uuid.uuid4())
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-Hub-Signature-256": sign(self.webhook_secret, body),
            "X-GitHub-Hook-ID": "109948940",
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": self.app_id,
            "User-Agent": "GitHub-Hookshot/044aadd",
            "Content-Type": "application/json",
        }
        if self.target_url is None:  # nobody listens: the receiver lives elsewhere and says OK
            return self.record_attempt(
                guid, event, body, status_code=200, status="OK", redelivery=redelivery
            )
        try:
            answer = httpx.post(self.target_url, content=body, headers=headers, timeout=10)
            code = answer.status_code
            status = "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}"
        except httpx.TimeoutException:
            code, status = 0, "timed out"
        except httpx.HTTPError:
            code, status = 0, "failed to connect to host"
        return self.record_attempt(
            guid, event, body, status_code=code, status=status, redelivery=redelivery
        )

    def mark_failed(self, guid: str) -> None:
        """Turn every attempt of ``guid`` into a failure (as after GitHub's 10 s timeout)."""
        with self._lock:
            for row in self.attempts:
                if row["guid"] == guid:
                    row.update(status="timed out", status_code=0)

    def attempts_of(self, guid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self.attempts if a["guid"] == guid]

    # --- lifetime ------------------------------------------------------------------------
    def start(self) -> Self:
        port = free_port()
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        server = self._server
        wait_for(lambda: server.started, 10, message="GitHub stand-in listening")
        self.url = f"http://127.0.0.1:{port}{self.prefix}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _gh_error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"message": message, "documentation_url": "https://docs.github.com/rest"},
        status_code=status,
    )


def _listed(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, "delivered_at": iso(float(row["delivered_at"])), "throttled_at": None}
