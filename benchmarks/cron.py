"""Cron suite: wfsched's shared timer against APScheduler 3.11 with the same schedules.

Workloads, each system a child process pinned to core 0, the order alternating per workload:

* ``aligned``: N schedules firing at the same instant (``* * * * *``; ``--quick`` uses a
  10-second interval so it finishes in time), two rounds measured;
* ``spread``: N per-minute schedules, each delayed by a stable hash of its seed into a minute
  (wfsched ``spread = 60``; APScheduler gets the same offsets as whole seconds), one minute;
* ``startup``/``idle``: the real daemon (``wfsched serve`` on a SQLite store holding N cron
  workflows deployed as ``wfsched deploy`` does) from spawn until every timer is armed: first
  start after the deploy, restart, and a start without stored arm records (every spec parsed,
  as for deployments an older version made); then RSS and idle CPU with every next fire hours
  away. APScheduler adds and starts the same number of jobs.

Lateness is taken to the committed event for wfsched and to callback entry for APScheduler.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Row, compare

SUITE = "cron"
APS = "apscheduler-3.11"
CORE = 0


def pinned(*cmd: str) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(CORE), *cmd]
    return list(cmd)


def child(module: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    result = subprocess.run(
        pinned(sys.executable, "-m", module, *args),
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _log(text: str) -> None:
    sys.stderr.write(f"[cron] {text}\n")
    sys.stderr.flush()


# lateness ---------------------------------------------------------------------------------
def lateness_rows(n: int, workload: str, period: int, rounds: int, flip: bool) -> Iterator[Row]:
    args = [
        "lateness",
        "--n",
        str(n),
        "--workload",
        workload,
        "--period",
        str(period),
        "--rounds",
        str(rounds),
    ]
    order = [("apscheduler", "benchmarks._cron_aps"), ("wfsched", "benchmarks._cron_wfsched")]
    if not flip:
        order.reverse()
    got: dict[str, dict[str, Any]] = {}
    for name, module in order:
        _log(f"{name} {workload} n={n}")
        got[name] = child(module, *args)
        _log(json.dumps(got[name]))
    ours, theirs = got["wfsched"], got["apscheduler"]
    name = f"{workload}" if period == 60 else f"{workload}-{period}s"
    for metric in ("p50", "p99", "max"):
        yield compare(
            SUITE,
            name,
            n,
            f"lateness_{metric}",
            "s",
            ours[metric],
            APS,
            theirs[metric],
            higher_is_better=False,
        )
    yield compare(
        SUITE,
        name,
        n,
        "cpu_per_1000_fires",
        "ms",
        ours["cpu_ms_per_1000"],
        APS,
        theirs["cpu_ms_per_1000"],
        higher_is_better=False,
    )
    missed = ours["expected"] - ours["fires"]
    yield Row(
        SUITE,
        "wfsched",
        name,
        n,
        "missed_fires",
        missed,
        "fires",
        APS,
        theirs["expected"] - theirs["fires"],
        None,
    )


# the real daemon: start-up, RSS, idle CPU ---------------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timers(port: int) -> int:
    url = f"http://127.0.0.1:{port}/api/v1/triggers/health"
    with urllib.request.urlopen(url, timeout=2) as resp:
        return int(json.loads(resp.read())["timers"])


def _proc(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def serve(workdir: Path, db: Path, n: int, idle: float) -> dict[str, Any]:
    port = _port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WFSCHED_LOG_FORMAT": "json",
        "WFSCHED_PLUGINS_DIR": str(workdir / "no-plugins"),
        "WFSCHED_DISPATCH_MODE": "log",
    }
    env.pop("WFSCHED_CONFIG", None)
    log = (workdir / "daemon.log").open("ab")
    spawned = time.time()
    proc = subprocess.Popen(
        pinned(sys.executable, "-m", "wfsched", "serve"),
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"wfsched serve exited {proc.returncode}; see {workdir}")
            try:
                if _timers(port) >= n:
                    break
            except OSError:
                pass
            if time.time() - spawned > 300:
                raise RuntimeError("wfsched serve did not arm its timers within 300 s")
            time.sleep(0.01)
        startup = time.time() - spawned
        time.sleep(2)
        rss, cpu = _proc(proc.pid)
        time.sleep(idle)
        rss_after, cpu_after = _proc(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    return {
        "startup_s": startup,
        "rss_mib": max(rss, rss_after),
        "idle_cpu_pct": (cpu_after - cpu) / idle * 100,
    }


def idle_cron() -> str:
    """Hashed daily times in a 4-hour window starting 6 hours from now: idle until then."""
    start = (datetime.now(UTC) + timedelta(hours=6)).hour
    if start > 20:
        start = 0
    return f"H H({start}-{start + 3}) * * *"


def daemon_rows(n: int, idle: float) -> Iterator[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="wfsched-cron-daemon-"))
    try:
        deployed = workdir / "deployed.db"
        _log(f"deploying {n} cron workflows")
        child(
            "benchmarks._cron_wfsched",
            "deploy",
            "--n",
            str(n),
            "--db",
            str(deployed),
            "--cron",
            idle_cron(),
            timeout=1800,
        )
        db = workdir / "wfsched.db"
        shutil.copy(deployed, db)
        _log(f"wfsched serve, first start n={n}")
        first = serve(workdir, db, n, 1.0)
        _log(json.dumps(first))
        _log(f"wfsched serve, restart n={n}")
        warm = serve(workdir, db, n, idle)
        _log(json.dumps(warm))
        # Deployments without arm records (made by an older version): every spec is parsed.
        with sqlite3.connect(deployed) as conn:
            conn.execute("UPDATE trigger_state SET cursor = NULL")
        _log(f"wfsched serve, start without arm records n={n}")
        parsed = serve(workdir, deployed, n, 1.0)
        _log(json.dumps(parsed))
        _log(f"apscheduler add + start n={n}")
        theirs = child(
            "benchmarks._cron_aps",
            "idle",
            "--n",
            str(n),
            "--seconds",
            str(idle),
            "--spawned",
            repr(time.time()),
        )
        _log(json.dumps(theirs))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for workload, got in (
        ("startup-restart", warm),
        ("startup-first", first),
        ("startup-unarmed", parsed),
    ):
        yield compare(
            SUITE,
            workload,
            n,
            "startup",
            "s",
            got["startup_s"],
            APS,
            theirs["startup_s"],
            higher_is_better=False,
        )
    for workload, got in (("idle", warm), ("startup-unarmed", parsed)):
        yield compare(
            SUITE,
            workload,
            n,
            "rss",
            "MiB",
            got["rss_mib"],
            APS,
            theirs["rss_mib"],
            higher_is_better=False,
        )
    yield compare(
        SUITE,
        "idle",
        n,
        "idle_cpu",
        "%",
        warm["idle_cpu_pct"],
        APS,
        theirs["idle_cpu_pct"],
        higher_is_better=False,
    )


def run(quick: bool) -> Iterator[Row]:
    """Yield the suite's rows; ``quick``: N = 10k, a 10 s aligned interval, short idle."""
    if quick:
        yield from lateness_rows(10_000, "aligned", 10, 2, flip=False)
        yield from daemon_rows(10_000, idle=5.0)
        return
    flip = False
    for n in (10_000, 100_000):
        for workload in ("aligned", "spread"):
            rounds = 2 if workload == "aligned" else 1
            yield from lateness_rows(n, workload, 60, rounds, flip)
            flip = not flip
        yield from daemon_rows(n, idle=60.0)
