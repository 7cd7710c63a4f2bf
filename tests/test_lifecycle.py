"""Ingress while triggers start, stop or are replaced: no acknowledgement without a record.

Real ``wfsched serve`` subprocesses under concurrent load (signed GitHub push deliveries and
per-workflow webhooks) while SIGTERM lands or the workflows are redeployed again and again.
Afterwards every 2xx must have its events in history, and no request for a deployed workflow
may have been answered 404 or ``"matched": []``; the only other answer allowed is 503 with
``Retry-After`` (or, once the daemon stopped listening, a refused connection).

In process (the real web app, store and manager of ``tests/github_harness.py``): the answers
once triggers stopped, and that a replaced or renamed trigger is never missing from routing.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.github_harness import INGRESS, SECRET, body_of, headers_for, service

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GITHUB_FLOWS = ("gh-a", "gh-b")
HOOK_FLOWS = ("hook-a", "hook-b")
HOOK = "/api/v1/public/webhook/workflow/"
PUSH = body_of("push.new-branch")
WORKERS = 6  # per kind: enough to keep requests in flight on two shared cores
ENV = {"GITHUB_WEBHOOK_SECRET": SECRET}


def github_spec(workflow_id: str, round_: int = 0) -> dict[str, Any]:
    # ``payload`` is part of the trigger's identity: a new round restarts the trigger.
    trigger = {"type": "github", "id": "push", "repository": "Codertocat/*"}
    return {"id": workflow_id, "triggers": [{**trigger, "payload": {"round": round_}}]}


def hook_spec(workflow_id: str, round_: int = 0) -> dict[str, Any]:
    return {"id": workflow_id, "triggers": [{"type": "webhook", "payload": {"round": round_}}]}


def specs(round_: int = 0) -> dict[str, dict[str, Any]]:
    out = {w: github_spec(w, round_) for w in GITHUB_FLOWS}
    out.update({w: hook_spec(w, round_) for w in HOOK_FLOWS})
    return out


def deploy_all(d: Daemon) -> None:
    folder = d.workdir / "specs"
    folder.mkdir(exist_ok=True)
    for workflow_id, document in specs().items():
        (folder / f"{workflow_id}.json").write_text(json.dumps(document))
    d.cli("deploy", str(folder))


@dataclass
class Answer:
    kind: str
    """``github`` or ``hook``."""
    status: int | None
    """None: the connection was refused or closed before an answer."""
    body: Any = None
    retry_after: str | None = None


async def _send(http: httpx.AsyncClient, kind: str, n: int) -> Answer:
    try:
        if kind == "github":
            response = await http.post(INGRESS, content=PUSH, headers=headers_for("push", PUSH))
        else:
            path = HOOK + HOOK_FLOWS[n % len(HOOK_FLOWS)]
            response = await http.post(path, json={"n": n})
    except httpx.TransportError:
        return Answer(kind, None)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Answer(kind, response.status_code, body, response.headers.get("retry-after"))


async def hammer(
    url: str, answers: list[Answer], *, done: Callable[[], bool], stopping: anyio.Event
) -> None:
    """Keep WORKERS requests of each kind in flight until ``done()``; after ``stopping`` is
    set, a worker ends at its first refused connection (the daemon stopped listening)."""
    limits = httpx.Limits(max_connections=4 * WORKERS)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as http:

        async def worker(kind: str, first: int) -> None:
            n = first
            while not done():
                answer = await _send(http, kind, n)
                answers.append(answer)
                n += WORKERS
                if answer.status is None and stopping.is_set():
                    return

        async with anyio.create_task_group() as tg:
            for i in range(WORKERS):
                tg.start_soon(worker, "github", i)
                tg.start_soon(worker, "hook", i)


def history_ids(d: Daemon) -> dict[str, str]:
    """execution id → workflow id of every recorded event."""
    return {e["execution_id"]: e["workflow_id"] for e in d.cli_json("history", "--limit", "100000")}


def check(answers: list[Answer], recorded: dict[str, str]) -> None:
    """Every 2xx recorded, every deployed workflow matched, nothing but 2xx, 503 or refused."""
    assert answers
    wrong = [a for a in answers if a.status not in (None, 202, 503)]
    assert not wrong, f"{len(wrong)} unexpected answers, e.g. {wrong[:3]}"
    for a in answers:
        if a.status == 503:
            assert a.retry_after and a.body["error"], a
        if a.status != 202:
            continue
        if a.kind == "hook":
            assert a.body["execution_id"] in recorded, f"acknowledged, not recorded: {a}"
            continue
        matched = {m["workflow_id"]: m["execution_id"] for m in a.body["matched"]}
        assert sorted(matched) == sorted(GITHUB_FLOWS), f"delivery not matched to all: {a}"
        for workflow_id, execution_id in matched.items():
            assert recorded.get(execution_id) == workflow_id, f"acknowledged, not recorded: {a}"


async def until(predicate: Callable[[], object], timeout: float, message: str) -> None:
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


async def under_load(d: Daemon, action: Callable[[anyio.Event], Awaitable[None]]) -> list[Answer]:
    """Run ``action`` once requests are flowing; stop the load when it returns."""
    answers: list[Answer] = []
    finished = False
    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        load = partial(hammer, d.url, answers, done=lambda: finished, stopping=stopping)
        tg.start_soon(load)
        await until(lambda: len(answers) >= 4 * WORKERS, 20, "requests to flow")
        await action(stopping)
        finished = True
    return answers


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/wfsched.db"
    return str(request.getfixturevalue("pg_url"))


async def test_sigterm_under_load_acknowledges_only_what_it_recorded(
    tmp_path: Path, database_url: str
) -> None:
    d = Daemon(tmp_path, env={**ENV, "DATABASE_URL": database_url})
    deploy_all(d)
    with d:
        proc = d.proc
        assert proc is not None
        code: list[int] = []

        async def sigterm(stopping: anyio.Event) -> None:
            stopping.set()
            proc.send_signal(signal.SIGTERM)
            code.append(await anyio.to_thread.run_sync(proc.wait, 30))

        answers = await under_load(d, sigterm)
        d.proc = None
    assert code == [0], d.logs()[-3000:]
    check(answers, history_ids(d))
    # Intake stops by closing the listener; triggers stop only once the requests under way
    # were answered, so none of those is refused with 503 either.
    assert not [a for a in answers if a.status == 503]
    acknowledged = [a for a in answers if a.status == 202]
    assert len(acknowledged) >= 4 * WORKERS


async def test_redeploys_under_load_never_answer_404_or_match_nothing(
    tmp_path: Path, database_url: str
) -> None:
    d = Daemon(tmp_path, env={**ENV, "DATABASE_URL": database_url})
    deploy_all(d)
    with d:
        rounds: list[int] = []

        async def redeploy(stopping: anyio.Event) -> None:
            async with httpx.AsyncClient(base_url=d.url, timeout=20) as http:
                before = _starts(d)
                started = anyio.current_time()
                round_ = 0
                while anyio.current_time() - started < 3.0:
                    round_ += 1
                    for workflow_id, document in specs(round_).items():
                        path = f"/api/v1/deployment/workflows/{workflow_id}/deploy"
                        r = await http.put(path, json=document)
                        assert r.status_code == 200, r.text
                    rounds.append(round_)
                    # Let the daemon apply this round before the next replaces it.
                    applied = partial(_starts, d, before + len(specs()) * round_)
                    await until(applied, 10, f"round {round_} applied")

        answers = await under_load(d, redeploy)
        recorded = history_ids(d)
    assert len(rounds) >= 3
    check(answers, recorded)
    assert not [a for a in answers if a.status is None], "connections failed"


def _starts(d: Daemon, at_least: int = 0) -> int:
    """Triggers of ``specs()`` (re)started so far, as the daemon's log says, one per workflow
    per round (at start-up, on-demand ones are logged in one line, not one each); 0 until
    there are ``at_least``."""
    count = sum(
        1
        for ln in d.log_lines()
        if ln.get("event") == "trigger started" and ln.get("workflow_id") in specs()
    )
    return count if count >= at_least else 0


async def test_a_workflow_deployed_a_moment_ago_is_served_at_once(tmp_path: Path) -> None:
    with Daemon(tmp_path, env=ENV) as d:
        folder = tmp_path / "specs"
        folder.mkdir()
        (folder / "gh-a.json").write_text(json.dumps(github_spec("gh-a")))
        (folder / "hook-a.json").write_text(json.dumps(hook_spec("hook-a")))
        d.cli("deploy", str(folder))
        # Deployed means served: the daemon may not have noticed yet, the request waits for it.
        hook = d.request("POST", HOOK + "hook-a", json={})
        assert hook.status_code == 202, hook.text
        push = d.request("POST", INGRESS, content=PUSH, headers=headers_for("push", PUSH))
        assert push.status_code == 202, push.text
        assert [m["workflow_id"] for m in push.json()["matched"]] == ["gh-a"]
        recorded = history_ids(d)
        assert hook.json()["execution_id"] in recorded
        assert push.json()["matched"][0]["execution_id"] in recorded
        # Not deployed, or paused: 404 as before.
        unknown = d.request("POST", HOOK + "nope", json={})
        assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")
        d.cli("pause", "hook-a")
        wait_for(
            lambda: d.request("POST", HOOK + "hook-a", json={}).status_code == 404,
            5,
            message="paused workflow answered 404",
        )


async def test_ingress_answers_503_once_triggers_stopped(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, anyio.create_task_group() as tg:
        svc.manager.attach(tg)
        await svc.deploy(github_spec("gh-a"), hook_spec("hook-a"))
        await svc.manager.stop_all()
        answers = {
            "hook": await svc.http.post(HOOK + "hook-a", json={}),
            "github": await svc.http.post(INGRESS, content=PUSH, headers=headers_for("push", PUSH)),
            "gateway": await svc.http.post(
                "http://localhost/api/v1/triggers/workflows/hook-a/webhook", json={}
            ),
        }
        for name, answer in answers.items():
            assert answer.status_code == 503, (name, answer.text)
            assert answer.json()["error"] == "unavailable" and answer.headers["retry-after"]
        unknown = await svc.http.post(HOOK + "nope", json={})
        assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")
        assert await svc.events() == []


async def test_a_replaced_or_renamed_trigger_is_never_missing_from_routing(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, anyio.create_task_group() as tg:
        svc.manager.attach(tg)
        await svc.deploy(github_spec("gh-a"), hook_spec("hook-a"))
        misses: list[str] = []
        done = False

        async def probe() -> None:
            # Runs at every point where a reconcile pass yields to the event loop.
            while not done:
                if not svc.manager.routes_webhook("hook-a"):
                    misses.append("hook-a")
                if not svc.manager.shared_triggers("github"):
                    misses.append("gh-a")
                await anyio.lowlevel.checkpoint()

        tg.start_soon(probe)
        for round_ in range(1, 4):  # a changed payload restarts each trigger
            await svc.deploy(github_spec("gh-a", round_), hook_spec("hook-a", round_))
        renamed = [hook_spec("hook-a"), github_spec("gh-a")]
        for document in renamed:
            document["triggers"][0]["id"] = "renamed"
        await svc.deploy(*renamed)
        done = True
        assert {k[1] for k in svc.manager.running} == {"renamed"}
        assert misses == []
        await svc.manager.stop_all()
