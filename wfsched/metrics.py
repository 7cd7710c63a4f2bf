"""Prometheus metrics, one registry per process (the names the README's metrics list gives).

The series counted on every request, fire and dispatch are :class:`Tallies` and
:class:`Spreads`: a child's ``inc`` or ``observe`` is one Python call under a lock, where
``prometheus_client``'s takes four to six (callgrind: about 30,000 instructions per webhook
request, a twentieth of its whole cost). They are exported through the same registry, with the
same names, samples (``_total``, ``_created``, ``_bucket``, ``_count``, ``_sum``) and labels as
``prometheus_client``'s Counter and Histogram. The rarely moved ones stay ``prometheus_client``'s.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric

REGISTRY = CollectorRegistry(auto_describe=True)
S = TypeVar("S")


class Tally:
    """One counter series."""

    __slots__ = ("_lock", "created", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        with self._lock:
            self.value += amount


class Spread:
    """One histogram series: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_bounds", "_lock", "buckets", "created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._lock = threading.Lock()
        self._bounds = bounds
        self.buckets = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def snapshot(self) -> tuple[list[int], float]:
        """The bucket counts and the sum, read together."""
        with self._lock:
            return list(self.buckets), self.sum

    def observe(self, amount: float, times: int = 1) -> None:
        """Count ``amount`` (``times`` times: a batch of equal values in one call)."""
        at = bisect_left(self._bounds, amount)  # the first bucket whose ``le`` holds it
        with self._lock:
            self.buckets[at] += times
            self.sum += amount * times


class _Family(Generic[S]):
    """Series made by ``new``, by label values, exported through ``registry`` (``labels`` as
    prometheus')."""

    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        new: Callable[[], S],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._new = new
        self._children: dict[tuple[str, ...], S] = {}
        self._lock = threading.Lock()
        registry.register(self)  # type: ignore[arg-type]

    def labels(self, *values: str) -> S:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes {len(self.labelnames)} label values")
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, self._new())
        return child

    def _series(self) -> list[tuple[dict[str, str], S]]:
        with self._lock:
            items = list(self._children.items())
        return [(dict(zip(self.labelnames, key, strict=True)), child) for key, child in items]

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, self.kind)


class Tallies(_Family[Tally]):
    """A counter (``prometheus_client.Counter`` with labels) of :class:`Tally` series."""

    kind = "counter"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labelnames, registry, Tally)

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        for labels, child in self._series():
            metric.add_sample(f"{self.name}_total", labels, child.value)
            metric.add_sample(f"{self.name}_created", labels, child.created)
        yield metric


class Spreads(_Family[Spread]):
    """A histogram (``prometheus_client.Histogram`` with labels) of :class:`Spread` series."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = (*sorted(float(b) for b in buckets), float("inf"))
        # Each bound as prometheus writes it: ``0.005``, ``1.0``, ``+Inf``.
        self._les = [repr(b) for b in self.bounds[:-1]] + ["+Inf"]
        super().__init__(name, documentation, labelnames, registry, self._spread)

    def _spread(self) -> Spread:
        return Spread(self.bounds)

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        for labels, child in self._series():
            counts, total = child.snapshot()
            running = 0
            for le, count in zip(self._les, counts, strict=True):
                running += count
                metric.add_sample(f"{self.name}_bucket", {**labels, "le": le}, running)
            metric.add_sample(f"{self.name}_count", labels, running)
            metric.add_sample(f"{self.name}_sum", labels, total)
            metric.add_sample(f"{self.name}_created", labels, child.created)
        yield metric


TRIGGER_EVENTS = Tallies(
    "wfsched_trigger_events",
    "Trigger events by type and status (recorded, duplicate, dispatched, failed, retried)",
    ["trigger_type", "status"],
    REGISTRY,
)
DISPATCH_DURATION = Spreads(
    "wfsched_dispatch_duration_seconds",
    "Time of one dispatch attempt",
    ["mode", "outcome"],
    REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DISPATCH_ATTEMPTS = Tallies(
    "wfsched_dispatch_attempts", "Dispatch attempts by outcome", ["mode", "outcome"], REGISTRY
)
FIRE_LATENESS = Spreads(
    "wfsched_fire_lateness_seconds",
    "Delay from a scheduled instant (or a delivery's receipt) to its durable event",
    ["trigger_type"],
    REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DEPLOYMENTS = Gauge(
    "wfsched_deployments", "Deployed workflows by state", ["state"], registry=REGISTRY
)
WEBHOOK_REQUESTS = Tallies(
    "wfsched_webhook_requests", "Ingress requests by status code", ["code"], REGISTRY
)
LOCK_ACQUIRE = Counter(
    "wfsched_lock_acquire", "Lock acquisitions by result", ["result"], registry=REGISTRY
)
OCCURRENCES = Tallies(
    "wfsched_occurrences",
    "Occurrences by trigger type and outcome (fired, deduplicated, refused, filtered, …)",
    ["trigger_type", "outcome"],
    REGISTRY,
)
TRIGGER_HEALTH = Gauge(
    "wfsched_trigger_health",
    "1 for the current health of each trigger",
    ["workflow_id", "trigger_id", "health"],
    registry=REGISTRY,
)


@cache
def event_counter(trigger_type: str, status: str) -> Tally:
    """The ``TRIGGER_EVENTS`` child of a label pair, looked up once (``labels`` costs more
    than the increment on the per-event paths)."""
    return TRIGGER_EVENTS.labels(trigger_type, status)


@cache
def occurrence_counter(trigger_type: str, outcome: str) -> Tally:
    """The ``OCCURRENCES`` child of a label pair, looked up once."""
    return OCCURRENCES.labels(trigger_type, outcome)


@cache
def lateness(trigger_type: str) -> Spread:
    """The ``FIRE_LATENESS`` child of a trigger type, looked up once."""
    return FIRE_LATENESS.labels(trigger_type)


def render() -> bytes:
    """Return every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
