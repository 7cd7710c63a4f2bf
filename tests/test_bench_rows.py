"""The ingress suite's rows: every figure against its baseline, ratios > 1 meaning better."""

from __future__ import annotations

from benchmarks.ingress import _rows


def run(rps: float, cpu: float, p99: float) -> list[dict[str, float]]:
    return [{"rps": rps, "cpu_us": cpu, "rate_p99_ms": p99, "achieved_rps": rps / 2}]


def test_wfsched_is_reported_against_the_ceiling_and_on_sqlite_against_the_floor() -> None:
    results = {
        "bare": run(100.0, 10.0, 1.0),
        "floor": run(60.0, 16.0, 3.0),
        "sqlite": run(30.0, 32.0, 9.0),
        "postgres": run(20.0, 50.0, 20.0),
    }
    rows = {(r.system, r.workload, r.metric, r.baseline): r.ratio for r in _rows(results, 50)}
    assert rows["durable-floor", "hmac-sqlite", "max_rps", "bare-starlette"] == 0.6
    assert rows["durable-floor", "hmac-sqlite", "cpu_per_request", "bare-starlette"] == 0.625
    assert rows["wfsched", "hmac-webhook-sqlite", "max_rps", "bare-starlette"] == 0.3
    assert rows["wfsched", "hmac-webhook-sqlite", "max_rps", "durable-floor"] == 0.5
    assert rows["wfsched", "hmac-webhook-sqlite", "cpu_per_request", "durable-floor"] == 0.5
    assert (
        rows["wfsched", "hmac-webhook-postgres-paced-50rps", "p99_latency", "bare-starlette"]
        == 0.05
    )
    assert ("wfsched", "hmac-webhook-postgres", "max_rps", "durable-floor") not in rows
