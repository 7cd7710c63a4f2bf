"""The ingress suite's rows: every figure against its baseline, ratios > 1 meaning better."""

from __future__ import annotations

from benchmarks.ingress import _rows


def run(rps: float, cpu: float, p99: float) -> list[dict[str, float]]:
    return [{"rps": rps, "cpu_us": cpu, "rate_p99_ms": p99, "achieved_rps": rps / 2}]


def test_wfsched_is_reported_against_the_ceiling_and_its_stores_durable_floor() -> None:
    results = {
        "floor": run(60.0, 16.0, 3.0),
        "floor-pg": run(40.0, 25.0, 4.0),
        "bare": run(100.0, 10.0, 1.0),
        "sqlite": run(30.0, 32.0, 9.0),
        "postgres": run(20.0, 50.0, 20.0),
    }
    rates = {"sqlite": 30, "postgres": 20}
    rows = {(r.system, r.workload, r.metric, r.baseline): r.ratio for r in _rows(results, rates)}
    assert rows["durable-floor", "hmac-sqlite", "max_rps", "bare-starlette"] == 0.6
    assert rows["durable-floor", "hmac-sqlite", "cpu_per_request", "bare-starlette"] == 0.625
    assert rows["durable-floor-pg", "hmac-pg", "cpu_per_request", "bare-starlette"] == 0.4
    assert rows["wfsched", "hmac-webhook-sqlite", "max_rps", "bare-starlette"] == 0.3
    assert rows["wfsched", "hmac-webhook-sqlite", "max_rps", "durable-floor"] == 0.5
    assert rows["wfsched", "hmac-webhook-sqlite", "cpu_per_request", "durable-floor"] == 0.5
    assert rows["wfsched", "hmac-webhook-postgres", "cpu_per_request", "durable-floor-pg"] == 0.5
    # p99 at half the floor's maximum rate, against the floor at the same rate.
    assert rows[
        "wfsched", "hmac-webhook-sqlite-paced-30rps", "p99_latency", "durable-floor"
    ] == round(3 / 9, 3)
    assert (
        rows["wfsched", "hmac-webhook-postgres-paced-20rps", "p99_latency", "durable-floor-pg"]
        == 0.2
    )
    assert ("wfsched", "hmac-webhook-postgres", "max_rps", "durable-floor") not in rows
