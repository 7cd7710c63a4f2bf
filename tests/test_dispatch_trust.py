"""The trust boundary of a ``[dispatch]`` table deployed over the HTTP API.

An API caller has no access to the host, so a table it deploys may not make the daemon send
events (mail, GitHub deliveries fetched with the App) or POST from inside the operator's
network to a host of the caller's choosing: an engine/cloudevents ``url`` must lie under one
of ``dispatch.allowed_urls``. The CLI on the host, which has the operator's access, may name
any url. A github-actions table can only reach repositories the App is installed on: the
installation is looked up per repository, and a token is minted for that installation only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.github_harness import github_env, key_path_fixture, key_pem_fixture, standin_fixture
from tests.github_standin import ActionsWorkflow, GitHubStandIn

__all__ = ["key_path_fixture", "key_pem_fixture", "standin_fixture"]

ALLOWED = "http://127.0.0.1:9/engines, https://sink.example.com"


def spec(workflow_id: str, **dispatch: Any) -> dict[str, Any]:
    return {"id": workflow_id, "dispatch": dispatch, "triggers": [{"type": "webhook"}]}


def api_deploy(d: Daemon, document: dict[str, Any]) -> httpx.Response:
    return d.request("POST", f"/api/v1/deployment/workflows/{document['id']}/deploy", json=document)


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://127.0.0.1:9/engines", True),
        ("http://127.0.0.1:9/engines/team-a", True),
        ("https://sink.example.com/events", True),
        ("https://SINK.example.com:443/events", True),
        ("http://127.0.0.1:9/engines-evil", False),
        ("http://127.0.0.1:9/engines/../admin", False),
        ("http://127.0.0.1:9/engines%2F..%2Fadmin", False),
        ("http://127.0.0.1:10/engines", False),
        ("https://127.0.0.1:9/engines", False),
        ("https://sink.example.com.evil.net/events", False),
        ("http://sink.example.com/events", False),
        ("http://169.254.169.254/latest", False),
    ],
)
def test_an_api_dispatch_url_must_lie_under_an_allowed_prefix(url: str, accepted: bool) -> None:
    from wfsched.deployments import DeploymentService
    from wfsched.plugins import configure
    from wfsched.spec import InvalidSpecs

    settings, registry = configure(environ={"WFSCHED_DISPATCH_ALLOWED_URLS": ALLOWED})
    service = DeploymentService(store=None, registry=registry, settings=settings)  # type: ignore[arg-type]
    for mode in ("engine", "cloudevents"):
        document = spec("w", mode=mode, url=url)
        service.parse_document(document)  # the CLI on the host: any url
        if accepted:
            service.parse_document(document, from_api=True)
            continue
        with pytest.raises(InvalidSpecs) as err:
            service.parse_document(document, from_api=True)
        assert "field 'dispatch.url'" in str(err.value)
        assert "dispatch.allowed_urls" in str(err.value)


@pytest.mark.slow
def test_over_the_api_a_dispatch_url_is_refused_unless_allowed(tmp_path: Path) -> None:
    with Daemon(tmp_path / "closed") as d:
        r = api_deploy(d, spec("out", mode="engine", url="http://attacker.example/collect"))
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "invalid_spec"
        assert "'dispatch.url'" in body["detail"] and "it is empty" in body["detail"]
        assert d.get("/api/v1/deployment/workflows/out/status").status_code == 404
        # Without a url the operator's own dispatch.engine_url applies: no new destination.
        r = api_deploy(d, spec("mine", mode="log"))
        assert r.status_code == 201, r.text
        # The CLI on the host may name any url.
        folder = tmp_path / "specs"
        folder.mkdir()
        (folder / "out.json").write_text(json.dumps(spec("out", mode="engine", url="http://x.y/")))
        d.cli("deploy", str(folder))
    env = {"WFSCHED_DISPATCH_ALLOWED_URLS": "http://engine.internal:8080/wf"}
    with Daemon(tmp_path / "open", env=env) as d:
        url = "http://engine.internal:8080/wf/team-a"
        r = api_deploy(d, spec("ok", mode="cloudevents", url=url))
        assert r.status_code == 201, r.text
        r = api_deploy(d, spec("no", mode="cloudevents", url="http://engine.internal:8080/wfx"))
        assert r.status_code == 422, r.text
        assert "allows http://engine.internal:8080/wf" in r.json()["detail"]


@pytest.mark.slow
def test_github_actions_over_the_api_reaches_only_repositories_the_app_is_installed_on(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    standin.installations["acme/site"] = 4242
    standin.workflows[("acme/site", "deploy.yml")] = ActionsWorkflow()
    standin.workflows[("victim/app", "deploy.yml")] = ActionsWorkflow()
    table = {"mode": "github-actions", "workflow": "deploy.yml", "ref": "main"}
    with Daemon(tmp_path / "run", env=github_env(standin, key_path)) as d:
        for workflow_id, repository in (("ours", "acme/site"), ("theirs", "victim/app")):
            r = api_deploy(d, spec(workflow_id, repository=repository, **table))
            assert r.status_code == 201, r.text
        fired = {}
        for workflow_id in ("ours", "theirs"):
            response = d.request("POST", f"/api/v1/public/webhook/workflow/{workflow_id}", json={})
            assert response.status_code in (200, 202), response.text
            fired[workflow_id] = response.json()["execution_id"]

        def outcome(workflow_id: str) -> dict[str, Any] | None:
            history = d.cli_json("history")
            found = [e for e in history if e["execution_id"] == fired[workflow_id]]
            return found[0] if found and found[0]["status"] != "pending" else None

        ours = wait_for(lambda: outcome("ours"), 20, message="the installed repository")
        theirs = wait_for(lambda: outcome("theirs"), 20, message="the other repository")
    assert ours["status"] == "dispatched"
    assert theirs["status"] == "failed" and "404" in theirs["last_error"]
    assert [(x.repository, x.workflow) for x in standin.dispatches] == [("acme/site", "deploy.yml")]
    assert standin.token_requests == [4242], "no token for any other installation"
