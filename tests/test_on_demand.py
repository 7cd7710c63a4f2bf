"""Webhook and manual triggers are built by their first request, not at start.

In process (the real web app, SQLite store and manager of ``tests/github_harness.py``): a
started idle trigger costs no instance; the first request builds one from the stored spec and
it is kept, with its state, until its definition changes; every view still sees the idle ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.github_harness import service

pytestmark = pytest.mark.anyio

HOOK = "/api/v1/public/webhook/workflow/"


def hook(workflow_id: str, name: str = "", **config: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "name": name or workflow_id,
        "triggers": [{"type": "webhook", **config}],
    }


async def test_idle_triggers_have_no_instance_until_their_first_request(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(
            *[hook(f"hook-{i}") for i in range(20)],
            {"id": "by-hand", "triggers": [{"type": "manual", "require_confirmation": False}]},
        )
        assert svc.manager.running == {}
        assert svc.manager.started() == 21
        routes = svc.manager.ingress_routes()
        assert [r[0] for r in routes] == sorted(f"hook-{i}" for i in range(20))
        assert {r[2:] for r in routes} == {("webhook", "workflow", "healthy")}
        assert all(svc.manager.routes_webhook(f"hook-{i}") for i in range(20))
        health = await svc.http.get("/health")
        assert len(health.json()["triggers"]) == 21
        assert not svc.manager.routes_webhook("by-hand")

        first = await svc.http.post(HOOK + "hook-3", json={"n": 1})
        assert first.status_code == 202, first.text
        assert list(svc.manager.running) == [("hook-3", "webhook")]
        built = svc.manager.ingress_trigger("hook-3")
        assert (await svc.http.post(HOOK + "hook-3", json={"n": 2})).status_code == 202
        assert svc.manager.ingress_trigger("hook-3") is built
        assert svc.manager.started() == 21
        assert (await svc.http.post(HOOK + "nope", json={})).status_code == 404

        # A manual trigger is built by its first fire, and kept.
        fired = await svc.deployments.fire_manual("by-hand", {"x": 1}, user="me", confirmed=False)
        assert fired.created
        assert sorted(svc.manager.running) == [("by-hand", "manual"), ("hook-3", "webhook")]
        assert svc.manager.started() == 21
        events = await svc.events()
        assert sorted(e.workflow_id for e in events) == ["by-hand", "hook-3", "hook-3"]


async def test_a_built_trigger_keeps_its_state_until_its_definition_changes(
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as svc:
        # One request per 100 s: the second is refused by the trigger's own token bucket.
        await svc.deploy(hook("limited", rate_limit=0.01))
        assert (await svc.http.post(HOOK + "limited", json={})).status_code == 202
        assert (await svc.http.post(HOOK + "limited", json={})).status_code == 429
        built = svc.manager.ingress_trigger("limited")
        # The workflow changes, the trigger does not: the same instance, the same bucket.
        await svc.deploy(hook("limited", "renamed workflow", rate_limit=0.01))
        assert svc.manager.ingress_trigger("limited") is built
        assert (await svc.http.post(HOOK + "limited", json={})).status_code == 429
        # The trigger changes: idle again, then a new instance with a full bucket.
        await svc.deploy(hook("limited", rate_limit=0.02))
        assert svc.manager.running == {}
        assert svc.manager.routes_webhook("limited")
        assert (await svc.http.post(HOOK + "limited", json={})).status_code == 202
        assert svc.manager.ingress_trigger("limited") is not built
        # Another type under the same trigger id: no longer on demand.
        cron = {"type": "cron", "id": "webhook", "cron": "* * * * *"}
        await svc.deploy({"id": "limited", "triggers": [cron]})
        assert not svc.manager.routes_webhook("limited")
        assert (svc.manager.started(), svc.manager.is_live("limited", "webhook")) == (0, True)
        await svc.deploy(hook("limited", rate_limit=0.02))
        assert svc.manager.routes_webhook("limited")
        assert not svc.manager.is_live("limited", "webhook")
        # Paused: gone from every index, built or not.
        await svc.deployments.pause(["limited"])
        await svc.manager.reconcile()
        assert (svc.manager.running, svc.manager.started()) == ({}, 0)
        assert (await svc.http.post(HOOK + "limited", json={})).status_code == 404


async def test_a_secret_that_cannot_be_resolved_fails_its_first_request(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        await svc.deploy(
            hook("broken", auth={"type": "hmac", "secret": "env:WFSCHED_UNSET_ON_DEMAND"}),
            hook("disabled") | {"triggers": [{"type": "webhook", "enabled": False}]},
        )
        answer = await svc.http.post(HOOK + "broken", json={})
        assert (answer.status_code, answer.json()["error"]) == (503, "trigger_unavailable")
        health, error = svc.manager.health("broken", "webhook") or ("", "")
        assert health == "failing"
        assert "WFSCHED_UNSET_ON_DEMAND" in (error or "")
        await svc.manager.flush_health()
        [state] = await svc.store.trigger_states("broken")
        assert state.health == "failing"
        assert await svc.events() == []
        # A disabled trigger is not started, so not routed.
        assert not svc.manager.routes_webhook("disabled")
        assert (await svc.http.post(HOOK + "disabled", json={})).status_code == 404


async def test_a_secret_that_cannot_be_resolved_shows_failing_before_any_request(
    tmp_path: Path,
) -> None:
    """Built on demand or not, a webhook whose secret reference will never resolve says so as
    soon as it is started: nobody should learn it from a sender's 503s."""
    async with service(tmp_path) as svc:
        await svc.deploy(
            hook("broken", auth={"type": "hmac", "secret": "env:WFSCHED_UNSET_ON_DEMAND"}),
            hook("fine", auth={"type": "hmac", "secret": "s3cret"}),
        )
        health, error = svc.manager.health("broken", "webhook") or ("", "")
        assert health == "failing"
        assert "WFSCHED_UNSET_ON_DEMAND" in (error or "")
        await svc.manager.flush_health()
        [state] = await svc.store.trigger_states("broken")
        assert (state.health, "WFSCHED_UNSET_ON_DEMAND" in (state.last_error or "")) == (
            "failing",
            True,
        )
        assert svc.manager.health("fine", "webhook") is None  # still idle: nothing built
