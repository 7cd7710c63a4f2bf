"""The github trigger's ingress end to end: signed real deliveries, filters, API context.

In-process: the real web app, store and trigger manager (tests/github_harness.py) with the
GitHub API stand-in (tests/github_standin.py) on loopback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from tests.github_harness import (  # noqa: F401 - fixtures
    APP_ID,
    INGRESS,
    OLD_SECRET,
    SECRET,
    add_pull,
    body_of,
    headers_for,
    key_path_fixture,
    key_pem_fixture,
    service,
    spec,
    standin_fixture,
    until,
)
from tests.github_standin import GitHubStandIn, commit_entry

pytestmark = pytest.mark.anyio


# --- ingress -------------------------------------------------------------------------------


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
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as svc:
        ping = await svc.post("ping.app", event="ping", guid="ping-1")
        assert ping.status_code == 200
        assert ping.json() == {
            "status": "ok",
            "event": "ping",
            "delivery_id": "ping-1",
            "matched": [],
        }
        push = await svc.post("push.new-branch", guid="push-1")
        assert push.status_code == 202
        assert push.json()["matched"] == [] and push.json()["delivery_id"] == "push-1"
        assert await svc.events() == []


async def test_it_refuses_malformed_deliveries_and_records_nothing(
    tmp_path: Path, key_path: Path
) -> None:
    async with service(tmp_path, key_path) as svc:
        await svc.deploy(spec("any-push"))
        body = body_of("push.new-branch")
        good = headers_for("push", body)
        bad_json = b'{"ref": '
        deep = b'{"a": ' * 100 + b"1" + b"}" * 100
        listed = b"[1, 2]"
        cases = [
            ({k: v for k, v in good.items() if k != "X-GitHub-Event"}, body, 400),
            ({k: v for k, v in good.items() if k != "X-GitHub-Delivery"}, body, 400),
            (headers_for("push", bad_json), bad_json, 400),
            (headers_for("push", deep), deep, 400),
            (headers_for("push", listed), listed, 400),
            (
                {
                    **good,
                    "X-GitHub-Hook-Installation-Target-Type": "integration",
                    "X-GitHub-Hook-Installation-Target-ID": "999",
                },
                body,
                401,
            ),
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
        assert {m["execution_id"] for m in again.json()["matched"]} == {
            m["execution_id"] for m in matched
        }
        assert all(m["duplicate"] for m in again.json()["matched"])
        assert len(await svc.events()) == 2


async def test_it_answers_503_and_acknowledges_nothing_when_the_store_is_down(
    tmp_path: Path,
) -> None:
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
        await svc.deploy(
            spec(
                "docs", events=["pull_request"], paths=["docs/**", "!docs/x/**"], fetch_context=True
            )
        )
        status = await svc.deployments.status("docs")
        details = status["triggers"][0]["details"]
        assert details == {
            "path": INGRESS,
            "events": ["pull_request"],
            "paths": ["docs/**", "!docs/x/**"],
            "fetch_context": True,
        }


# --- with the GitHub API stand-in ---------------------------------------------------------


async def test_it_filters_pull_requests_on_the_files_the_api_lists(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
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


async def test_it_calls_a_github_enterprise_api_under_its_path(
    tmp_path: Path, key_pem: tuple[bytes, bytes], key_path: Path
) -> None:
    ghes = GitHubStandIn(
        app_id=APP_ID, public_key=key_pem[1], webhook_secret=SECRET, prefix="/api/v3"
    )
    with ghes:
        add_pull(ghes, ["docs/a.md", "src/b.py", "src/c.py"])
        ghes.page_size = 1  # Link headers carry the /api/v3 path on to the next pages
        async with service(tmp_path, key_path, ghes.url) as svc:
            await svc.deploy(spec("src", events="pull_request", paths="src/c.py"))
            answer = await svc.post("pull_request.opened")
            assert [m["workflow_id"] for m in answer.json()["matched"]] == ["src"]
        assert [p for _, p in ghes.requests][:2] == [
            "/api/v3/app/installations/1/access_tokens",
            "/api/v3/repos/Codertocat/Hello-World/pulls/2/files",
        ]
        assert len(ghes.requests) == 4  # the token, then three pages of files


async def test_it_attaches_pull_request_and_push_context(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    add_pull(standin, ["README.md", "docs/a.md"])
    push = json.loads(body_of("push.new-branch"))
    standin.commits[("Codertocat/Hello-World", push["after"])] = commit_entry(
        push["after"], "Initial commit", files=["README.md"]
    )
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
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    async with service(tmp_path, key_path, standin.url) as svc:
        await svc.deploy(
            spec("ctx", events="pull_request", fetch_context=True),
            spec("paths", events="pull_request", paths="docs/**"),
        )
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
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    add_pull(standin, ["docs/a.md"])
    standin.delay = 6.0
    async with service(tmp_path, key_path, standin.url) as svc:
        await svc.deploy(spec("ctx", events="pull_request", fetch_context=True))
        started = time.monotonic()
        answer = await svc.post("pull_request.opened")
        elapsed = time.monotonic() - started
        assert answer.status_code == 202 and elapsed < 6.0
        [event] = await svc.events()
        assert "within 5 s" in event.payload["context_error"]


async def test_it_refuses_deliveries_when_no_webhook_secret_is_configured(tmp_path: Path) -> None:
    async with service(tmp_path, GITHUB_WEBHOOK_SECRET="") as svc:
        async with anyio.create_task_group() as tg:
            svc.manager.attach(tg)
            await svc.deploy(spec("any-push"))
            await until(
                lambda: (
                    svc.manager.health("any-push", "github")
                    == (
                        "failing",
                        "github.webhook_secret is not set: every delivery is refused until it is",
                    )
                )
            )
            answer = await svc.post("push.new-branch")
            assert answer.status_code == 503
            assert "github.webhook_secret" in answer.json()["detail"]
            assert await svc.events() == []
            await svc.manager.stop_all()


async def test_it_fires_pull_requests_unfiltered_by_paths_without_app_credentials(
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as svc:
        async with anyio.create_task_group() as tg:
            svc.manager.attach(tg)
            await svc.deploy(spec("docs", events="pull_request", paths="docs/**"))
            await until(lambda: (svc.manager.health("docs", "github") or ("",))[0] == "degraded")
            answer = await svc.post("pull_request.opened")
            assert [m["workflow_id"] for m in answer.json()["matched"]] == ["docs"]
            [event] = await svc.events()
            assert "github.app_id" in event.payload["context_error"]
            await svc.manager.stop_all()
