"""The ingress suite's rows: every figure against its baseline, ratios > 1 meaning better."""

from __future__ import annotations

from benchmarks.ingress import _rows, wrk_report


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


def test_a_wrk_report_is_read_whatever_the_latency_unit() -> None:
    # wrk pads a latency in seconds with a trailing space ("1.02s "); such a report was refused.
    report = """Running 5s test @ http://127.0.0.1:1/x
  1 threads and 64 connections
  Latency Distribution
     50%  367.96ms
     75%  427.19ms
     90%  516.79ms
     99%    1.02s 
  753 requests in 5.06s, 160.31KB read
Requests/sec:    148.94
"""
    got = wrk_report(report)
    assert got["p50_ms"] == 367.96 and got["p99_ms"] == 1020.0
    assert (got["requests"], got["rps"], got["non_2xx"]) == (753.0, 148.94, 0.0)
