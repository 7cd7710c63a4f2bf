"""Routing costs what the matching workflows cost, not what the fleet costs (issue #18).

In process (the real web app, store and manager of ``tests/github_harness.py``): a GitHub
delivery checks the filters of its repository's triggers and of the triggers that listen on
every repository, never the others; no request walks the running triggers; the index follows
deploys, redeploys, renames, pauses and removals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.github_harness import INGRESS, body_of, headers_for, service, spec
from wfsched.manager import Running
from wfsched.triggers.github.filters import Facts, Filters

pytestmark = pytest.mark.anyio

HOOK = "/api/v1/public/webhook/workflow/"
PUSH = body_of("push.new-branch")  # repository Codertocat/Hello-World
REPOS = 1000


class Unwalkable(dict[tuple[str, str], Running]):
    """The manager's running triggers, refusing to be walked while ``armed``."""

    armed = False

    def _walked(self) -> None:
        if self.armed:
            raise AssertionError("a request walked every running trigger")

    def __iter__(self) -> Iterator[tuple[str, str]]:
        self._walked()
        return super().__iter__()

    def items(self) -> Any:
        self._walked()
        return super().items()

    def values(self) -> Any:
        self._walked()
        return super().values()

    def keys(self) -> Any:
        self._walked()
        return super().keys()


def fleet() -> list[dict[str, Any]]:
    """One github workflow per repository, plus ones listening on many or every repository."""
    documents = [spec(f"repo-{i}", repository=f"org/repo-{i}") for i in range(REPOS)]
    documents += [
        spec("exact", repository="Codertocat/Hello-World"),
        spec("two-exact", repository=["org/repo-1", "Codertocat/Hello-World"]),
        spec("glob", repository="Codertocat/*"),
        spec("any"),
        spec("not-this-one", repository="!Codertocat/Hello-World"),
        spec("not-other", repository="!org/repo-3"),
        spec("bracket", repository="Codertocat/Hello-Worl[d]"),
        spec("other-exact-only", repository="Codertocat/Other"),
    ]
    return documents


async def test_a_delivery_checks_only_its_repositorys_triggers_and_the_wildcards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(*fleet())
        checked: list[tuple[str, ...]] = []
        match = Filters.match

        def counting(self: Filters, facts: Facts, paths: Any = None) -> bool:
            rule = self.lists.get("repository")
            checked.append(tuple(text for text, _ in rule.positive) if rule else ())
            return match(self, facts, paths)

        monkeypatch.setattr(Filters, "match", counting)
        answer = await svc.http.post(INGRESS, content=PUSH, headers=headers_for("push", PUSH))
        assert answer.status_code == 202, answer.text
        matched = sorted(m["workflow_id"] for m in answer.json()["matched"])
        # Exact: every trigger that could match was asked.
        assert matched == ["any", "bracket", "exact", "glob", "not-other", "two-exact"]
        # Two passes (route, then plan) over the candidates only: 7 of the 1,008 triggers.
        assert len(checked) <= 2 * 7, checked
        assert not any(c and all(r.startswith("org/") for r in c) for c in checked), checked


async def test_no_request_walks_the_running_triggers(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(
            *[{"id": f"hook-{i}", "triggers": [{"type": "webhook"}]} for i in range(50)],
            spec("gh", repository="Codertocat/Hello-World"),
        )
        guard = Unwalkable(svc.manager.running)
        svc.manager.running = guard
        guard.armed = True
        hook = await svc.http.post(HOOK + "hook-7", json={"a": 1})
        assert hook.status_code == 202, hook.text
        missing = await svc.http.post(HOOK + "nope", json={})
        assert missing.status_code == 404, missing.text
        github = await svc.http.post(INGRESS, content=PUSH, headers=headers_for("push", PUSH))
        assert github.status_code == 202, github.text
        assert [m["workflow_id"] for m in github.json()["matched"]] == ["gh"]
        guard.armed = False


async def test_the_index_follows_redeploys_renames_pauses_and_removals(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        moved = spec("gh", repository="Codertocat/Hello-World")
        await svc.deploy(moved, {"id": "hook", "triggers": [{"type": "webhook"}]})

        async def github_matches() -> list[str]:
            answer = await svc.http.post(INGRESS, content=PUSH, headers=headers_for("push", PUSH))
            assert answer.status_code == 202, answer.text
            return [m["workflow_id"] for m in answer.json()["matched"]]

        assert await github_matches() == ["gh"]
        # Moved to another repository: no longer a candidate of this one.
        await svc.deploy(spec("gh", repository="org/elsewhere"))
        assert await github_matches() == []
        # Renamed trigger, back on the repository.
        document = spec("gh", repository="Codertocat/Hello-World")
        document["triggers"][0]["id"] = "renamed"
        await svc.deploy(document)
        assert await github_matches() == ["gh"]
        assert [k for k in svc.manager.running if k[0] == "gh"] == [("gh", "renamed")]
        await svc.deployments.pause(["gh"])
        await svc.deployments.pause(["hook"])
        await svc.manager.reconcile()
        assert await github_matches() == []
        assert (await svc.http.post(HOOK + "hook", json={})).status_code == 404
        await svc.deployments.resume(["gh"])
        await svc.deployments.resume(["hook"])
        await svc.manager.reconcile()
        assert await github_matches() == ["gh"]
        assert (await svc.http.post(HOOK + "hook", json={})).status_code == 202
        await svc.deployments.undeploy(["gh"])
        await svc.manager.reconcile()
        assert await github_matches() == []
        assert list(svc.manager.shared_triggers("github")) == []
