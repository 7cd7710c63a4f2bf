"""What the ``github`` trigger asks the API about a delivery: changed files, commits, PR metadata.

Everything is fetched once per delivery, with the installation token, and shared by every
trigger that needs it. The shapes kept are small summaries (no patches): a workflow that needs
diffs can call the API itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from wfsched.triggers.github.app import GitHubApp, GitHubError, next_link
from wfsched.triggers.github.filters import pull_request_of

MAX_FILE_PAGES = 30  # GitHub lists at most 3000 files of a pull request
MAX_COMMIT_PAGES = 3  # and at most 250 of its commits
_ZERO_SHA = "0" * 40
_FILE_KEYS = ("filename", "previous_filename", "status", "additions", "deletions", "changes")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a delivery's data lives: installation, ``owner/name`` and PR number."""

    installation_id: int
    repository: str
    pull_number: int | None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _file(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in _FILE_KEYS if k in item}


def _commit(item: Mapping[str, Any]) -> dict[str, Any]:
    commit = _map(item.get("commit"))
    author = _map(commit.get("author"))
    login = _map(item.get("author")).get("login")
    return {
        "sha": item.get("sha"),
        "message": commit.get("message"),
        "author": {
            "name": author.get("name"),
            "email": author.get("email"),
            "date": author.get("date"),
            "login": login,
        },
        "url": item.get("html_url"),
    }


def _pull_request(pr: Mapping[str, Any]) -> dict[str, Any]:
    def ref(side: str) -> dict[str, Any]:
        value = _map(pr.get(side))
        return {"ref": value.get("ref"), "sha": value.get("sha")}

    user = _map(pr.get("user"))
    labels = pr.get("labels")
    out = {
        k: pr.get(k)
        for k in (
            "number",
            "title",
            "state",
            "draft",
            "merged",
            "mergeable",
            "mergeable_state",
            "additions",
            "deletions",
            "changed_files",
            "commits",
            "html_url",
        )
    }
    out.update(
        user=user.get("login"),
        base=ref("base"),
        head=ref("head"),
        labels=[x.get("name") for x in labels if isinstance(x, Mapping)]
        if isinstance(labels, list)
        else [],
    )
    return out


async def _pages(
    app: GitHubApp, http: httpx.AsyncClient, target: Target, url: str, max_pages: int
) -> list[Mapping[str, Any]]:
    items: list[Mapping[str, Any]] = []
    next_url: str | None = url
    params: dict[str, Any] | None = {"per_page": 100}
    for _ in range(max_pages):
        if next_url is None:
            break
        response = await app.call(
            http, "GET", next_url, params=params, installation_id=target.installation_id
        )
        page = response.json()
        if not isinstance(page, list):
            raise GitHubError(f"GET {url}: expected a list")
        items.extend(x for x in page if isinstance(x, Mapping))
        next_url, params = next_link(response), None
    return items


async def pull_files(
    app: GitHubApp, http: httpx.AsyncClient, target: Target
) -> list[dict[str, Any]]:
    """Return the changed files of the target's pull request (``GET …/pulls/{n}/files``)."""
    url = f"/repos/{target.repository}/pulls/{target.pull_number}/files"
    return [_file(x) for x in await _pages(app, http, target, url, MAX_FILE_PAGES)]


def file_paths(files: list[dict[str, Any]]) -> list[str]:
    """Every path a change touched, the old name of a renamed file included."""
    out: list[str] = []
    for item in files:
        for key in ("filename", "previous_filename"):
            if isinstance(item.get(key), str):
                out.append(item[key])
    return out


async def fetch_context(
    app: GitHubApp,
    http: httpx.AsyncClient,
    target: Target,
    event: str,
    body: Mapping[str, Any],
    files: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """Return ``payload.context`` for a delivery: files, commits and, for PRs, PR metadata.

    ``files`` are a pull request's files when the filters already fetched them.
    """
    repo = target.repository
    if pull_request_of(body) is not None and target.pull_number is not None:
        base = f"/repos/{repo}/pulls/{target.pull_number}"
        meta = (await app.call(http, "GET", base, installation_id=target.installation_id)).json()
        if files is None:
            files = await pull_files(app, http, target)
        commits = await _pages(app, http, target, f"{base}/commits", MAX_COMMIT_PAGES)
        return {
            "pull_request": _pull_request(meta if isinstance(meta, Mapping) else {}),
            "files": files,
            "commits": [_commit(c) for c in commits],
        }
    if event == "push":
        before, after = body.get("before"), body.get("after")
        if not isinstance(after, str) or after == _ZERO_SHA:
            return {"files": [], "commits": []}  # a deleted ref changes no file
        if isinstance(before, str) and before != _ZERO_SHA:
            url = f"/repos/{repo}/compare/{before}...{after}"
            data = (
                await app.call(
                    http,
                    "GET",
                    url,
                    installation_id=target.installation_id,
                    params={"per_page": 100},
                )
            ).json()
            commits = data.get("commits", []) if isinstance(data, Mapping) else []
        else:
            # A new branch has no base to compare with: its head commit says what it changed.
            url = f"/repos/{repo}/commits/{after}"
            data = (await app.call(http, "GET", url, installation_id=target.installation_id)).json()
            commits = [data] if isinstance(data, Mapping) else []
        raw_files = data.get("files", []) if isinstance(data, Mapping) else []
        return {
            "files": [_file(f) for f in raw_files if isinstance(f, Mapping)],
            "commits": [_commit(c) for c in commits if isinstance(c, Mapping)],
        }
    return {}
