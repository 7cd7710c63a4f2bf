"""Systems under test of the ingress suite, each a child process pinned to the server core.

``bare``: uvicorn serving benchmarks._ingress_bare (the ceiling). ``floor``: uvicorn serving
benchmarks._ingress_floor (the minimal equivalent of wfsched's work). ``wfsched``: ``wfsched
serve`` with one HMAC webhook on a fresh SQLite file or a fresh PostgreSQL schema. All use
uvicorn with httptools on uvloop, one worker, no access log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT

SERVER_CORE = "0"
LOAD_CORE = "1"
WORKFLOW = "bench"
PATH = f"/api/v1/public/webhook/workflow/{WORKFLOW}"
SECRET = "bench-hmac-secret-0123456789abcdef"
PG_DSN = os.environ.get("WFSCHED_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(core: str, *args: str) -> list[str]:
    return ["taskset", "-c", core, *args]


@dataclass
class Server:
    """A running system under test."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    store_url: str = ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no drain, no flush."""
        self.proc.kill()
        self.proc.wait()


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, log: Path, check: Any = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if check is None or check(json.loads(answer.read())):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def _start_uvicorn(
    workdir: Path, name: str, target: str, env: dict[str, str], *extra: str
) -> Server:
    port = free_port()
    log = workdir / f"{name}.log"
    cmd = pinned(
        SERVER_CORE,
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        *extra,
    )
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return Server(name, proc, port, workdir)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} server did not start:\n{log.read_text()}")


def start_bare(workdir: Path) -> Server:
    return _start_uvicorn(workdir, "bare", "benchmarks._ingress_bare:app", {})


def start_floor(workdir: Path) -> Server:
    """The durable floor (benchmarks._ingress_floor) on a fresh SQLite file in ``workdir``."""
    env = {"BENCH_SECRET": SECRET, "FLOOR_DIR": str(workdir)}
    # --lifespan on: a store that cannot open stops the server instead of hanging requests.
    return _start_uvicorn(
        workdir, "floor", "benchmarks._ingress_floor:app", env, "--lifespan", "on"
    )


def start_floor_pg(workdir: Path, store_url: str) -> Server:
    """The PostgreSQL durable floor (benchmarks._ingress_floor_pg) on a fresh schema."""
    env = {"BENCH_SECRET": SECRET, "FLOOR_PG_URL": store_url}
    server = _start_uvicorn(
        workdir, "floor-pg", "benchmarks._ingress_floor_pg:app", env, "--lifespan", "on"
    )
    server.store_url = store_url
    return server


@contextlib.contextmanager
def pg_schema() -> Iterator[str | None]:
    """A fresh PostgreSQL schema's URL (None when PostgreSQL is unreachable); dropped after."""
    try:
        import psycopg

        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        sys.stderr.write(f"ingress: PostgreSQL unavailable, skipped ({exc})\n")
        yield None
        return
    schema = f"bench_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def wfsched_env(store_url: str, port: int, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WFSCHED_CONFIG"}
    # The log level matches the bare app's --log-level warning: per-request info lines are
    # the equivalent of the access log both runs switch off.
    env.update(
        {
            "DATABASE_URL": store_url,
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "WFSCHED_PLUGINS_DIR": str(workdir / "plugins"),
            "BENCH_SECRET": SECRET,
            "WFSCHED_LOG_LEVEL": "warning",
        }
    )
    return env


def start_wfsched(
    workdir: Path, store_url: str, name: str, extra_env: dict[str, str] | None = None
) -> Server:
    port = free_port()
    env = wfsched_env(store_url, port, workdir) | (extra_env or {})
    spec = workdir / "specs"
    spec.mkdir(exist_ok=True)
    (spec / "bench.json").write_text(
        json.dumps(
            {
                "id": WORKFLOW,
                "triggers": [
                    {"type": "webhook", "auth": {"type": "hmac", "secret": "env:BENCH_SECRET"}}
                ],
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "wfsched", "deploy", str(spec)],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = workdir / f"{name}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            pinned(SERVER_CORE, sys.executable, "-m", "wfsched", "serve"),
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    _wait_ready(
        proc,
        f"http://127.0.0.1:{port}/api/v1/public/webhooks/status",
        log,
        check=lambda body: bool(body["webhooks"]),
    )
    return Server(name, proc, port, workdir, store_url)


def stored_ids(store_url: str, workflow_id: str = WORKFLOW) -> set[str]:
    """Execution ids recorded for the workflow, read from the store directly."""
    if store_url.startswith("sqlite:"):
        import sqlite3

        path = store_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute(
                "SELECT execution_id FROM events WHERE workflow_id=?", (workflow_id,)
            ).fetchall()
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT execution_id FROM wfsched_events WHERE workflow_id=%s", (workflow_id,)
            ).fetchall()
    return {r[0] for r in rows}
