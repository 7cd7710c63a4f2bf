"""The dashboard's reads of the fleet on both real stores: one page of deployments found by id
or name (``find_deployments``), and trigger tables read by the database
(``scan_trigger_field``), paged and by revision."""

from __future__ import annotations

from typing import Any

import pytest

from wfsched.errors import StoreError
from wfsched.models import TriggerSpec, WorkflowSpec
from wfsched.spec import spec_hash

pytestmark = pytest.mark.anyio


def spec(workflow_id: str, name: str, triggers: list[dict[str, Any]]) -> WorkflowSpec:
    doc: dict[str, Any] = {"id": workflow_id, "name": name, "triggers": triggers}
    return WorkflowSpec(
        id=workflow_id,
        name=name,
        triggers=tuple(
            TriggerSpec(id=str(t.get("id", t["type"])), type=str(t["type"])) for t in triggers
        ),
        document=doc,
        spec_hash=spec_hash(doc),
    )


FLEET = [
    spec("alpha", "Nightly Report", [{"type": "cron", "id": "c", "cron": "0 9 * * *"}]),
    spec("beta", "50%_off sale", [{"type": "manual", "id": "m"}]),
    spec("gamma", "Straße sync", [{"type": "cron", "cron": "H/5  * * * *"}]),
    spec("delta", "no triggers", []),
    spec("epsilon-report", "Epsilon", [{"type": "manual"}, {"type": "cron", "cron": "1 * * * *"}]),
]


async def test_find_deployments_pages_and_matches_id_or_name_case_insensitively(
    store: Any,
) -> None:
    await store.apply(FLEET)
    assert await store.find_deployments("", offset=0, limit=50) == (
        ["alpha", "beta", "delta", "epsilon-report", "gamma"],
        5,
    )
    assert await store.find_deployments("", offset=2, limit=2) == (["delta", "epsilon-report"], 5)
    assert await store.find_deployments("", offset=10, limit=2) == ([], 5)
    # Id or name, any case; the count is of every match, not of the page.
    assert await store.find_deployments("REPORT", offset=0, limit=1) == (["alpha"], 2)
    assert await store.find_deployments("REPORT", offset=1, limit=5) == (["epsilon-report"], 2)
    # LIKE's wildcards are plain characters in a needle.
    assert await store.find_deployments("0%_o", offset=0, limit=50) == (["beta"], 1)
    assert await store.find_deployments("%", offset=0, limit=50) == (["beta"], 1)
    assert await store.find_deployments("_", offset=0, limit=50) == (["beta"], 1)
    # A needle beyond ASCII.
    assert await store.find_deployments("STRASSE"[:3] + "aße", offset=0, limit=50) == (
        ["gamma"],
        1,
    )
    assert await store.find_deployments("zzz", offset=0, limit=50) == ([], 0)


async def test_scan_trigger_field_reads_tables_in_order_paged_and_by_revision(store: Any) -> None:
    await store.apply(FLEET)
    rows = await store.scan_trigger_field("cron", "", 100)
    assert rows == [
        ("alpha", "c", "cron", "0 9 * * *"),
        ("beta", "m", "manual", None),
        ("delta", None, None, None),
        ("epsilon-report", None, "manual", None),
        ("epsilon-report", None, "cron", "1 * * * *"),
        ("gamma", None, "cron", "H/5  * * * *"),
    ]
    # Pages of deployments (never a deployment cut in two), after an id.
    assert [r[0] for r in await store.scan_trigger_field("cron", "", 2)] == ["alpha", "beta"]
    assert [r[0] for r in await store.scan_trigger_field("cron", "beta", 2)] == [
        "delta",
        "epsilon-report",
        "epsilon-report",
    ]
    # Only what changed since a revision.
    revision = await store.revision()
    await store.apply([spec("beta", "50%_off sale", [{"type": "cron", "cron": "*/5 * * * *"}])])
    await store.set_state(["alpha"], "paused")
    assert await store.scan_trigger_field("cron", "", 100, changed_since=revision) == [
        ("alpha", "c", "cron", "0 9 * * *"),
        ("beta", None, "cron", "*/5 * * * *"),
    ]
    assert await store.scan_trigger_field("not an identifier", "", 1) == [
        ("alpha", "c", "cron", None)
    ]


async def test_last_events_is_the_newest_of_each_trigger(store: Any) -> None:
    """What the fleet page's health reads per row: index seeks, one per trigger."""
    from wfsched.models import NewEvent, new_execution_id, utcnow

    def event(workflow_id: str, trigger_id: str) -> NewEvent:
        return NewEvent(
            execution_id=new_execution_id(),
            workflow_id=workflow_id,
            trigger_id=trigger_id,
            trigger_type="manual",
            dedupe_key=new_execution_id(),
            payload={},
            fired_at=utcnow(),
        )

    batches = [[event(w, t) for w in ("a", "b", "c") for t in ("x", "m", "z")] for _ in range(4)]
    for batch in batches:
        await store.record(batch)
    newest = {e.trigger_id: e.execution_id for e in batches[-1] if e.workflow_id == "b"}
    assert {t: e.execution_id for t, e in (await store.last_events("b")).items()} == newest
    assert await store.last_events("nobody") == {}


async def test_history_by_status_reads_failed_and_pending_by_their_own_indexes(store: Any) -> None:
    """The workflow page's filters: right rows, newest first, with and without a trigger."""
    from wfsched.models import DispatchOutcome, NewEvent, new_execution_id, utcnow

    def event(workflow_id: str, trigger_id: str) -> NewEvent:
        return NewEvent(
            execution_id=new_execution_id(),
            workflow_id=workflow_id,
            trigger_id=trigger_id,
            trigger_type="manual",
            dedupe_key=new_execution_id(),
            payload={},
            fired_at=utcnow(),
        )

    made = [event(w, t) for _ in range(3) for w in ("a", "b") for t in ("x", "y")]
    await store.record(made)
    claimed = await store.claim("me", 100, 60, utcnow())
    # Every third fails, the rest are dispatched, and two new ones stay pending.
    outcomes = [
        DispatchOutcome(
            execution_id=e.execution_id,
            status="failed" if i % 3 == 0 else "dispatched",
            fired_at=e.fired_at,
        )
        for i, e in enumerate(sorted(claimed, key=lambda e: e.execution_id))
    ]
    await store.finish("me", outcomes)
    waiting = [event("a", "x"), event("a", "y")]
    await store.record(waiting)
    status_of = {o.execution_id: o.status for o in outcomes}
    status_of.update({e.execution_id: "pending" for e in waiting})
    everything = sorted(status_of, reverse=True)
    by = {e.execution_id: e for e in [*made, *waiting]}
    for status in ("failed", "pending", "dispatched"):
        for workflow_id in ("a", None):
            for trigger_id in ("x", None):
                expected = [
                    x
                    for x in everything
                    if status_of[x] == status
                    and workflow_id in (None, by[x].workflow_id)
                    and trigger_id in (None, by[x].trigger_id)
                ]
                got = await store.history(
                    workflow_id, status=status, trigger_id=trigger_id, limit=100
                )
                assert [e.execution_id for e in got] == expected, (status, workflow_id)
                assert expected  # every combination has rows to find
    with pytest.raises(ValueError):
        await store.history("a", status="lost")


async def test_last_events_of_and_trigger_states_of_read_a_page_of_workflows_at_once(
    store: Any,
) -> None:
    """The fleet page's statuses in one read each: the same answers as one workflow at a
    time, for the workflows asked only."""
    from wfsched.models import NewEvent, new_execution_id, utcnow

    def event(workflow_id: str, trigger_id: str) -> NewEvent:
        return NewEvent(
            execution_id=new_execution_id(),
            workflow_id=workflow_id,
            trigger_id=trigger_id,
            trigger_type="manual",
            dedupe_key=new_execution_id(),
            payload={},
            fired_at=utcnow(),
        )

    await store.apply(FLEET)
    await store.set_health("alpha", "c", "failing", "boom")
    for _ in range(3):
        await store.record([event(w, t) for w in ("alpha", "beta", "gamma") for t in ("x", "m")])
    asked = ["alpha", "beta", "delta", "nobody"]
    found = await store.last_events_of(asked)
    assert set(found) == {"alpha", "beta"}  # delta and nobody have no events; gamma not asked
    for workflow_id in ("alpha", "beta"):
        one = await store.last_events(workflow_id)
        assert {t: e.execution_id for t, e in found[workflow_id].items()} == {
            t: e.execution_id for t, e in one.items()
        }
        assert set(one) == {"x", "m"}
    assert await store.last_events_of([]) == {}
    states = await store.trigger_states_of(asked)
    assert states == [s for s in await store.trigger_states() if s.workflow_id in asked]
    first = states[0]
    assert (first.workflow_id, first.trigger_id, first.health, first.last_error) == (
        "alpha",
        "c",
        "failing",
        "boom",
    )
    assert await store.trigger_states_of([]) == []


async def test_reader_sees_every_commit_and_does_not_wait_behind_the_writer(store: Any) -> None:
    """The dashboard's reads go through ``reader()``: it reads what the store committed,
    while the store's own connection (SQLite: its one worker) or pool (PostgreSQL: every
    connection) is held by writes."""
    import anyio
    import anyio.to_thread

    reader = store.reader()
    assert reader is not store
    assert store.reader() is reader and reader.reader() is reader
    await store.apply(FLEET)
    assert await reader.find_deployments("", offset=0, limit=2) == (["alpha", "beta"], 5)
    assert [d.workflow_id for d in await reader.get_deployments(["gamma", "zzz"])] == ["gamma"]
    if hasattr(store, "_pool"):  # PostgreSQL: every connection of the store's pool taken
        held = [await store._pool.getconn() for _ in range(store._pool.max_size)]
        try:
            with anyio.fail_after(5):
                assert (await reader.find_deployments("report", offset=0, limit=5))[1] == 2
        finally:
            for conn in held:
                await store._pool.putconn(conn)
        return
    # SQLite: the writer's worker is inside a write transaction until released.
    import threading

    entered, release = threading.Event(), threading.Event()

    def write(conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE meta SET value = value WHERE key = 'revision'")
        entered.set()
        release.wait(10)
        conn.execute("COMMIT")

    async with anyio.create_task_group() as tg:
        tg.start_soon(store._run, write)
        await anyio.to_thread.run_sync(entered.wait, 10)
        try:
            with anyio.fail_after(5):
                assert (await reader.find_deployments("report", offset=0, limit=5))[1] == 2
        finally:
            release.set()
    with pytest.raises(StoreError):
        await reader.set_state(["alpha"], "paused")  # read-only
    assert (await store.get_deployment("alpha")).state == "active"


async def test_an_in_memory_sqlite_store_reads_through_itself() -> None:
    from wfsched.backends import open_store

    store = open_store("sqlite:///:memory:")
    await store.open()
    try:
        assert store.reader() is store
    finally:
        await store.close()


async def test_statuses_of_a_page_are_each_workflows_status(store: Any, tmp_path: Any) -> None:
    """The fleet page's rows (``DeploymentViews.statuses``: four reads for the page) say what
    ``status`` says of each workflow, in the order asked; None for one not deployed."""
    from wfsched.config import load_settings
    from wfsched.deployments.views import DeploymentViews
    from wfsched.models import DaemonRun, NewEvent, new_execution_id, utcnow
    from wfsched.plugins import load_registry
    from wfsched.spec import parse_spec

    config = tmp_path / "wfsched.toml"
    config.write_text("")
    registry = load_registry(None)
    views = DeploymentViews(
        store=store, registry=registry, settings=load_settings(str(config), environ={})
    )
    documents: list[dict[str, Any]] = [
        {"id": "a", "triggers": [{"type": "cron", "id": "c", "cron": "* * * * *"}]},
        {"id": "b", "triggers": [{"type": "manual", "id": "m"}, {"type": "manual", "id": "n"}]},
        {"id": "c", "triggers": []},
    ]
    await store.apply([parse_spec(d, registry) for d in documents])
    await store.set_health("b", "n", "failing", "boom")
    now = utcnow()
    await store.beat(DaemonRun(replica_id="r", started_at=now, last_seen=now))
    await store.record(
        [
            NewEvent(
                execution_id=new_execution_id(),
                workflow_id="b",
                trigger_id="m",
                trigger_type="manual",
                dedupe_key=new_execution_id(),
                payload={},
                fired_at=utcnow(),
            )
        ]
    )
    asked = ["c", "gone", "b", "a"]
    got = await views.statuses(asked)
    assert got[1] is None
    assert got == [None if w == "gone" else await views.status(w) for w in asked]
    b = got[2]
    assert b is not None
    assert [(t["id"], t["health"], t["last_event"] is not None) for t in b["triggers"]] == [
        ("m", "healthy", True),
        ("n", "failing", False),
    ]
    # No daemon running: each row says what waits, read for the page at once.
    await store.end_beat(DaemonRun(replica_id="r", started_at=now, last_seen=now))
    got = await views.statuses(asked)
    assert got == [None if w == "gone" else await views.status(w) for w in asked]
    pending = {w: s["pending"]["count"] for w, s in zip(asked, got, strict=True) if s}
    assert pending == {"c": 0, "b": 1, "a": 0}
    assert await store.pending_events_of(["b", "a"]) == {"b": await store.pending_events("b")}
