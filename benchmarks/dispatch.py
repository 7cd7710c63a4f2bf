"""Dispatch suite: fire → engine-received latency, against a bare aiohttp client (the floor).

Systems (each a child process on core 0; the engine on core 1; runs alternate A B B A):

* ``wfsched``: the real daemon (``wfsched serve``, SQLite store, engine mode, default
  ``scheduler.max_workers``), fired by a load-generating trigger plugin
  (``_dispatch_loadgen``) through the same path every trigger uses: durable group-committed
  record, wake, claim, POST with Idempotency-Key, batched outcome write, a log line per fire
  and per attempt;
* ``aiohttp-floor``: a bare aiohttp loop POSTing the same bodies at the same rate with the
  same number of requests in flight (``_dispatch_floor``): no store, no claims, no logs.

The engine (``_dispatch_engine``, raw ASGI on uvicorn) takes the latency as its arrival
time minus the fire instant in the payload (one host clock). Workloads: open-loop 1, 100
and 1,000 fires/s (p50 and p99), a 10,000-event burst (time until the last arrives), and
1,000 fires/s through the ``cloudevents`` target (a workflow's ``[dispatch]`` table).
Every event fired must arrive exactly once (distinct Idempotency-Keys == fired).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Row, compare, median, percentile

SUITE = "dispatch"
SUT_CORE, ENGINE_CORE = 0, 1
FLOOR = "aiohttp-floor"
MAX_WORKERS = 10  # scheduler.max_workers default: the floor gets the same concurrency


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: int, *cmd: str) -> list[str]:
    """``cmd`` pinned to one core when the machine has two and taskset exists."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *cmd]
    return list(cmd)


def _get(url: str, timeout: float = 2.0, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"dispatch bench: timed out after {timeout:g}s waiting for {what}")


class Bench:
    """One engine and one wfsched daemon, kept for every workload of a run."""

    def __init__(self, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.engine_url = f"http://127.0.0.1:{_port()}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.procs.append(
            subprocess.Popen(
                pinned(
                    ENGINE_CORE,
                    sys.executable,
                    "-m",
                    "benchmarks._dispatch_engine",
                    self.engine_url.rsplit(":", 1)[1],
                ),
                cwd=ROOT,
            )
        )
        _wait(lambda: _get(f"{self.engine_url}/stats/none") is not None, 20, "the engine")
        plugins = workdir / "plugins"
        plugins.mkdir()
        shutil.copy(ROOT / "benchmarks" / "_dispatch_loadgen.py", plugins / "loadgen.py")
        self.port = _port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": f"sqlite:///{workdir / 'wfsched.db'}",
            "WFSCHED_DISPATCH_MODE": "engine",
            "WORKFLOW_ENGINE_URL": self.engine_url,
            # The cloudevents row deploys a [dispatch] url over the API: allowed under this.
            "WFSCHED_DISPATCH_ALLOWED_URLS": self.engine_url,
            "WFSCHED_PLUGINS_DIR": str(plugins),
            "WFSCHED_LOG_FORMAT": "json",
            "SCHEDULER_MAX_WORKERS": str(MAX_WORKERS),
            "PORT": str(self.port),
            **(extra_env or {}),
        }
        self.env.pop("WFSCHED_CONFIG", None)
        log = open(workdir / "daemon.log", "wb")  # noqa: SIM115 - handed to the child
        self.procs.append(
            subprocess.Popen(
                pinned(SUT_CORE, sys.executable, "-m", "wfsched", "serve"),
                cwd=workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        _wait(lambda: _get(f"http://127.0.0.1:{self.port}/health"), 30, "the daemon")
        self.runs = 0

    def stats(self, workflow: str) -> dict[str, Any]:
        return dict(_get(f"{self.engine_url}/stats/{workflow}", timeout=10))

    def _collect(self, workflow: str, count: int, timeout: float) -> dict[str, Any]:
        _wait(lambda: self.stats(workflow)["count"] >= count, timeout, f"{count} at {workflow}")
        return self.stats(workflow)

    def wfsched(
        self, rate: float, count: int, burst: bool, target: str = "engine"
    ) -> dict[str, Any]:
        self.runs += 1
        workflow = f"bench-{self.runs}"
        # Deployed over the management API: the daemon starts the trigger at once, and the
        # trigger's run ends after its last fire (nothing to undeploy).
        spec: dict[str, Any] = {
            "id": workflow,
            "triggers": [{"type": "loadgen", "rate": rate, "count": count, "burst": burst}],
        }
        if target == "cloudevents":
            # The workflow's own [dispatch] table: binary-mode CloudEvents to the sink route.
            spec["dispatch"] = {"mode": "cloudevents", "url": f"{self.engine_url}/ce/{workflow}"}
        cpu = self._daemon_cpu()
        _get(
            f"http://127.0.0.1:{self.port}/api/v1/deployment/workflows/{workflow}/deploy",
            timeout=30,
            body=spec,
        )
        got = self._collect(workflow, count, 60 + count / rate)
        return {**got, "cpu_s": self._daemon_cpu() - cpu}

    def _daemon_cpu(self) -> float:
        """CPU seconds (user + system) the daemon has used so far."""
        fields = Path(f"/proc/{self.procs[1].pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def floor(self, rate: float, count: int, burst: bool) -> dict[str, Any]:
        self.runs += 1
        workflow = f"floor-{self.runs}"
        done = subprocess.run(
            pinned(
                SUT_CORE,
                sys.executable,
                "-m",
                "benchmarks._dispatch_floor",
                self.engine_url,
                workflow,
                str(rate),
                str(count),
                "1" if burst else "0",
                str(MAX_WORKERS),
            ),
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60 + count / rate,
        )
        cpu = json.loads(done.stdout.splitlines()[-1])["cpu_s"]
        return {**self._collect(workflow, count, 10), "cpu_s": cpu}

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _figures(got: dict[str, Any], count: int, burst: bool) -> dict[str, float]:
    latencies_ms = [x * 1000 for x in got["latencies"]]
    if got["distinct"] != count or got["count"] != count:
        sys.stderr.write(
            f"dispatch: fired {count}, engine saw {got['count']} requests with"
            f" {got['distinct']} distinct keys\n"
        )
    cpu_us = got["cpu_s"] / count * 1e6
    if burst:
        return {
            "complete_s": max(latencies_ms) / 1000,
            "distinct": got["distinct"],
            "cpu_us": cpu_us,
        }
    return {
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
        "distinct": got["distinct"],
        "cpu_us": cpu_us,
    }


def run(quick: bool) -> Iterator[Row]:
    """Measure each workload on both systems, alternating (A B, then B A in full runs)."""
    workloads: list[tuple[str, float, int, bool, str]] = [
        ("1 fire/s", 1, 5 if quick else 30, False, "engine"),
        ("100 fires/s", 100, 200 if quick else 2000, False, "engine"),
        ("1000 fires/s", 1000, 1500 if quick else 10000, False, "engine"),
        ("10k burst", 10000, 10000, True, "engine"),
        # The same path with the cloudevents target (ce-* headers, same body).
        ("1000 fires/s cloudevents", 1000, 1500 if quick else 10000, False, "cloudevents"),
    ]
    runs = 1 if quick else 2
    workdir = Path(tempfile.mkdtemp(prefix="wfsched-bench-dispatch-"))
    sys.stderr.write(f"dispatch: load average before {os.getloadavg()[0]:.2f}\n")
    bench = Bench(workdir)
    try:
        for name, rate, count, burst, target in workloads:
            ours: list[dict[str, float]] = []
            floor: list[dict[str, float]] = []
            for i in range(runs):
                order = ("wfsched", FLOOR) if i % 2 == 0 else (FLOOR, "wfsched")
                for system in order:
                    if system == "wfsched":
                        got = bench.wfsched(rate, count, burst, target)
                        ours.append(_figures(got, count, burst))
                    else:
                        floor.append(_figures(bench.floor(rate, count, burst), count, burst))
            metrics = (
                [("burst_complete", "complete_s", "s")]
                if burst
                else [("p50_latency", "p50_ms", "ms"), ("p99_latency", "p99_ms", "ms")]
            )
            if rate >= 1000:
                # CPU per event: steadier than wall time on a shared machine.
                metrics.append(("cpu_per_event", "cpu_us", "us"))
            for metric, key, unit in metrics:
                yield compare(
                    SUITE,
                    name,
                    count,
                    metric,
                    unit,
                    median([r[key] for r in ours]),
                    FLOOR,
                    median([r[key] for r in floor]),
                    higher_is_better=False,
                )
            yield Row(
                SUITE,
                "wfsched",
                name,
                count,
                "delivered_distinct",
                min(r["distinct"] for r in ours),
                "events",
            )
    finally:
        sys.stderr.write(f"dispatch: load average after {os.getloadavg()[0]:.2f}\n")
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
