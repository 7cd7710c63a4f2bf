"""Prometheus metrics, one registry per process (the names the README's metrics list gives)."""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

TRIGGER_EVENTS = Counter(
    "wfsched_trigger_events",
    "Trigger events by type and status (recorded, duplicate, dispatched, failed, retried)",
    ["trigger_type", "status"],
    registry=REGISTRY,
)
DISPATCH_DURATION = Histogram(
    "wfsched_dispatch_duration_seconds",
    "Time of one dispatch attempt",
    ["mode", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DISPATCH_ATTEMPTS = Counter(
    "wfsched_dispatch_attempts",
    "Dispatch attempts by outcome",
    ["mode", "outcome"],
    registry=REGISTRY,
)
FIRE_LATENESS = Histogram(
    "wfsched_fire_lateness_seconds",
    "Delay from a scheduled instant (or a delivery's receipt) to its durable event",
    ["trigger_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
DEPLOYMENTS = Gauge(
    "wfsched_deployments", "Deployed workflows by state", ["state"], registry=REGISTRY
)
WEBHOOK_REQUESTS = Counter(
    "wfsched_webhook_requests", "Ingress requests by status code", ["code"], registry=REGISTRY
)
LOCK_ACQUIRE = Counter(
    "wfsched_lock_acquire", "Lock acquisitions by result", ["result"], registry=REGISTRY
)
OCCURRENCES = Counter(
    "wfsched_occurrences",
    "Occurrences by trigger type and outcome (fired, deduplicated, refused, filtered, …)",
    ["trigger_type", "outcome"],
    registry=REGISTRY,
)
TRIGGER_HEALTH = Gauge(
    "wfsched_trigger_health",
    "1 for the current health of each trigger",
    ["workflow_id", "trigger_id", "health"],
    registry=REGISTRY,
)


@cache
def event_counter(trigger_type: str, status: str) -> Any:
    """The ``TRIGGER_EVENTS`` child of a label pair, looked up once (``labels`` costs more
    than the increment on the per-event paths)."""
    return TRIGGER_EVENTS.labels(trigger_type, status)


@cache
def occurrence_counter(trigger_type: str, outcome: str) -> Any:
    """The ``OCCURRENCES`` child of a label pair, looked up once."""
    return OCCURRENCES.labels(trigger_type, outcome)


@cache
def lateness(trigger_type: str) -> Any:
    """The ``FIRE_LATENESS`` child of a trigger type, looked up once."""
    return FIRE_LATENESS.labels(trigger_type)


def render() -> bytes:
    """Return every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
