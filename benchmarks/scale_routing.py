"""Scale suite, routing rows: what a request costs with many workflows deployed (issue #18).

Workloads (registered in :mod:`benchmarks.scale` beside the retention ones):

* ``webhook_fleet``: ``wfsched serve`` (SQLite, sync FULL, pinned to the server core) with the
  ingress suite's HMAC webhook workflow plus N-1 other webhook workflows; ``wrk`` posts to the
  first. Figures per N: req/s and CPU µs per request (ratio against N = 1), RSS per deployed
  workflow (RSS growth over N = 1, divided by the extra workflows), start-up time (process
  start to the webhook answering) and ``wfsched deploy`` time for the N spec files.
* ``github_fleet``: signed GitHub push deliveries (a fresh ``X-GitHub-Delivery`` per request,
  so each records an event) to a repository one github workflow listens on, with that
  workflow alone deployed and with M others spread over R other repositories. Figure: req/s
  (ratio against the single workflow).
* ``mixed_startup``: N workflows, a quarter each cron, webhook, manual and github (over 1k
  repositories); figures: ``wfsched deploy`` time, start-up time (process start to ``/health``
  answering 200, which it does once every trigger is started) and RSS per workflow once ready
  (over the daemon with one workflow).

Each fleet is deployed once; then every fleet of a workload is served in turn, A B C, C B A,
… (five sessions each, ``--quick`` one), each session a fresh ``wfsched serve`` warmed up by
2 s of load before the measured 10 s (``--quick``: 1 s, 2 s); the figures are the sessions'
medians. One 10 s run per fleet moved ±5-10 % between runs, as much as a 0.9x target allows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks import _ingress_servers as srv
from benchmarks.harness import Row, compare
from benchmarks.ingress import BODY, _lua, _order, wrk
from wfsched.triggers.webhook.auth import sign_hmac_sha256_hex

SUITE = "scale"
GITHUB_SECRET = "bench-github-secret"
GITHUB_REPO = "bench/target"
_BENCH_HOOK = {
    "id": srv.WORKFLOW,
    "triggers": [{"type": "webhook", "auth": {"type": "hmac", "secret": "env:BENCH_SECRET"}}],
}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _write_specs(folder: Path, documents: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for document in documents:
        (folder / f"{document['id']}.json").write_text(json.dumps(document))


def _deploy(workdir: Path, env: dict[str, str], folder: Path) -> float:
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "wfsched", "deploy", str(folder)],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return time.perf_counter() - began


def _serve(workdir: Path, env: dict[str, str], *, health: bool = False) -> tuple[srv.Server, float]:
    """Start ``wfsched serve``; return it and the seconds until the bench webhook answered
    (401 to an unsigned POST: its trigger runs), or with ``health`` until ``/health``
    answered 200 (the daemon serves HTTP once its triggers are started)."""
    import urllib.error
    import urllib.request

    log = workdir / "serve.log"
    began = time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            srv.pinned(srv.SERVER_CORE, sys.executable, "-m", "wfsched", "serve"),
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{env['PORT']}{'/health' if health else srv.PATH}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"wfsched exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if health:
                urllib.request.urlopen(url, timeout=5).close()
                took = time.perf_counter() - began
                return srv.Server("wfsched", proc, int(env["PORT"]), workdir), took
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=5)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                took = time.perf_counter() - began
                return srv.Server("wfsched", proc, int(env["PORT"]), workdir), took
        except OSError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"wfsched not ready:\n{log.read_text()[-3000:]}")


def _loaded(server: srv.Server, seconds: float, lua: Path, path: str) -> dict[str, float]:
    """wrk against ``path``: its figures plus the server's CPU µs per request."""
    cpu = srv.cpu_seconds(server.proc.pid)
    figures = wrk_at(server.port, seconds, lua, path)
    used = srv.cpu_seconds(server.proc.pid) - cpu
    figures["cpu_us"] = used / max(figures["requests"], 1.0) * 1e6
    return figures


def wrk_at(port: int, seconds: float, lua: Path, path: str) -> dict[str, float]:
    saved = srv.PATH
    srv.PATH = path  # wrk() posts to srv.PATH
    try:
        return wrk(port, seconds, lua)
    finally:
        srv.PATH = saved


@dataclass(frozen=True)
class _Fleet:
    """A store with its workflows deployed, ready for ``wfsched serve`` sessions."""

    workdir: Path
    env: dict[str, str]
    deploy_s: float

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        return sorted(folder.glob("wfsched.db*"))

    def keep(self) -> None:
        """Keep the store as deployed (the database and its WAL files)."""
        (self.workdir / "deployed").mkdir()
        for path in self._files(self.workdir):
            shutil.copy2(path, self.workdir / "deployed" / path.name)

    def restore(self) -> None:
        """Back to the store as deployed: each session starts without the events of the
        sessions before it."""
        for path in self._files(self.workdir):
            path.unlink()
        for path in self._files(self.workdir / "deployed"):
            shutil.copy2(path, self.workdir / path.name)


def _fleet(root: Path, name: str, documents: list[dict[str, Any]]) -> _Fleet:
    workdir = root / name
    workdir.mkdir()
    env = srv.wfsched_env(f"sqlite:///{workdir}/wfsched.db", srv.free_port(), workdir)
    env["GITHUB_WEBHOOK_SECRET"] = GITHUB_SECRET
    _write_specs(workdir / "specs", documents)
    fleet = _Fleet(workdir, env, _deploy(workdir, env, workdir / "specs"))
    fleet.keep()
    return fleet


Measure = Callable[[srv.Server], dict[str, float]]


def _sessions(
    fleets: dict[str, _Fleet], runs: int, measure: Measure
) -> dict[str, dict[str, float]]:
    """Serve every fleet ``runs`` times, alternating A B C, C B A (drift over the whole run
    cancels out), each time from its store as deployed; each session's figures are
    ``measure``'s plus ``startup_s``. Return each fleet's medians."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in fleets}
    for i in range(runs):
        for name in _order(list(fleets), i):
            fleet = fleets[name]
            fleet.restore()
            server, startup_s = _serve(fleet.workdir, fleet.env)
            try:
                results[name].append({**measure(server), "startup_s": startup_s})
            finally:
                server.stop()
    return {
        name: {key: median(r[key] for r in got) for key in got[0]} for name, got in results.items()
    }


def _runs(quick: bool) -> tuple[int, float, float]:
    """Sessions per fleet, measured seconds and warm-up seconds per session."""
    return (1, 2.0, 1.0) if quick else (5, 10.0, 2.0)


def _load(lua: Callable[[Path], Path], path: str, quick: bool) -> Measure:
    """A session: its RSS once ready, a warm-up, then the measured load on ``path``."""
    _, seconds, warm = _runs(quick)

    def measure(server: srv.Server) -> dict[str, float]:
        rss = _rss_kib(server.proc.pid)
        script = lua(server.workdir)
        wrk_at(server.port, warm, script, path)
        return {**_loaded(server, seconds, script, path), "rss_kib": rss}

    return measure


def _webhooks(n: int) -> list[dict[str, Any]]:
    """The bench webhook workflow and n - 1 others."""
    others = [{"id": f"fleet-{i}", "triggers": [{"type": "webhook"}]} for i in range(n - 1)]
    return [_BENCH_HOOK, *others]


def webhook_fleets(quick: bool) -> dict[int, dict[str, float]]:
    """The medians of each fleet size's sessions (N = 1 first: every ratio's baseline)."""
    sizes = (1, 2_000) if quick else (1, 10_000, 100_000)
    with tempfile.TemporaryDirectory(prefix="wfsched-bench-fleet-") as tmp:
        fleets = {str(n): _fleet(Path(tmp), f"n{n}", _webhooks(n)) for n in sizes}
        got = _sessions(fleets, _runs(quick)[0], _load(_lua, srv.PATH, quick))
        return {n: {**got[str(n)], "deploy_s": fleets[str(n)].deploy_s} for n in sizes}


def webhook_fleet(runs: dict[int, dict[str, float]]) -> Iterator[Row]:
    """The rows of ``webhook_fleets``' medians."""
    one = runs[1]
    for n, got in runs.items():
        if n == 1:
            continue
        workload = f"webhook, {n} webhook workflows"
        yield compare(
            SUITE, workload, n, "requests_per_s", "req/s", got["rps"], "1 deployed", one["rps"],
            higher_is_better=True,
        )  # fmt: skip
        yield compare(
            SUITE, workload, n, "cpu_per_request", "us", got["cpu_us"], "1 deployed",
            one["cpu_us"], higher_is_better=False,
        )  # fmt: skip
        per = (got["rss_kib"] - one["rss_kib"]) * 1024 / (n - 1)
        yield Row(SUITE, "wfsched", workload, n, "rss_per_workflow", round(per), "B")
        yield Row(SUITE, "wfsched", workload, n, "deploy_time", round(got["deploy_s"], 2), "s")
        yield Row(SUITE, "wfsched", workload, n, "startup_time", round(got["startup_s"], 2), "s")


def _github_lua(workdir: Path) -> Path:
    """POST a signed push to GITHUB_REPO, each request with a fresh delivery id."""
    body = _push_body()
    escaped = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    signature = sign_hmac_sha256_hex(GITHUB_SECRET, body)
    script = f"""
wrk.method = "POST"
wrk.body = "{escaped}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = "{signature}"
local n = 0
local tag = tostring(math.random(1, 1e9))
function request()
  n = n + 1
  wrk.headers["X-GitHub-Delivery"] = tag .. "-" .. n
  return wrk.format()
end
"""
    path = workdir / "github.lua"
    path.write_text(script)
    return path


def _push_body() -> bytes:
    return json.dumps(
        {
            "ref": "refs/heads/main",
            "repository": {"full_name": GITHUB_REPO},
            "installation": {"id": 1},
            "sender": {"login": "octocat"},
            "commits": [{"added": ["README.md"], "author": {"username": "octocat"}}],
            "pad": BODY.decode(),
        },
        separators=(",", ":"),
    ).encode()


def _wait_github(port: int, path: str) -> None:
    import urllib.request

    body = _push_body()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "warm-up",
        "X-Hub-Signature-256": sign_hmac_sha256_hex(GITHUB_SECRET, body),
    }
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=body, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                if json.loads(answer.read())["matched"]:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the github ingress never matched the target workflow")


def github_fleet(quick: bool) -> Iterator[Row]:
    """A delivery to one github workflow's repository, alone and beside many others."""
    others, repositories = (1_000, 100) if quick else (10_000, 1_000)
    target = [
        _BENCH_HOOK,  # (what ``_serve`` waits for)
        {"id": "target", "triggers": [{"type": "github", "repository": GITHUB_REPO}]},
    ]
    crowd = [
        {"id": f"gh-{i}", "triggers": [{"type": "github", "repository": f"org/repo-{i % repositories}"}]}
        for i in range(others)
    ]  # fmt: skip
    path = "/api/v1/public/webhooks/github"
    load = _load(_github_lua, path, quick)

    def measure(server: srv.Server) -> dict[str, float]:
        _wait_github(server.port, path)  # the first delivery waits for the triggers to settle
        return load(server)

    with tempfile.TemporaryDirectory(prefix="wfsched-bench-github-") as tmp:
        fleets = {
            "one": _fleet(Path(tmp), "one", target),
            "many": _fleet(Path(tmp), "many", target + crowd),
        }
        got = _sessions(fleets, _runs(quick)[0], measure)
    one, many = got["one"], got["many"]
    workload = f"github, {others} workflows over {repositories} repos"
    yield compare(
        SUITE, workload, others, "requests_per_s", "req/s", many["rps"], "1 deployed", one["rps"],
        higher_is_better=True,
    )  # fmt: skip
    yield compare(
        SUITE, workload, others, "cpu_per_request", "us", many["cpu_us"], "1 deployed",
        one["cpu_us"], higher_is_better=False,
    )  # fmt: skip


def _mixed(i: int) -> dict[str, Any]:
    kind = i % 4
    if kind == 0:
        trigger: dict[str, Any] = {"type": "cron", "cron": "H * * * *"}
    elif kind == 1:
        trigger = {"type": "webhook"}
    elif kind == 2:
        trigger = {"type": "manual"}
    else:
        trigger = {"type": "github", "repository": f"org/repo-{i % 1000}"}
    return {"id": f"mixed-{i:06d}", "triggers": [trigger]}


def mixed_startup(quick: bool, one_rss_kib: float) -> Iterator[Row]:
    """``one_rss_kib``: the RSS of a daemon with one workflow deployed (the baseline)."""
    n = 1_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="wfsched-bench-mixed-") as tmp:
        fleet = _fleet(Path(tmp), "mixed", [_mixed(i) for i in range(n)])
        server, startup_s = _serve(fleet.workdir, fleet.env, health=True)
        try:
            rss = _rss_kib(server.proc.pid)
        finally:
            server.stop()
    workload = f"start-up, {n} mixed workflows (cron, webhook, manual, github)"
    yield Row(SUITE, "wfsched", workload, n, "deploy_time", round(fleet.deploy_s, 2), "s")
    yield Row(SUITE, "wfsched", workload, n, "startup_time", round(startup_s, 2), "s")
    per = (rss - one_rss_kib) * 1024 / (n - 1)
    yield Row(SUITE, "wfsched", workload, n, "rss_per_workflow", round(per), "B")


def run(quick: bool) -> Iterator[Row]:
    """Every routing row (for :func:`benchmarks.scale.run`)."""
    fleets = webhook_fleets(quick)
    yield from webhook_fleet(fleets)
    yield from github_fleet(quick)
    yield from mixed_startup(quick, fleets[1]["rss_kib"])


if __name__ == "__main__":  # python -m benchmarks.scale_routing [--quick]: these rows alone
    from benchmarks.harness import emit, table

    sys.stderr.write(table(emit(run("--quick" in sys.argv))) + "\n")
