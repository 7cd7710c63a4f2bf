"""The ``ledger`` suite: what the occurrence ledger costs, and how fast ``explain`` answers.

* webhook: CPU per HMAC webhook request (SQLite, wrk at full speed) of ``wfsched serve``
  with the ledger on and with ``WFSCHED_LEDGER=off``, alternating runs in one session;
* cron: process CPU per 1,000 timer fires (1,000 triggers every second, real SQLite store),
  ledger on and off, alternating;
* explain: wall time of ``explain`` over 24 h of a per-minute trigger (1,440 instants).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import _ingress_servers as srv
from benchmarks.harness import Row, child, compare, median
from benchmarks.ingress import BODY, _lua, wrk

SUITE = "ledger"


def _webhook(workdir: Path, ledger: str, seconds: float, i: int) -> dict[str, Any]:
    folder = workdir / f"{ledger}-{i}"
    folder.mkdir()
    server = srv.start_wfsched(
        folder, f"sqlite:///{folder}/wfsched.db", f"ledger-{ledger}", {"WFSCHED_LEDGER": ledger}
    )
    try:
        lua = _lua(workdir)
        wrk(server.port, 1.0, lua)
        cpu = srv.cpu_seconds(server.proc.pid)
        done = wrk(server.port, seconds, lua)
        cpu = srv.cpu_seconds(server.proc.pid) - cpu
        return {"cpu_us": cpu / max(done["requests"], 1) * 1e6, "rps": done["rps"]}
    finally:
        server.stop()


def run(quick: bool) -> Iterator[Row]:
    runs, seconds = (2, 3.0) if quick else (4, 8.0)
    if shutil.which("wrk") is not None:
        with tempfile.TemporaryDirectory(prefix="wfsched-ledger-") as tmp:
            workdir = Path(tmp)
            (workdir / "body.json").write_bytes(BODY)
            got: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
            for i in range(runs):
                for ledger in ("on", "off") if i % 2 == 0 else ("off", "on"):
                    got[ledger].append(_webhook(workdir, ledger, seconds, i))
        yield compare(
            SUITE,
            "hmac-webhook-sqlite",
            runs,
            "cpu_per_request",
            "us",
            median([r["cpu_us"] for r in got["on"]]),
            "wfsched-ledger-off",
            median([r["cpu_us"] for r in got["off"]]),
            higher_is_better=False,
        )
    cron: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for i in range(runs):
        for ledger in ("on", "off") if i % 2 == 0 else ("off", "on"):
            cron[ledger].append(
                child(
                    ["-m", "benchmarks._ledger_child", "cron", "--seconds", str(seconds * 2)],
                    env={"WFSCHED_LEDGER": ledger},
                )
            )
    yield compare(
        SUITE,
        "cron-1000-every-1s",
        runs,
        "cpu_per_1000_fires",
        "ms",
        median([r["cpu_ms_per_1000"] for r in cron["on"]]),
        "wfsched-ledger-off",
        median([r["cpu_ms_per_1000"] for r in cron["off"]]),
        higher_is_better=False,
    )
    answer = child(["-m", "benchmarks._ledger_child", "explain", "--repeats", "7"])
    yield Row(
        SUITE,
        "wfsched",
        "explain-24h-per-minute-sqlite",
        int(answer["occurrences"]),
        "latency",
        round(answer["median_ms"], 1),
        "ms",
    )
