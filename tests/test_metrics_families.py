"""The hot-path metric families export exactly what prometheus_client's own would."""

from __future__ import annotations

import re
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from wfsched.metrics import Spreads, Tallies

BUCKETS = (0.001, 0.01, 0.1, 1, 10)


def _text(registry: CollectorRegistry) -> str:
    # Creation times differ by when each series was made; everything else must match.
    return re.sub(r"_created(\{[^}]*\})? \S+", r"_created\1 T", generate_latest(registry).decode())


def test_tallies_and_spreads_render_as_prometheus_counters_and_histograms() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tallies("x_events", "Events by kind", ["kind", "status"], ours)
    counter = Counter("x_events", "Events by kind", ["kind", "status"], registry=theirs)
    spread = Spreads("x_seconds", "A duration", ["mode"], ours, buckets=BUCKETS)
    histogram = Histogram("x_seconds", "A duration", ["mode"], buckets=BUCKETS, registry=theirs)
    for metric in (tally, counter):
        metric.labels("cron", "recorded").inc(3)
        metric.labels("cron", "recorded").inc()
        metric.labels("webhook", "duplicate").inc(0.5)
    for value in (0.0, 0.001, 0.0011, 0.5, 1, 10, 11, 1e9):
        spread.labels("log").observe(value)
        histogram.labels("log").observe(value)
    spread.labels("engine")
    histogram.labels("engine")
    assert _text(ours) == _text(theirs)
    assert ours.get_sample_value("x_seconds_count", {"mode": "log"}) == 8
    assert ours.get_sample_value("x_events_total", {"kind": "cron", "status": "recorded"}) == 4


def test_a_tally_counts_every_increment_from_many_threads() -> None:
    family = Tallies("y_events", "Events", ["kind"], CollectorRegistry())
    child = family.labels("a")

    def count() -> None:
        for _ in range(20_000):
            child.inc()

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert child.value == 80_000


def test_a_tally_refuses_a_negative_increment() -> None:
    child = Tallies("z_events", "Events", ["kind"], CollectorRegistry()).labels("a")
    with pytest.raises(ValueError, match="non-negative"):
        child.inc(-1)
    assert child.value == 0
