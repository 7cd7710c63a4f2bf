"""The shared timer against a real store (SQLite and PostgreSQL), on a clock the test drives.

Timer-level tests arm members directly; the restart tests run TriggerManager + Timer "nodes"
over one store, each node a fresh process's worth of state, to check what catch-up promises
across stops, edits and pauses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from wfsched.backends import open_store
from wfsched.config import Settings, load_settings
from wfsched.deployments import DeploymentService
from wfsched.locks import LocalLocks
from wfsched.manager import TriggerManager
from wfsched.metrics import REGISTRY
from wfsched.models import NewEvent, TriggerEvent, new_execution_id
from wfsched.plugins import Registry, load_registry
from wfsched.recorder import GroupCommitRecorder, Recorded
from wfsched.schedules.series import every_series
from wfsched.spec import parse_spec
from wfsched.store import Store
from wfsched.timer import BATCH, Timer
from wfsched.timer.instants import catchup_instants
from wfsched.trigger import CatchUp, TimerSpec

pytestmark = pytest.mark.anyio
BASE = 1_900_000_020.0  # a minute boundary (2030-03-17T17:47:00Z)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting:
    """The real store, counting the transactions the timer asks for."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[int] = []

    async def record(self, events: Sequence[NewEvent]) -> Recorded:
        self.batches.append(len(events))
        return await self.store.record(events)


def scheduled_at(event: TriggerEvent) -> datetime:
    """The time an event of a timer was scheduled for (every one of theirs has one)."""
    assert event.scheduled_at is not None
    return event.scheduled_at


def every(seconds: float, catchup: CatchUp = "skip", **kw: Any) -> TimerSpec:
    return TimerSpec(schedule=every_series(seconds), catchup=catchup, **kw)


def lateness() -> tuple[float, float]:
    labels = {"trigger_type": "cron"}
    count = REGISTRY.get_sample_value("wfsched_fire_lateness_seconds_count", labels) or 0.0
    return count, REGISTRY.get_sample_value("wfsched_fire_lateness_seconds_sum", labels) or 0.0


async def scheduled(store: Store, workflow_id: str | None = None) -> list[datetime]:
    events = await store.history(workflow_id, limit=10_000)
    return sorted(e.scheduled_at for e in events if e.scheduled_at is not None)


# the timer alone ----------------------------------------------------------------------------
async def test_it_records_a_due_group_in_batches_of_one_transaction(store: Store) -> None:
    clock = Clock(BASE - 10)
    recorder = Counting(store)
    timer = Timer(recorder, clock=clock)
    n = BATCH + 500
    for i in range(n):
        timer.add(f"wf{i}", "cron", "cron", every(60), {}, since=at(BASE - 10))
    assert await timer.tick() == 0
    observed = lateness()
    clock.now = BASE + 0.25
    assert await timer.tick() == n
    assert recorder.batches == [BATCH, 500]
    assert await scheduled(store) == [at(BASE)] * n
    count, total = lateness()
    assert count - observed[0] == n
    assert total - observed[1] == pytest.approx(0.25 * n)
    assert await timer.tick() == 0


async def test_two_timers_on_one_store_record_each_fire_once(store_url: str) -> None:
    stores = [open_store(store_url), open_store(store_url)]
    for s in stores:
        await s.open()
    try:
        clock = Clock(BASE - 0.5)
        recorders = [Counting(s) for s in stores]
        timers = [Timer(r, clock=clock) for r in recorders]
        for timer in timers:
            for i in range(200):
                timer.add(f"wf{i}", "cron", "cron", every(1), {}, since=at(BASE - 1))
        for step in range(3):
            clock.now = BASE + step + 0.5
            async with anyio.create_task_group() as tg:
                for timer in timers:
                    tg.start_soon(timer.tick)
        events = await stores[0].history(None, limit=10_000)
        keys = [(e.workflow_id, e.trigger_id, e.scheduled_at) for e in events]
        assert len(keys) == len(set(keys)) == 600
        assert sum(recorders[0].batches) == sum(recorders[1].batches) == 600
    finally:
        for s in stores:
            await s.close()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", []),
        ("latest", [BASE + 600]),
        ("all", [BASE + 360, BASE + 420, BASE + 480, BASE + 540, BASE + 600]),
    ],
)
async def test_it_catches_up_what_the_policy_promises(
    store: Store, policy: CatchUp, expected: list[float]
) -> None:
    clock = Clock(BASE + 605)
    timer = Timer(store, clock=clock)
    cursor = {"key": every_series(60).key, "last": "2030-03-17T17:47:00Z"}
    spec = every(60, policy, catchup_window=300)
    owed = timer.add("wf", "cron", "cron", spec, {"k": 1}, since=at(BASE - 3600), cursor=cursor)
    assert owed == len(expected)
    await timer.tick()
    assert await scheduled(store) == [at(t) for t in expected]
    clock.now = BASE + 660.1
    assert await timer.tick() == 1
    assert (await scheduled(store))[-1] == at(BASE + 660)
    assert {e.payload["k"] for e in await store.history("wf")} == {1}


async def test_it_catches_up_nothing_before_the_deployment_was_active(store: Store) -> None:
    timer = Timer(store, clock=Clock(BASE + 605))
    owed = timer.add("wf", "cron", "cron", every(60, "all"), {}, since=at(BASE + 500))
    assert owed == 2
    cursor = {"key": every_series(60).key, "last": "2030-03-17T17:47:00Z"}
    owed = timer.add(
        "wf2", "cron", "cron", every(60, "all"), {}, since=at(BASE + 500), cursor=cursor
    )
    assert owed == 2  # the cursor is older than the deployment: only what follows that
    await timer.tick()
    assert await scheduled(store, "wf") == [at(BASE + 540), at(BASE + 600)]
    assert await scheduled(store, "wf2") == [at(BASE + 540), at(BASE + 600)]


async def test_a_changed_schedule_produces_no_catch_up_burst(store: Store) -> None:
    timer = Timer(store, clock=Clock(BASE + 605))
    cursor = {"key": every_series(30).key, "last": "2030-03-17T17:47:00Z"}
    owed = timer.add("wf", "cron", "cron", every(60, "all"), {}, since=at(BASE), cursor=cursor)
    assert owed == 0
    assert await timer.tick() == 0


async def test_a_spread_fire_not_yet_due_at_arming_still_fires(store: Store) -> None:
    clock = Clock(BASE + 10)
    timer = Timer(store, clock=clock)
    timer.add("wf", "cron", "cron", every(60, spread=30), {}, since=at(BASE - 60))
    assert timer.next_fire("wf", "cron") == at(BASE + 30)
    clock.now = BASE + 29.9
    assert await timer.tick() == 0
    clock.now = BASE + 30.1
    assert await timer.tick() == 1
    assert await scheduled(store) == [at(BASE)]
    assert timer.next_fire("wf", "cron") == at(BASE + 90)


async def test_it_fires_only_within_start_at_and_end_at(store: Store) -> None:
    clock = Clock(BASE - 0.5)
    timer = Timer(store, clock=clock)
    window = {"start_at": at(BASE + 120), "end_at": at(BASE + 240)}
    timer.add("wf", "cron", "cron", every(60, "all", **window), {}, since=at(BASE - 60))
    for minute in range(7):
        clock.now = BASE + 60 * minute + 0.5
        await timer.tick()
    assert await scheduled(store) == [at(BASE + 120), at(BASE + 180), at(BASE + 240)]
    assert timer.next_fire("wf", "cron") is None
    late = Timer(store, clock=Clock(BASE + 3600))  # catch-up stays inside the window too
    assert late.add("wf2", "cron", "cron", every(60, "all", **window), {}, since=at(BASE)) == 3


async def test_spread_triggers_share_groups_in_tenth_of_a_second_steps(store: Store) -> None:
    clock = Clock(BASE + 10)
    timer = Timer(store, clock=clock)
    for i, spread in enumerate((5.0, 5.04, 5.09, 5.1)):
        timer.add(f"wf{i}", "cron", "cron", every(60, spread=spread), {}, since=at(BASE))
    fires = {timer.next_fire(f"wf{i}", "cron") for i in range(4)}
    assert sorted(t.timestamp() for t in fires if t) == pytest.approx([BASE + 65, BASE + 65.1])
    clock.now = BASE + 65.05
    assert await timer.tick() == 3
    clock.now = BASE + 65.1
    assert await timer.tick() == 1


async def test_a_stalled_timer_applies_catch_up_instead_of_a_burst(store: Store) -> None:
    clock = Clock(BASE - 0.5)
    timer = Timer(store, clock=clock)
    timer.add("skip", "cron", "cron", every(1), {}, since=at(BASE - 1))
    timer.add("all", "cron", "cron", every(1, "all", catchup_window=10), {}, since=at(BASE - 1))
    clock.now = BASE + 0.5
    assert await timer.tick() == 2
    clock.now = BASE + 1000.5  # suspended for ~17 minutes
    await timer.tick()
    assert await scheduled(store, "skip") == [at(BASE)]
    assert await scheduled(store, "all") == [at(BASE)] + [at(BASE + s) for s in range(991, 1001)]
    clock.now = BASE + 1001.5
    assert await timer.tick() == 2


async def test_a_removed_trigger_fires_no_more(store: Store) -> None:
    clock = Clock(BASE - 0.5)
    timer = Timer(store, clock=clock)
    timer.add("wf", "cron", "cron", every(1), {}, since=at(BASE - 1))
    timer.remove("wf", "cron")
    clock.now = BASE + 0.5
    assert await timer.tick() == 0
    assert len(timer) == 0


async def test_latest_looks_back_without_walking_the_whole_gap() -> None:
    spec = every(1, "latest")
    # a year of one-second instants: the answer must come from a short look-back
    assert catchup_instants(spec, at(BASE - 365 * 86400), at(BASE + 0.5)) == [at(BASE)]


# restarts, edits and pauses through the TriggerManager ------------------------------------
@dataclass
class Node:
    """One daemon's worth of in-memory state over a shared store."""

    timer: Timer
    manager: TriggerManager

    async def stop(self) -> None:
        await self.manager.stop_all()
        await self.timer.checkpoint(everything=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "wfsched.toml"
    config.write_text("")
    return load_settings(str(config), environ={})


@pytest.fixture
def registry() -> Registry:
    return load_registry(None)


async def node(store: Store, registry: Registry, settings: Settings, clock: Clock) -> Node:
    timer = Timer(store, on_cursors=store.set_cursors, clock=clock)
    manager = TriggerManager(
        registry=registry,
        store=store,
        recorder=store,
        settings=settings,
        locks=LocalLocks(),
        timer=timer,
    )
    await manager.reconcile()
    return Node(timer, manager)


async def deploy(store: Store, registry: Registry, workflow_id: str, **trigger: Any) -> float:
    document = {"id": workflow_id, "triggers": [{"type": "cron", "id": "tick", **trigger}]}
    await store.apply([parse_spec(document, registry)])
    return (await store.get_deployment(workflow_id)).active_since.timestamp()


async def test_an_edit_that_keeps_the_schedule_keeps_the_cursor(
    store: Store, registry: Registry, settings: Settings
) -> None:
    deployed = await deploy(store, registry, "wf", every="60s", catchup="all", payload={"v": 1})
    m0 = math.ceil(deployed / 60) * 60
    clock = Clock(m0 + 0.5)
    first = await node(store, registry, settings, clock)
    assert await first.timer.tick() == 1  # m0 itself, owed since the deployment
    for minute in (1, 2):
        clock.now = m0 + 60 * minute + 0.5
        assert await first.timer.tick() == 1
    await first.stop()
    await deploy(store, registry, "wf", every="60s", catchup="all", payload={"v": 2})
    clock.now = m0 + 300.5
    second = await node(store, registry, settings, clock)
    # from the cursor (m0+120), not from the deployment's start (m0): three fires, no repeats
    assert await second.timer.tick() == 3
    events = await store.history("wf", limit=100)
    assert sorted(e.scheduled_at.timestamp() for e in events if e.scheduled_at) == [
        m0 + 60 * k for k in range(6)
    ]
    assert {e.payload["v"] for e in events if scheduled_at(e).timestamp() > m0 + 120} == {2}
    await second.stop()


async def test_an_edit_that_changes_the_schedule_catches_nothing_up(
    store: Store, registry: Registry, settings: Settings
) -> None:
    deployed = await deploy(store, registry, "wf", every="60s", catchup="all")
    m0 = math.ceil(deployed / 60) * 60
    clock = Clock(m0 + 60.5)
    first = await node(store, registry, settings, clock)
    assert await first.timer.tick() == 2  # m0 and m0+60, owed since the deployment
    clock.now = m0 + 120.5
    assert await first.timer.tick() == 1
    await first.stop()
    await deploy(store, registry, "wf", every="30s", catchup="all")
    clock.now = m0 + 600.2
    second = await node(store, registry, settings, clock)
    assert await second.timer.tick() == 0
    clock.now = m0 + 630.2
    assert await second.timer.tick() == 1
    await second.stop()


async def test_a_live_edit_keeps_the_cursor_and_a_live_reschedule_has_no_burst(
    store: Store, registry: Registry, settings: Settings
) -> None:
    deployed = await deploy(store, registry, "wf", every="60s", catchup="all")
    m0 = math.ceil(deployed / 60) * 60
    clock = Clock(m0 + 60.5)
    live = await node(store, registry, settings, clock)
    await live.timer.tick()
    await deploy(store, registry, "wf", every="60s", catchup="all", payload={"v": 2})
    await live.manager.reconcile()
    assert await live.timer.tick() == 0  # m0+60 already recorded: nothing owed again
    await deploy(store, registry, "wf", every="20s", catchup="all")
    clock.now = m0 + 110.5
    await live.manager.reconcile()
    assert await live.timer.tick() == 0
    clock.now = m0 + 120.5
    assert await live.timer.tick() == 1
    await live.stop()


async def test_a_paused_workflow_accumulates_no_catch_up(
    store: Store, registry: Registry, settings: Settings
) -> None:
    deployed = await deploy(store, registry, "wf", every="1s", catchup="all")
    start = math.floor(deployed) - 100  # a clock behind the store's, so the pause is long
    clock = Clock(start + 0.5)
    first = await node(store, registry, settings, clock)
    clock.now = start + 5.5
    assert await first.timer.tick() == 5
    await first.stop()
    await store.set_state(["wf"], "paused")
    paused = await node(store, registry, settings, clock)
    assert not paused.manager.is_live("wf", "tick")
    await paused.stop()
    await store.set_state(["wf"], "active")
    resumed = (await store.get_deployment("wf")).active_since.timestamp()
    (state,) = await store.trigger_states("wf")
    assert resumed - datetime.fromisoformat(state.cursor["last"]).timestamp() > 90
    clock.now = resumed + 0.001
    second = await node(store, registry, settings, clock)
    assert await second.timer.tick() == 0  # catchup = "all", yet nothing from the pause
    assert len(await scheduled(store, "wf")) == 5
    clock.now = math.floor(resumed) + 1.5
    assert await second.timer.tick() == 1
    await second.stop()


async def test_a_restart_rearms_from_stored_records_without_parsing(
    store: Store, registry: Registry, settings: Settings
) -> None:
    deployed = await deploy(store, registry, "wf", cron="H * * * *", spread=30)
    clock = Clock(deployed)
    first = await node(store, registry, settings, clock)
    expected = first.timer.next_fire("wf", "tick")
    await first.stop()
    (state,) = await store.trigger_states("wf")
    assert state.cursor["arm"].startswith("a1|")
    counting = CountingRegistry(registry)
    second = TriggerManager(
        registry=counting,
        store=store,
        recorder=store,
        settings=settings,
        locks=LocalLocks(),
        timer=Timer(store, clock=clock),
    )
    await second.reconcile()
    assert second.next_fire("wf", "tick") == expected is not None
    assert counting.lookups == 1  # the type's environment digest; no spec was parsed
    await second.stop_all()


async def test_a_restart_restores_what_it_can_and_parses_the_rest(
    store: Store, registry: Registry, settings: Settings
) -> None:
    for i in range(3):
        await deploy(store, registry, f"wf{i}", every="60s", catchup="latest")
    two = {
        "id": "two",
        "triggers": [
            {"type": "cron", "id": "a", "every": "60s"},
            {"type": "cron", "id": "b", "cron": "H/5 * * * *"},
        ],
    }
    await store.apply([parse_spec(two, registry)])
    keys = [(f"wf{i}", "tick") for i in range(3)] + [("two", "a"), ("two", "b")]
    clock = Clock(math.floor(datetime.now(UTC).timestamp()) + 0.5)
    first = await node(store, registry, settings, clock)
    expected = {key: first.timer.next_fire(*key) for key in keys}
    await first.stop()
    spoilt = {**(await store.trigger_states("two"))[1].cursor, "arm": "a1|not-this-definition"}
    await store.set_cursors([("two", "b", spoilt)])
    counting = CountingRegistry(registry)
    second = await node(store, counting, settings, clock)
    assert {key: second.timer.next_fire(*key) for key in keys} == expected
    assert None not in expected.values()
    assert counting.lookups > 1  # "two" lost a record: its spec was parsed, both triggers
    members = [second.timer.get(*key) for key in keys[:3]]
    assert len({m.group for m in members if m is not None}) == 1  # one schedule, one group
    await second.stop()


async def test_a_later_pass_reads_only_what_changed_and_notices_removals(
    store: Store, registry: Registry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        await deploy(store, registry, f"wf{i}", every="60s")
    started = await node(store, registry, settings, Clock(datetime.now(UTC).timestamp()))
    read: list[str] = []
    scanner = store.scan_deployed  # type: ignore[attr-defined]

    async def counting(*args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await scanner(*args, **kwargs)
        read.extend(r[0] for r in rows)
        return rows

    monkeypatch.setattr(store, "scan_deployed", counting)
    await deploy(store, registry, "wf1", every="30s")
    await store.undeploy(["wf2"])
    await store.set_state(["wf3"], "paused")
    await deploy(store, registry, "new", every="60s")
    await started.manager.reconcile()
    assert sorted(read) == ["new", "wf1", "wf3"]
    live = {f"wf{i}": started.manager.is_live(f"wf{i}", "tick") for i in range(4)}
    assert live == {"wf0": True, "wf1": True, "wf2": False, "wf3": False}
    assert started.manager.is_live("new", "tick")
    member = started.timer.get("wf1", "tick")
    assert member is not None and member.spec.schedule.key == every_series(30).key
    read.clear()
    await started.manager.reconcile()  # nothing changed: nothing read
    assert read == []
    # A deployment made between reading the ids and scanning is armed, not also removed.
    service = DeploymentService(store=store, registry=registry, settings=settings)
    listed = store.deployment_ids  # type: ignore[attr-defined]

    async def racing() -> set[str]:
        ids: set[str] = await listed()
        late = {"id": "late", "triggers": [{"type": "cron", "id": "tick", "every": "1h"}]}
        await service.deploy([service.parse_document(late)])
        return ids

    monkeypatch.setattr(store, "deployment_ids", racing)
    await started.manager.reconcile()
    assert read == ["late"] and started.manager.is_live("late", "tick")
    # A store whose revision went back (replaced under the daemon) is read in full.
    monkeypatch.undo()
    started.manager.revision = 10**9
    await deploy(store, registry, "restored", every="60s")
    await started.manager.reconcile()
    assert started.manager.is_live("restored", "tick")
    await started.stop()


async def test_a_deploy_writes_arm_records_so_the_first_start_parses_nothing(
    store: Store, registry: Registry, settings: Settings
) -> None:
    service = DeploymentService(store=store, registry=registry, settings=settings)
    timed = {"id": "timed", "triggers": [{"type": "cron", "cron": "H * * * *"}]}
    await service.deploy([service.parse_document(timed)])
    counting = CountingRegistry(registry)
    started = await node(store, counting, settings, Clock(datetime.now(UTC).timestamp()))
    assert started.manager.is_live("timed", "cron")
    assert counting.lookups == 1  # the type's environment digest; no spec was parsed
    await started.stop()


async def test_a_deploy_writes_no_arm_records_for_workflows_with_other_triggers(
    store: Store, registry: Registry, settings: Settings
) -> None:
    service = DeploymentService(store=store, registry=registry, settings=settings)
    mixed = {"id": "mixed", "triggers": [{"type": "cron", "every": "1h"}, {"type": "manual"}]}
    await service.deploy([service.parse_document(mixed)])
    assert [s.cursor for s in await store.trigger_states("mixed")] == [None, None]


class CountingRegistry(Registry):
    """The real registry, counting type lookups (every parse and instantiation makes some)."""

    def __init__(self, source: Registry) -> None:
        super().__init__()
        for t in source.all():
            self.add(t.cls, t.source, t.module)
        self.lookups = 0

    def get(self, name: str) -> Any:
        self.lookups += 1
        return super().get(name)


async def test_the_group_commit_recorder_takes_a_store_that_knows_no_claims(store: Store) -> None:
    # Without a dispatcher to hand events to, the recorder calls ``record(events)`` only, as
    # the benchmarks' and harnesses' wrappers of the store define it.
    counting = Counting(store)
    # Deliberately not an EventStore: its ``record`` takes no ``claim``.
    recorder = GroupCommitRecorder(counting)  # type: ignore[arg-type]
    events = [
        NewEvent(
            execution_id=new_execution_id(),
            workflow_id=f"wf{i}",
            trigger_id="cron",
            trigger_type="cron",
            dedupe_key=f"cron@{i}",
            payload={},
            fired_at=at(BASE),
        )
        for i in range(3)
    ]
    async with anyio.create_task_group() as tg:
        recorder.start(tg)
        result = await recorder.record(events)
        tg.cancel_scope.cancel()
    assert [created for _, created in result] == [True, True, True]
    assert counting.batches == [3]
