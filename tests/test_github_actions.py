"""The github-actions dispatch target against the local GitHub stand-in, through a real daemon:
installation lookup, token exchange, workflow_dispatch with resolved inputs, 5xx retried,
422 failing the event with GitHub's message, and deploy-time validation of the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.github_harness import github_env, key_path_fixture, key_pem_fixture, standin_fixture
from tests.github_standin import ActionsWorkflow, GitHubStandIn, Scripted

__all__ = ["key_path_fixture", "key_pem_fixture", "standin_fixture"]
pytestmark = pytest.mark.slow

REPO = "acme/site"


def spec(workflow_id: str, **dispatch: Any) -> dict[str, Any]:
    table = {"mode": "github-actions", "repository": REPO, "workflow": "deploy.yml", "ref": "main"}
    return {
        "id": workflow_id,
        "dispatch": {**table, **dispatch},
        "triggers": [{"type": "webhook", "id": "hook"}],
    }


def status_of(d: Daemon, execution_id: str) -> dict[str, Any]:
    return next(e for e in d.cli_json("history") if e["execution_id"] == execution_id)


def fire(d: Daemon, workflow_id: str, body: Any) -> str:
    response = d.request("POST", f"/api/v1/public/webhook/workflow/{workflow_id}", json=body)
    assert response.status_code in (200, 202), response.text
    return str(response.json()["execution_id"])


def test_github_actions_target_dispatches_retries_5xx_and_fails_on_422(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    standin.installations[REPO] = 4242
    standin.workflows[(REPO, "deploy.yml")] = ActionsWorkflow(inputs=("order", "run", "env"))
    specs = tmp_path / "specs"
    specs.mkdir()
    inputs = {"order": "$.payload.body.order", "run": "$.execution_id", "env": "prod"}
    (specs / "ship.json").write_text(json.dumps(spec("ship", inputs=inputs)))
    (specs / "wrong.json").write_text(json.dumps(spec("wrong", ref="nope")))
    env = github_env(
        standin,
        key_path,
        WFSCHED_DISPATCH_RETRY_BASE="50ms",
        WFSCHED_DISPATCH_RETRY_MAX="100ms",
    )
    with Daemon(tmp_path / "run", env=env) as d:
        d.cli("deploy", str(specs))
        standin.script.append(Scripted(502, body={"message": "Server Error"}))
        shipped = fire(d, "ship", {"order": 7})
        wait_for(lambda: status_of(d, shipped)["status"] == "dispatched", 20, message="shipped")
        first = status_of(d, shipped)
        again = fire(d, "ship", {})  # no order in this event: the input is left out
        wait_for(lambda: len(standin.dispatches) == 2, 20, message="second dispatch")
        refused = fire(d, "wrong", {})
        wait_for(lambda: status_of(d, refused)["status"] == "failed", 20, message="422 failed")
        failed = status_of(d, refused)
    assert first["attempts"] == 2 and "502" in first["last_error"]
    one, two = standin.dispatches
    assert (one.repository, one.workflow) == (REPO, "deploy.yml")
    assert one.body == {"ref": "main", "inputs": {"order": "7", "run": shipped, "env": "prod"}}
    assert two.body == {"ref": "main", "inputs": {"run": again, "env": "prod"}}
    assert one.headers["traceparent"].startswith("00-")
    # One installation lookup and one token exchange serve every dispatch.
    lookups = [r for r in standin.requests if r[1] == f"/repos/{REPO}/installation"]
    assert len(lookups) == 2  # the 502, then the answer
    assert standin.token_requests == [4242]
    assert failed["attempts"] == 1
    assert "GitHub refused the dispatch" in failed["last_error"]
    assert "No ref found for: nope" in failed["last_error"]


@pytest.mark.parametrize(
    ("dispatch", "needle"),
    [
        ({"inputs": {f"i{n}": "x" for n in range(11)}}, "field 'dispatch.inputs': has 11 inputs"),
        ({"inputs": {"a": "$.payload..x"}}, "field 'dispatch.inputs.a'"),
        ({"inputs": {"a": {"b": 1}}}, "field 'dispatch.inputs.a'"),
        ({"repository": "acme"}, "field 'dispatch.repository'"),
        ({"workflow": ""}, "field 'dispatch.workflow'"),
        ({"branch": "main"}, "field 'dispatch.branch'"),
        # Each would steer the App's token to another API path than the workflow's dispatches.
        ({"workflow": "../../../../app/installations#"}, "field 'dispatch.workflow'"),
        ({"workflow": "ci.yml?x=1"}, "field 'dispatch.workflow'"),
        ({"workflow": "sub/ci.yml"}, "field 'dispatch.workflow'"),
        ({"workflow": ".."}, "field 'dispatch.workflow'"),
        ({"workflow": -1}, "field 'dispatch.workflow'"),
        ({"repository": "../acme"}, "field 'dispatch.repository'"),
        ({"repository": "acme/.."}, "field 'dispatch.repository'"),
    ],
)
def test_deploy_refuses_a_bad_github_actions_table(
    tmp_path: Path, dispatch: dict[str, Any], needle: str
) -> None:
    from wfsched.deployments import DeploymentService
    from wfsched.errors import WfschedError
    from wfsched.plugins import configure

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec("bad", **dispatch)))
    settings, registry = configure(environ={"GITHUB_APP_ID": "1", "GITHUB_APP_PRIVATE_KEY": "pem"})
    service = DeploymentService(store=None, registry=registry, settings=settings)  # type: ignore[arg-type]
    with pytest.raises(WfschedError) as err:
        service.load([path])
    assert str(path) in str(err.value) and needle in str(err.value)


def test_deploy_refuses_github_actions_without_app_credentials(tmp_path: Path) -> None:
    from wfsched.deployments import DeploymentService
    from wfsched.errors import WfschedError
    from wfsched.plugins import configure

    path = tmp_path / "ship.json"
    path.write_text(json.dumps(spec("ship")))
    settings, registry = configure(environ={})
    service = DeploymentService(store=None, registry=registry, settings=settings)  # type: ignore[arg-type]
    with pytest.raises(WfschedError, match="github.app_id"):
        service.load([path])


def test_the_github_actions_example_deploys() -> None:
    from wfsched.deployments import DeploymentService
    from wfsched.plugins import configure

    settings, registry = configure(environ={"GITHUB_APP_ID": "1", "GITHUB_APP_PRIVATE_KEY": "pem"})
    service = DeploymentService(store=None, registry=registry, settings=settings)  # type: ignore[arg-type]
    examples = Path(__file__).parent.parent / "examples" / "github-actions" / "workflows"
    (nightly,) = service.load([examples])
    assert nightly.dispatch is not None and nightly.dispatch["mode"] == "github-actions"
    assert nightly.triggers[0].config["cron"].startswith("H ")
