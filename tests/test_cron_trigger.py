"""The ``cron`` trigger: field validation, what it hands the timer, ``wfsched cron``, and the
daemon end to end (fires once per second, across two daemons, and across a restart)."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.daemon_proc import Daemon, wait_for
from wfsched.cli import app
from wfsched.config import load_settings
from wfsched.errors import SpecError
from wfsched.manager import build_trigger
from wfsched.models import TriggerSpec
from wfsched.plugins import load_registry
from wfsched.schedules.series import CronSeries, EverySeries
from wfsched.spec import parse_spec
from wfsched.triggers.cron import CronTrigger

ROOT = Path(__file__).resolve().parent.parent
DST_CASES = json.loads((ROOT / "tests/fixtures/cron/dst_2026.json").read_text())["cases"]
REGISTRY = load_registry(None)


def parse(**trigger: Any) -> TriggerSpec:
    document = {"id": "nightly-report", "triggers": [{"type": "cron", "id": "nightly", **trigger}]}
    return parse_spec(document, REGISTRY, source="specs/nightly.toml").triggers[0]


def refused(**trigger: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(**trigger)
    return info.value


def instance(tmp_path: Path, zone: str = "UTC", **trigger: Any) -> CronTrigger:
    config = tmp_path / "wfsched.toml"
    config.write_text(f'[scheduler]\ntimezone = "{zone}"\n')
    settings = load_settings(str(config), environ={})
    # Deliberately no store and no recorder: the trigger is built, never started.
    trigger_obj, _ = build_trigger(
        REGISTRY,
        "nightly-report",
        parse(**trigger),
        store=None,  # type: ignore[arg-type]
        recorder=None,  # type: ignore[arg-type]
        settings=settings,
    )
    assert isinstance(trigger_obj, CronTrigger)
    return trigger_obj


# validation ---------------------------------------------------------------------------------
def test_it_normalises_a_valid_cron_trigger() -> None:
    spec = parse(cron="H  2 * * 1-5", timezone="Europe/Berlin", catchup="latest", spread="90s")
    assert spec.config == {
        "cron": "H 2 * * 1-5",
        "timezone": "Europe/Berlin",
        "spread": 90.0,
        "catchup": "latest",
        "catchup_window": 3600.0,
    }


def test_it_normalises_an_interval_with_an_offset() -> None:
    spec = parse(every="5m", offset="30s", catchup="all", catchup_window="2h")
    assert spec.config["every"] == 300.0
    assert spec.config["offset"] == 30.0
    assert spec.config["catchup_window"] == 7200.0


@pytest.mark.parametrize(
    "alias", ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"]
)
def test_it_accepts_every_alias(alias: str) -> None:
    assert parse(cron=alias).config["cron"] == alias


def test_it_accepts_toml_dates_and_iso_text_for_the_window() -> None:
    spec = parse(every="1h", start_at=date(2026, 1, 1), end_at="2026-02-01T00:00:00+01:00")
    assert spec.config["start_at"] == "2026-01-01T00:00:00"
    assert spec.config["end_at"] == "2026-02-01T00:00:00+01:00"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"cron": "* * * * *", "every": "1m"}, "every", "not both"),
        ({}, "cron", "is required"),
        ({"cron": "* * * * *", "timezon": "UTC"}, "timezon", "did you mean 'timezone'"),
        ({"cron": "* * * *"}, "cron", "expected 5"),
        ({"cron": "61 * * * *"}, "cron", "Must be within 0 and 59"),
        ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"cron": "@fortnightly"}, "cron", "unknown alias"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"every": "30x"}, "every", "not a duration"),
        ({"every": "500ms"}, "every", "at least 1s"),
        ({"every": 0}, "every", "at least 1s"),
        ({"cron": "* * * * *", "offset": "5s"}, "offset", "only applies to 'every'"),
        ({"every": "1m", "offset": "-5s"}, "offset", "duration"),
        ({"cron": "* * * * *", "spread": "lots"}, "spread", "not a duration"),
        ({"cron": "* * * * *", "start_at": "tomorrow"}, "start_at", "ISO 8601"),
        (
            {"every": "1m", "start_at": "2026-02-01T00:00:00Z", "end_at": "2026-01-01T00:00:00Z"},
            "end_at",
            "after start_at",
        ),
        ({"cron": "* * * * *", "catchup": "some"}, "catchup", "'skip', 'latest', 'all'"),
        ({"cron": "* * * * *", "catchup_window": "forever"}, "catchup_window", "duration"),
        ({"cron": "* * * * *", "hash_seed": 42}, "hash_seed", "non-empty string"),
        ({"cron": ["* * * * *"]}, "cron", "non-empty string"),
    ],
)
def test_it_refuses_bad_fields_naming_file_trigger_and_field(
    fields: dict[str, Any], field: str, words: str
) -> None:
    error = refused(**fields)
    assert error.field == field
    assert words in str(error)
    assert str(error).startswith("specs/nightly.toml: trigger 'nightly': field ")


# what the trigger hands the timer -----------------------------------------------------------
def test_it_seeds_h_with_workflow_and_trigger_id(tmp_path: Path) -> None:
    trigger = instance(tmp_path, cron="H H * * *")
    assert trigger.seed == "nightly-report/nightly"
    series = trigger.timer().schedule
    assert isinstance(series, CronSeries)
    from wfsched.schedules.cron import resolve

    assert series.resolved == resolve("H H * * *", "nightly-report/nightly")
    assert series.key == f"cron:{series.resolved}|UTC"


def test_hash_seed_overrides_the_default_seed(tmp_path: Path) -> None:
    a = instance(tmp_path, cron="H H * * *", hash_seed="team/job").timer().schedule
    b = instance(tmp_path, cron="H H(0-23) * * *", hash_seed="team/job").timer().schedule
    assert a.key == b.key  # the same Jenkins draws for the same seed


def test_it_defaults_the_zone_to_the_scheduler_setting(tmp_path: Path) -> None:
    trigger = instance(tmp_path, zone="Asia/Tokyo", cron="0 9 * * *")
    assert trigger.timezone == "Asia/Tokyo"
    nine = trigger.timer().schedule.next_after(datetime(2025, 12, 31, 12, tzinfo=UTC))
    assert nine == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    assert instance(tmp_path, zone="Asia/Tokyo", cron="0 9 * * *", timezone="UTC").timezone == "UTC"


def test_triggers_with_one_resolved_schedule_share_one_series(tmp_path: Path) -> None:
    a = instance(tmp_path, cron="*/5 * * * *").timer()
    b = instance(tmp_path, cron="*/5  *  * * *", spread=30).timer()
    assert a.schedule is b.schedule


def test_spread_is_a_stable_offset_below_the_spread(tmp_path: Path) -> None:
    spreads = {
        instance(tmp_path, every="1m", spread=60, hash_seed=f"s{i}").timer().spread
        for i in range(50)
    }
    assert all(0 <= s < 60 for s in spreads) and len(spreads) == 50
    again = instance(tmp_path, every="1m", spread=60, hash_seed="s7").timer().spread
    assert again in spreads


def test_it_reads_the_window_in_the_trigger_zone(tmp_path: Path) -> None:
    timer = instance(
        tmp_path,
        every="1h",
        timezone="Europe/Berlin",
        start_at="2026-07-01T08:00:00",
        end_at="2026-07-02T08:00:00Z",
    ).timer()
    assert timer.start_at == datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
    assert timer.end_at == datetime(2026, 7, 2, 8, 0, tzinfo=UTC)
    assert isinstance(timer.schedule, EverySeries)


def test_describe_shows_resolved_schedule_zone_and_seed(tmp_path: Path) -> None:
    described = instance(tmp_path, cron="@hourly", hash_seed="stuff", spread=10).describe()
    assert described["expression"] == "@hourly"
    assert described["resolved"] == "56 * * * *"  # Jenkins CronTabTest.hashedMinute
    assert described["timezone"] == "UTC"
    assert described["seed"] == "stuff"
    assert 0 <= described["spread_offset"] < 10
    assert instance(tmp_path, every="90s", offset="15s").describe()["resolved"] == (
        "every 90s + 15s"
    )


# wfsched cron ---------------------------------------------------------------------------------
def cron_cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["cron", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize(
    ("expression", "seed", "resolved"),
    [
        ("H 17 * * *", "stuff", "56 17 * * *"),
        ("@hourly", "junk", "20 * * * *"),
        ("H H(12-13) * * *", "stuff", "56 13 * * *"),
        ("H/15 * * * *", "stuff", "11-56/15 * * * *"),
        ("H(0-15)/3 * * * *", "junk", "2-14/3 * * * *"),
    ],
)
def test_cli_prints_jenkins_resolutions(expression: str, seed: str, resolved: str) -> None:
    shown = cron_cli(
        expression, "--seed", seed, "--tz", "UTC", "--count", "2", "--from", "2026-01-01T00:00:00Z"
    )
    assert shown["expression"] == expression
    assert shown["resolved"] == resolved
    assert shown["timezone"] == "UTC"
    assert len(shown["next"]) == 2


@pytest.mark.parametrize("case", DST_CASES, ids=lambda c: f"{c['zone']}:{c['expression']}")
def test_cli_prints_the_golden_dst_fires(case: dict[str, Any]) -> None:
    shown = cron_cli(
        case["expression"],
        "--tz",
        case["zone"],
        "--from",
        case["after"],
        "--count",
        str(len(case["fires"])),
    )
    assert [datetime.fromisoformat(t) for t in shown["next"]] == [
        datetime.fromisoformat(t) for t in case["fires"]
    ]
    assert all(datetime.fromisoformat(t).utcoffset() is not None for t in shown["next"])


def test_cli_seeds_with_workflow_and_trigger_ids() -> None:
    by_id = cron_cli("H H * * *", "--id", "nightly-report", "--trigger", "nightly")
    by_seed = cron_cli("H H * * *", "--seed", "nightly-report/nightly")
    assert by_id["resolved"] == by_seed["resolved"]
    assert (
        cron_cli("H H * * *", "--id", "wf")["resolved"]
        == cron_cli("H H * * *", "--seed", "wf/cron")["resolved"]
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["61 * * * *"], "Must be within 0 and 59"),
        (["* * * * *", "--tz", "Mars/Olympus"], "--tz 'Mars/Olympus'"),
        (["* * * * *", "--from", "yesterday"], "--from"),
        (["* * * * *", "--seed", "a", "--id", "b"], "not both"),
        (["* * * * *", "--trigger", "t"], "--trigger needs --id"),
    ],
)
def test_cli_refuses_bad_input_with_exit_2(args: list[str], words: str) -> None:
    result = CliRunner().invoke(app, ["cron", *args])
    assert result.exit_code == 2
    assert words in result.output


# the daemon end to end ----------------------------------------------------------------------
def write_spec(path: Path, workflow_id: str, **fields: str) -> Path:
    lines = [f'id = "{workflow_id}"', "[[triggers]]", 'type = "cron"', 'id = "tick"']
    lines += [f'{k} = "{v}"' for k, v in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def seconds(daemon: Daemon, workflow_id: str) -> list[int]:
    events = daemon.cli_json("history", workflow_id, "--limit", "1000")
    return sorted(int(datetime.fromisoformat(e["scheduled_at"]).timestamp()) for e in events)


def consecutive(values: list[int]) -> bool:
    return values == list(range(values[0], values[0] + len(values)))


@pytest.mark.slow
def test_an_interval_of_one_second_fires_once_per_second(tmp_path: Path) -> None:
    with Daemon(tmp_path) as daemon:
        daemon.cli("deploy", str(write_spec(tmp_path / "tick.toml", "tick", every="1s")))
        wait_for(lambda: len(seconds(daemon, "tick")) >= 6, timeout=20, message="6 fires")
        fired = seconds(daemon, "tick")
        assert consecutive(fired)
        view = daemon.cli_json("status", "tick")
        (trigger,) = view["triggers"]
        assert trigger["details"]["resolved"] == "every 1s"
        assert datetime.fromisoformat(trigger["next_fire"]).timestamp() > fired[-1]
        lateness = daemon.get("/metrics").text
        assert "wfsched_fire_lateness_seconds_count" in lateness


@pytest.mark.slow
def test_two_daemons_on_one_postgres_store_fire_once_per_second(
    tmp_path: Path, pg_url: str
) -> None:
    env = {"DATABASE_URL": pg_url}
    first = Daemon(tmp_path / "a", env=env)
    second = Daemon(tmp_path / "b", env=env)
    first.cli("deploy", str(write_spec(tmp_path / "tick.toml", "tick", every="1s")))
    with first, second:
        wait_for(lambda: len(seconds(first, "tick")) >= 8, timeout=30, message="8 fires")
        fired = seconds(first, "tick")
        assert consecutive(fired)
        duplicates = [_metric(d, 'status="duplicate"') for d in (first, second)]
        recorded = [_metric(d, 'status="recorded"') for d in (first, second)]
    # Both daemons fired every instant; the store kept exactly one of each.
    assert sum(duplicates) > 0 and all(r + d > 0 for r, d in zip(recorded, duplicates, strict=True))


def _metric(daemon: Daemon, label: str) -> float:
    for line in daemon.get("/metrics").text.splitlines():
        if line.startswith("wfsched_trigger_events_total{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_a_restart_catches_up_exactly_what_each_policy_promises(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    for policy in ("skip", "latest", "all"):
        write_spec(specs / f"{policy}.toml", policy, every="1s", catchup=policy)
    daemon = Daemon(tmp_path)
    daemon.cli("deploy", str(specs))
    with daemon:
        wait_for(
            lambda: all(len(seconds(daemon, p)) >= 2 for p in ("skip", "latest", "all")),
            timeout=20,
            message="fires before the stop",
        )
        assert daemon.stop() == 0
        before = {p: seconds(daemon, p) for p in ("skip", "latest", "all")}
        stopped = time.time()
        wait_for(lambda: time.time() > stopped + 4, timeout=10, message="4 s of downtime")
        logged = len(daemon.log_lines())
        daemon.start()
        armed = _armed_at(daemon, logged)
        wait_for(
            lambda: all(
                len(seconds(daemon, p)) >= len(before[p]) + 3 for p in ("skip", "latest", "all")
            ),
            timeout=20,
            message="fires after the restart",
        )
    after = {p: seconds(daemon, p) for p in ("skip", "latest", "all")}
    for policy in ("skip", "latest", "all"):
        assert after[policy][: len(before[policy])] == before[policy]
        assert consecutive(before[policy])
    # Instants missed while down: after the last fire before the stop, up to the re-arming.
    # (An instant within 50 ms of the re-arming may fall on either side; leave it out.)
    for policy, missed_fired in (("skip", 0), ("latest", 1), ("all", None)):
        last = before[policy][-1]
        missed = list(range(last + 1, math.floor(armed - 0.05) + 1))
        assert len(missed) >= 3
        got = [s for s in after[policy] if last < s <= missed[-1]]
        if missed_fired is None:
            assert got == missed
        elif missed_fired == 1:
            # The latest instant due at the re-arming: missed[-1], or the next one when the
            # re-arming crossed a second boundary just before its log line was written.
            first = min(s for s in after[policy] if s > last)
            assert got == [missed[-1]] or (got == [] and first == missed[-1] + 1 <= armed)
        else:
            # Nothing caught up; missed[-1] may be an ordinary fire when the log line came
            # more than 50 ms after the re-arming (a loaded machine).
            assert got in ([], [missed[-1]])
        later = [s for s in after[policy] if s > missed[-1]]
        assert consecutive(later)


def _armed_at(daemon: Daemon, skip: int) -> float:
    def armed() -> float | None:
        for line in daemon.log_lines()[skip:]:
            if line.get("event", "").endswith("timers armed"):
                return datetime.fromisoformat(line["timestamp"]).timestamp()
        return None

    found = wait_for(armed, timeout=20, message="the timers armed log line")
    assert isinstance(found, float)
    return found
