"""The benchmark harness shared by every suite.

A suite is a module ``benchmarks/<name>.py`` with ``def run(quick: bool) -> Iterator[Row]``.
Each system under test runs as a child process (``child``), systems alternate within one run
(``alternate``), and every figure is one JSON line on stdout with its baseline and ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One measured figure. ``ratio > 1`` means wfsched is better than the baseline."""

    suite: str
    system: str
    workload: str
    n: int
    metric: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None


def compare(
    suite: str,
    workload: str,
    n: int,
    metric: str,
    unit: str,
    ours: float,
    baseline: str,
    theirs: float,
    *,
    higher_is_better: bool,
    system: str = "wfsched",
) -> Row:
    """Build a row of ``system`` against a baseline, the ratio oriented so > 1 is better."""
    if higher_is_better:
        ratio = ours / theirs if theirs else None
    else:
        ratio = theirs / ours if ours else None
    return Row(
        suite,
        system,
        workload,
        n,
        metric,
        round(ours, 6),
        unit,
        baseline,
        round(theirs, 6),
        round(ratio, 3) if ratio is not None else None,
    )


def percentile(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def child(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Run ``python ARGS`` as a child process; it prints one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    return dict(json.loads(lines[-1]))


def alternate(
    runs: int, systems: dict[str, Callable[[], dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Run each system ``runs`` times, interleaved (A B A B …), and collect their results."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for _ in range(runs):
        for name, fn in systems.items():
            results[name].append(fn())
    return results


def emit(rows: Iterator[Row]) -> list[Row]:
    """Print rows as JSON lines on stdout (flushed one by one) and return them."""
    done = []
    for row in rows:
        sys.stdout.write(json.dumps(asdict(row)) + "\n")
        sys.stdout.flush()
        done.append(row)
    return done


def table(rows: Sequence[Row]) -> str:
    """A human-readable table of rows (for stderr)."""
    head = f"{'suite':<9} {'workload':<28} {'n':>7} {'metric':<22} {'wfsched':>12} {'baseline':>22} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        base = f"{r.baseline_value:g} ({r.baseline})" if r.baseline else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(
            f"{r.suite:<9} {r.workload:<28} {r.n:>7} {r.metric:<22} "
            f"{r.value:>10g}{r.unit[:2]:>2} {base:>22} {ratio:>7}"
        )
    return "\n".join(lines)


def now() -> float:
    return time.perf_counter()
