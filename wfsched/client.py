"""The management API's client: :class:`RemoteControl` does what ``wfsched.control`` does
locally, over HTTP alone (no store, no plugins on this host).

Errors come back as the exceptions the local side raises (a 404 is ``NotFound``, a 409
``confirmation_required`` is ``Conflict("confirmation_required")``), or as :class:`ApiError`
carrying the API's code, so the commands report both sides alike.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from wfsched import __version__
from wfsched.control import Deployed, EventQuery
from wfsched.errors import Conflict, InvalidInput, NotFound, SpecError, WfschedError
from wfsched.models import iso
from wfsched.spec import InvalidSpecs, read_document, spec_files

TIMEOUT = 60.0
"""Seconds a request may take: ``check`` logs in to several servers, 10 s each at most."""
PAGE = 1000
"""The most events the API answers with at once."""
INPUT_STATUSES = frozenset({400, 413, 415, 422})
"""Answers that mean the input was wrong: the CLI exits 2 on them, as on local bad input."""


class ApiError(WfschedError):
    """An error answer of the API: ``code`` and ``detail`` as it sent them, and its status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail

    @property
    def invalid_input(self) -> bool:
        return self.status in INPUT_STATUSES


class Unreachable(WfschedError):
    """The daemon at ``--url`` did not answer."""


def check_url(url: str) -> str:
    """``url`` without a trailing slash; InvalidInput unless it is ``http(s)://HOST[:PORT]``."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidInput(f"--url {url!r}: the port is not a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"--url {url!r}: use http(s)://HOST[:PORT] of a wfsched daemon")
    return url.rstrip("/")


class RemoteControl:
    """The operations of :class:`wfsched.control.Control` through a daemon's HTTP API."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = check_url(url)
        headers = {"User-Agent": f"wfsched-cli/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=TIMEOUT, follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(method, path, params=query, json=json)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise Unreachable(f"cannot reach the wfsched API at {self.url}: {reason}") from None
        if response.is_success:
            return response
        raise _error_of(response)

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return (await self._call(method, path, **kw)).json()

    async def deploy(self, paths: Sequence[Path], *, dry_run: bool) -> Deployed:
        # Files are read here (the daemon cannot see them) and validated there, as one batch.
        specs, errors = [], []
        for path in spec_files(paths):
            try:
                specs.append({"source": str(path), "document": read_document(path)})
            except SpecError as exc:
                errors.append(exc.located(source=exc.source or str(path)))
        if errors:
            raise InvalidSpecs(errors)
        body = await self._json(
            "POST", "/api/v1/deployment/workflows", json={"specs": specs, "dry_run": dry_run}
        )
        return Deployed(body["results"], body["warnings"])

    async def _each(self, verb: str, ids: Sequence[str]) -> None:
        # The API changes one workflow per call: every id is looked up first, so an unknown
        # one changes nothing, as locally (where one transaction does it all).
        for workflow_id in ids:
            await self._call("GET", f"/api/v1/deployment/workflows/{_seg(workflow_id)}/status")
        for workflow_id in ids:
            path = f"/api/v1/deployment/workflows/{_seg(workflow_id)}"
            if verb == "undeploy":
                await self._call("DELETE", f"{path}/undeploy")
            else:
                await self._call("POST", f"{path}/{verb}")

    async def undeploy(self, ids: Sequence[str]) -> None:
        await self._each("undeploy", ids)

    async def pause(self, ids: Sequence[str]) -> None:
        await self._each("pause", ids)

    async def resume(self, ids: Sequence[str]) -> None:
        await self._each("resume", ids)

    async def workflows(
        self, *, limit: int | None, cursor: str | None, state: str | None, q: str | None
    ) -> dict[str, Any]:
        params = {"limit": limit, "cursor": cursor, "state": state, "q": q}
        body = await self._json("GET", "/api/v1/deployment/workflows", params=params)
        return body if limit is not None else {"items": body, "next_cursor": None}

    async def status(self, workflow_id: str) -> dict[str, Any]:
        path = f"/api/v1/deployment/workflows/{_seg(workflow_id)}/status"
        result: dict[str, Any] = await self._json("GET", path)
        return result

    async def export(self, workflow_id: str) -> str:
        path = f"/api/v1/deployment/workflows/{_seg(workflow_id)}/export"
        return (await self._call("GET", path)).text

    async def document(self, workflow_id: str) -> dict[str, Any]:
        return tomllib.loads(await self.export(workflow_id))

    async def fire(
        self, workflow_id: str, data: Any, *, confirmed: bool, trigger_id: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"confirm": confirmed, "data": data}
        if trigger_id is not None:
            body["trigger_id"] = trigger_id
        path = f"/api/v1/triggers/workflows/{_seg(workflow_id)}/manual"
        result: dict[str, Any] = await self._json("POST", path, json=body)
        return {k: result[k] for k in ("execution_id", "workflow_id", "status")}

    async def executions(self, query: EventQuery) -> dict[str, Any]:
        # The API serves at most PAGE events at once: a larger limit is read page by page.
        items: list[Any] = []
        cursor = query.cursor
        while True:
            want = min(query.limit - len(items), PAGE)
            page = await self._page(query, want, cursor)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None or len(items) >= query.limit:
                return {"items": items, "next_cursor": cursor}

    async def _page(self, query: EventQuery, limit: int, cursor: str | None) -> dict[str, Any]:
        params = {
            "limit": limit,
            "workflow_id": query.workflow_id,
            "trigger_id": query.trigger_id,
            "status": query.status,
            "since": iso(query.since),
            "until": iso(query.until),
            "cursor": cursor,
        }
        result: dict[str, Any] = await self._json("GET", "/api/v1/executions", params=params)
        return result

    async def redeliver(self, execution_ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            await self._json("POST", f"/api/v1/executions/{_seg(execution_id)}/redeliver")
            for execution_id in execution_ids
        ]

    async def prune(self, older_than: float | None, *, dry_run: bool) -> dict[str, Any]:
        params = {
            "older_than": None if older_than is None else f"{older_than:g}s",
            "dry_run": "true" if dry_run else None,
        }
        result: dict[str, Any] = await self._json("POST", "/api/v1/executions/prune", params=params)
        return result

    async def check(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "/api/v1/check")
        return result

    async def plugins(self) -> list[dict[str, str]]:
        result: list[dict[str, str]] = await self._json("GET", "/api/v1/plugins")
        return result

    async def daemon(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._json("GET", "/api/v1/triggers/health"))["daemon"]
        return result

    async def explain(
        self,
        workflow_id: str,
        *,
        trigger_id: str | None,
        at: str | None,
        since: str | None,
        until: str | None,
    ) -> dict[str, Any]:
        path = f"/api/v1/deployment/workflows/{_seg(workflow_id)}/explain"
        params = {"trigger": trigger_id, "at": at, "since": since, "until": until}
        result: dict[str, Any] = await self._json("GET", path, params=params)
        return result

    async def density(self, hours: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "/api/v1/density", params={"hours": hours})
        return result

    async def server_version(self) -> str:
        """The daemon's version (its OpenAPI document's)."""
        return str((await self._json("GET", "/openapi.json"))["info"]["version"])


def _seg(value: str) -> str:
    """``value`` as one path segment."""
    return quote(value, safe="")


def _error_of(response: httpx.Response) -> WfschedError:
    try:
        body = response.json()
        code, detail = str(body["error"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        code = "http_error"
        detail = f"{response.request.method} {response.request.url.path} answered "
        detail += f"{response.status_code} {response.reason_phrase} (not the wfsched API?)"
    if code == "confirmation_required":
        return Conflict("confirmation_required")
    if code == "not_found" and response.status_code == 404:
        return NotFound(detail)
    return ApiError(response.status_code, code, detail)
