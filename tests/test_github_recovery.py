"""The GitHub App client and the recovery of lost deliveries.

JWTs, installation tokens and rate limits against the API stand-in; redelivery in process and
with ``wfsched serve`` subprocesses (one daemon, then two replicas on PostgreSQL and Redis).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
import jwt
import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.github_harness import (  # noqa: F401 - fixtures
    APP_ID,
    INGRESS,
    add_pull,
    body_of,
    deploy_github_specs,
    failed,
    github_app,
    github_env,
    key_path_fixture,
    key_pem_fixture,
    lose_deliveries,
    redelivered_ok,
    standin_fixture,
    until,
)
from tests.github_standin import GitHubStandIn, Scripted
from wfsched.locks import LocalLocks
from wfsched.plugins import configure
from wfsched.spec import load_specs
from wfsched.triggers.github.app import RateLimited, client
from wfsched.triggers.github.redeliver import Redeliverer, note_answered, recover_forever

pytestmark = pytest.mark.anyio


# --- the App client ------------------------------------------------------------------------


async def test_it_signs_app_jwts_as_github_requires(
    standin: GitHubStandIn, key_path: Path, key_pem: tuple[bytes, bytes]
) -> None:
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
    standin: GitHubStandIn, key_path: Path
) -> None:
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


async def test_it_honours_rate_limits_before_calling_again(
    standin: GitHubStandIn, key_path: Path
) -> None:
    app = github_app(standin, key_path)
    reset = int(time.time()) + 120
    standin.script = [
        Scripted(
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
            {"message": "API rate limit exceeded"},
        )
    ]
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


# --- recovery of lost deliveries -----------------------------------------------------------


async def test_it_redelivers_only_failed_deliveries_within_the_window(
    standin: GitHubStandIn, key_path: Path
) -> None:
    ok = standin.record_attempt(
        "g-ok", "push", body_of("push.new-branch"), status_code=202, status="OK"
    )
    lost = failed(standin, "pull_request.opened")
    retried_ok = failed(standin, "issues.opened")
    standin.record_attempt(
        retried_ok["guid"],
        "issues",
        body_of("issues.opened"),
        status_code=202,
        status="OK",
        redelivery=True,
    )
    too_old = failed(standin, "push.new-branch", at=time.time() - 7200)
    answered_here = failed(standin, "release.published")
    note_answered(answered_here["guid"])  # we committed it; GitHub saw no answer in time
    twice = failed(standin, "issues.labeled")
    twice_again = failed(standin, "issues.labeled", guid=twice["guid"])
    standin.page_size = 2  # the list spans several pages, followed through Link headers
    redeliverer = Redeliverer(github_app(standin, key_path), 3600.0, logging.getLogger("test"))
    async with client() as http:
        asked = await redeliverer.run_once(http)
        assert sorted(asked) == sorted([lost["guid"], twice["guid"]])
        assert sorted(standin.redeliver_requests) == sorted([lost["id"], twice_again["id"]])
        assert ok["id"] not in standin.redeliver_requests
        assert too_old["id"] not in standin.redeliver_requests
        # the stand-in redelivers; both arrive OK, so the next pass asks for nothing
        wait_for(
            lambda: all(any(a["status"] == "OK" for a in standin.attempts_of(g)) for g in asked),
            5,
            message="redeliveries",
        )
        assert await redeliverer.run_once(http) == []
        # a redelivery that fails again is asked for again, at most three times in all
        for expected in (1, 1, 0, 0):
            standin.mark_failed(lost["guid"])
            before = len(standin.attempts_of(lost["guid"]))
            assert len(await redeliverer.run_once(http)) == expected
            if expected:

                def attempted(b: int = before) -> bool:
                    return len(standin.attempts_of(lost["guid"])) > b

                wait_for(attempted, 5, message="redelivery attempt")
        assert standin.redeliver_requests.count(lost["id"]) == 1


@pytest.mark.slow
def test_it_recovers_deliveries_lost_while_the_daemon_was_down(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    d = Daemon(tmp_path / "daemon", env=github_env(standin, key_path))
    deploy_github_specs(d)
    add_pull(standin, ["docs/a.md"])
    standin.target_url = d.url + INGRESS
    try:
        d.start()
        committed = standin.deliver("push", body_of("push.new-branch"))
        assert committed["status"] == "OK"
        assert d.stop() == 0
        # the outage: GitHub's attempts fail, and it marks the committed one failed too
        lost = lose_deliveries(standin)
        standin.mark_failed(committed["guid"])
        too_old = failed(standin, "issues.opened", at=time.time() - 2 * 3600)
        d.start()
        wait_for(
            lambda: redelivered_ok(standin, [*lost, committed]),
            20,
            message="lost deliveries redelivered and accepted",
        )
        events = d.cli_json("history", "gh")
        by_guid = sorted(e["payload"]["delivery_id"] for e in events)
        assert by_guid == sorted(x["guid"] for x in [committed, *lost])  # one event each
        issues = d.cli_json("history", "issues")
        assert [e["payload"]["delivery_id"] for e in issues] == [lost[1]["guid"]]
        pr = next(e["payload"] for e in events if e["payload"]["event"] == "pull_request")
        assert [f["filename"] for f in pr["context"]["files"]] == ["docs/a.md"]
        # one recovery loop for both workflows: each failed delivery was asked for once
        assert sorted(standin.redeliver_requests) == sorted(x["id"] for x in [*lost, committed])
        assert too_old["id"] not in standin.redeliver_requests
        details = d.cli_json("status", "gh")["triggers"][0]["details"]
        assert details["repository"] == ["Codertocat/*"] and details["path"] == INGRESS
        logs = d.logs()
        assert standin.tokens and not any(token in logs for token in standin.tokens)
        assert "eyJ" not in logs and "BEGIN PRIVATE KEY" not in logs
        assert d.stop() == 0
    finally:
        d.kill()


@pytest.mark.slow
def test_it_recovers_once_across_replicas_sharing_postgres_and_redis(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path, pg_url: str, redis_url: str
) -> None:
    env = github_env(standin, key_path, DATABASE_URL=pg_url, REDIS_URL=redis_url)
    replicas = [Daemon(tmp_path / f"replica{i}", env=env) for i in range(2)]
    deploy_github_specs(replicas[0])
    add_pull(standin, ["docs/a.md"])
    standin.target_url = replicas[0].url + INGRESS
    lost = lose_deliveries(standin)
    try:
        for d in replicas:
            d.start()
        wait_for(lambda: redelivered_ok(standin, lost), 20, message="redelivered")
        events = replicas[1].cli_json("history")
        assert sorted(e["payload"]["delivery_id"] for e in events) == sorted(
            [lost[0]["guid"], lost[1]["guid"], lost[1]["guid"]]  # issues matches both workflows
        )
        assert sorted(standin.redeliver_requests) == sorted(x["id"] for x in lost)
        for d in replicas:
            assert d.stop() == 0
    finally:
        for d in replicas:
            d.kill()


async def test_it_keeps_recovering_periodically_while_it_holds_the_lock(
    standin: GitHubStandIn, key_path: Path
) -> None:
    reports: list[tuple[str, str | None]] = []
    redeliverer = Redeliverer(github_app(standin, key_path), 3600.0, logging.getLogger("test"))
    async with LocalLocks().hold("github-redelivery") as lease:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: recover_forever(
                    redeliverer,
                    lease,
                    lambda h, e: reports.append((h, e)),
                    interval=0.1,
                    client=client,
                )
            )
            first = failed(standin, "push.new-branch")
            await until(lambda: first["id"] in standin.redeliver_requests)
            standin.script = [Scripted(502, body={"message": "Server Error"})]
            await until(lambda: any(h == "degraded" for h, _ in reports))
            second = failed(standin, "issues.opened")
            await until(lambda: second["id"] in standin.redeliver_requests)
            lease.lost = True  # another replica holds it now: this loop ends
    assert reports[-1] == ("healthy", None)
    degraded = next(e for h, e in reports if h == "degraded")
    assert degraded is not None and "502" in degraded


def test_the_example_app_config_and_specs_are_valid() -> None:
    examples = Path(__file__).parent.parent / "examples" / "github"
    settings, registry = configure(str(examples / "wfsched.toml"), environ={})
    assert settings.get("github.app_id") == "123456"
    specs = load_specs([examples / "workflows"], registry)
    assert {s.id for s in specs} == {"docs-preview", "release", "incident-triage"}
