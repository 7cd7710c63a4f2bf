"""Tests for wfsched.schedules.cron: Jenkins H resolution, the DST policy, intervals, durations, spread.

Golden data lives in tests/fixtures/cron/:

* ``java_random_vectors.json`` — ``java.util.Random`` output from OpenJDK 17;
* ``jenkins_hash_vectors.json`` — parser bits for seed/expression pairs, computed on OpenJDK 17
  with Jenkins' ``Hash.from`` and ``BaseParser.doHash``/``doRange`` logic;
* ``dst_2026.json`` — fire instants across 2026's transitions (plus Apia's skipped 2011-12-30),
  produced by the brute-force reference below and checked by hand against the documented DST policy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from wfsched.errors import SpecError
from wfsched.schedules.cron import CronSchedule, EverySchedule, resolve, spread_offset
from wfsched.schedules.durations import parse_duration
from wfsched.schedules.jenkins import _JavaRandom, jenkins_random, resolve_with

FIXTURES = Path(__file__).parent / "fixtures" / "cron"
ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _no_draws(bound: int) -> int:
    raise AssertionError(f"unexpected hash draw ({bound})")


def _bits(resolved: str) -> tuple[int, ...]:
    """Field bitmasks of an H-free expression, the way Jenkins' CronTab stores them."""
    return resolve_with(resolved, _no_draws)[1]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- Jenkins: hudson/scheduler/CronTabTest.java ------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "seed", "resolved"),
    [
        # CronTabTest.hashedMinute
        ("H 17 * * *", "stuff", "56 17 * * *"),
        ("H * * * *", "stuff", "56 * * * *"),
        ("@hourly", "stuff", "56 * * * *"),
        ("@hourly", "junk", "20 * * * *"),
        ("H H(12-13) * * *", "stuff", "56 13 * * *"),
        # CronTabTest.hashSkips: 16:26, 16:41, 16:56, 17:11 for "stuff"; 0:02 and 1:02 for "junk"
        ("H/15 * * * *", "stuff", "11-56/15 * * * *"),
        ("H(0-15)/3 * * * *", "junk", "2-14/3 * * * *"),
        ("H(0-3)/4 * * * *", "junk", "2 * * * *"),
    ],
)
def test_it_resolves_jenkins_crontabtest_vectors(expression: str, seed: str, resolved: str) -> None:
    assert resolve(expression, seed) == resolved


def test_it_draws_repeated_hashes_in_jenkins_order() -> None:
    # CronTabTest.repeatedHash / testTimezone: "H * * * *" twice with Hash.from("seed") → [35, 56].
    rnd = jenkins_random("seed")
    assert [rnd.next_int(60), rnd.next_int(60)] == [35, 56]
    assert resolve("H,H * * * *", "seed") == "35,56 * * * *"


@pytest.mark.parametrize(
    ("draw", "resolved"),
    [
        # CronTabTest.testHash1: Hash.next(n) = n - 1
        (lambda n: n - 1, "59 8 3-27/3 4-8/4 *"),
        # CronTabTest.testHash2: Hash.next(n) = 1
        (lambda n: 1, "1 6 2-26/3 2-10/4 *"),
    ],
)
def test_it_applies_draws_like_jenkins_testhash(draw: Any, resolved: str) -> None:
    text, bits = resolve_with("H H(5-8) H/3 H(1-10)/4 *", draw)
    assert text == resolved
    assert bits == _bits(resolved)


def test_it_accepts_jenkins_range_bounds() -> None:
    # CronTabTest.rangeBoundsCheckOK
    resolved = resolve("H(0-59) H(0-23) H(1-31) H(1-12) H(0-7)", "any")
    assert "H" not in resolved


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # CronTabTest.hashSkips
        ("H(0-3)/15 * * * *", "15 is an invalid value. Must be within 1 and 4"),
        # CronTabTest.rangeBoundsCheckFailHour / rangeBoundsCheckFailMinute
        ("H H(12-24) * * *", "24 is an invalid value. Must be within 0 and 23"),
        ("H(33-66) * * * *", "66 is an invalid value. Must be within 0 and 59"),
        # BaseParser.doHash on a bare H: day of month hashes over 1-28
        ("H H H/29 * *", "29 is an invalid value. Must be within 1 and 28"),
        ("H/61 * * * *", "61 is an invalid value. Must be within 1 and 60"),
        ("H/0 * * * *", "step must be positive, but found 0"),
    ],
)
def test_it_rejects_what_jenkins_rejects_with_its_message(expression: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve(expression, "junk")
    assert info.value.field == "cron"
    assert message in info.value.message


@pytest.mark.parametrize(
    "expression",
    ["@yearly", "@annually", "@weekly", "@midnight", "@monthly", "@daily", "@hourly"],
)
def test_it_hashes_aliases_like_jenkins(expression: str) -> None:
    # CronTabTest.test1 parses the aliases; CrontabParser.g4 expands them into H fields.
    expansion = {
        "@yearly": "H H H H *",
        "@annually": "H H H H *",
        "@monthly": "H H H * *",
        "@weekly": "H H * * H",
        "@daily": "H H * * *",
        "@midnight": "H H(0-2) * * *",
        "@hourly": "H * * * *",
    }[expression]
    assert resolve(expression, "wf/cron") == resolve(expansion, "wf/cron")
    assert resolve(expression.upper(), "wf/cron") == resolve(expression, "wf/cron")


def test_it_matches_the_jdk_random() -> None:
    for case in _load("java_random_vectors.json"):
        seed = int(case["seed"])
        assert _JavaRandom(seed).next_bits(32) == case["next_int"]
        rnd = _JavaRandom(seed)
        draws = [rnd.next_int(bound) for _ in range(3) for bound in case["bounds"]]
        assert draws == case["draws"], case["seed"]


def test_it_matches_jenkins_parser_bits_for_generated_vectors() -> None:
    vectors = _load("jenkins_hash_vectors.json")["vectors"]
    assert len(vectors) > 300
    for case in vectors:
        if "error" in case:
            with pytest.raises(SpecError, match=case["error"]):
                resolve(case["expression"], case["seed"])
            continue
        resolved = resolve(case["expression"], case["seed"])
        expected = tuple(int(bits, 16) for bits in case["bits"])
        assert _bits(resolved) == expected, (case, resolved)
        croniter(resolved)


# --- Resolution: syntax and properties --------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "resolved"),
    [
        ("0 9 * * mon-fri", "0 9 * * mon-fri"),
        ("  5,10-20/5\t*/2 1,15 JAN-MAR,DEC SUN  ", "5,10-20/5 */2 1,15 JAN-MAR,DEC SUN"),
        ("0 0 * 1-10/3 *", "0 0 * 1-10/3 *"),
        ("0 0 1 * 7", "0 0 1 * 7"),
    ],
)
def test_it_keeps_fields_without_h_as_written(expression: str, resolved: str) -> None:
    assert resolve(expression, "seed") == resolved


def test_it_picks_a_single_value_for_h_slash_one() -> None:
    # BaseParser.doHash: NO_STEP == 1, so H/1 is H, not "every minute".
    assert resolve("H/1 * * * *", "stuff") == resolve("H * * * *", "stuff") == "56 * * * *"


def test_it_hashes_within_named_ranges() -> None:
    for i in range(200):
        *_, month, dow = resolve("H H * H(JAN-MAR) H(MON-FRI)", f"wf{i}/c").split()
        assert 1 <= int(month) <= 3
        assert 1 <= int(dow) <= 5


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "H(5-1) * * * *",
        "5/15 * * * *",
        "1,,2 * * * *",
        "h * * * *",
        "L * * * *",
        "? * * * *",
        "* * L * *",
        "* * * * MON#2",
        "* * * * MONDAY",
        "* * * JAN *,",
        "@reboot",
        "@",
    ],
)
def test_it_rejects_invalid_expressions(expression: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve(expression, "seed")
    assert info.value.field == "cron"


_H_TERMS = {
    0: ["H", "H/15", "H(0-29)", "H(10-20)/5", "H/1", "H/60", "*/10", "7"],
    1: ["H", "H/4", "H(0-5)", "H(9-17)/2", "*", "1,13"],
    2: ["H", "H/7", "H(1-31)", "H(20-31)/3", "*", "1"],
    3: ["H", "H/3", "H(1-12)", "H(JAN-JUN)/2", "*"],
    4: ["H", "H/2", "H(0-7)", "H(MON-FRI)", "*", "1-5"],
}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@settings(max_examples=200)
@given(
    terms=st.tuples(*(st.sampled_from(_H_TERMS[i]) for i in range(5))),
    seed=st.text(max_size=40),
)
def test_it_resolves_h_to_values_in_range(terms: tuple[str, ...], seed: str) -> None:
    resolved = resolve(" ".join(terms), seed)
    assert "H" not in resolved
    assert resolved == resolve(" ".join(terms), seed)
    for index, bits in enumerate(_bits(resolved)):
        low, high = _BOUNDS[index]
        assert bits != 0
        assert bits >> (high + 1) == 0
        assert bits & ((1 << low) - 1) == 0
    croniter(resolved)


def test_it_resolves_identically_in_processes_with_different_hash_seeds() -> None:
    script = (
        "import json\n"
        "from wfsched.schedules.cron import resolve, spread_offset\n"
        "seeds = [f'wf-{i}/cron' for i in range(300)]\n"
        "print(json.dumps([[resolve('H H H/3 * H', s), spread_offset(s, 60.0)] for s in seeds]))\n"
    )
    outputs = []
    for hash_seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(done.stdout))
    seeds = [f"wf-{i}/cron" for i in range(300)]
    here = [[resolve("H H H/3 * H", seed), spread_offset(seed, 60.0)] for seed in seeds]
    assert outputs[0] == outputs[1] == outputs[2] == here


def test_it_spreads_different_seeds_over_minutes_and_hours() -> None:
    n = 6000
    minutes = [0] * 60
    hours = [0] * 24
    for i in range(n):
        minute, hour, *_ = resolve("H H * * *", f"workflow-{i}/nightly").split()
        minutes[int(minute)] += 1
        hours[int(hour)] += 1
    for counts in (minutes, hours):
        expected = n / len(counts)
        chi_square = sum((c - expected) ** 2 / expected for c in counts)
        # p = 0.001 critical values: 98.3 for 59 degrees of freedom, 49.7 for 23.
        assert chi_square < (98.3 if len(counts) == 60 else 49.7)
        assert min(counts) > 0


# --- CronSchedule: validation and basic iteration ---------------------------------------------


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd", "/etc/localtime"])
def test_it_rejects_unknown_time_zones(zone: str) -> None:
    with pytest.raises(SpecError) as info:
        CronSchedule("0 0 * * *", zone, "seed")
    assert info.value.field == "timezone"


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 */2"])
def test_it_rejects_schedules_that_never_fire(expression: str) -> None:
    with pytest.raises(SpecError, match="never fires") as info:
        CronSchedule(expression, "UTC", "seed")
    assert info.value.field == "cron"


def test_it_accepts_schedules_that_fire_rarely() -> None:
    leap = CronSchedule("0 0 29 2 *", "UTC", "seed")
    assert leap.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)
    # Both day fields restricted: Vixie ORs them, so "31 February or a Monday" fires on Mondays.
    feb = CronSchedule("0 0 31 2 1", "UTC", "seed")
    assert feb.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 2, 2, tzinfo=UTC)


def test_it_exposes_expression_resolution_and_zone() -> None:
    schedule = CronSchedule("H 17 * * *", "Europe/Berlin", "stuff")
    assert (schedule.expression, schedule.resolved, schedule.timezone) == (
        "H 17 * * *",
        "56 17 * * *",
        "Europe/Berlin",
    )


@pytest.mark.parametrize(
    ("expression", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 1,13 * * *", True),
        ("0 9-17 * * *", True),
        ("H H * * *", True),
        ("@daily", True),
        ("0 * * * *", False),
        ("0 */2 * * *", False),
        ("0 1-23/2 * * *", False),
        ("0 H/3 * * *", False),
        ("@hourly", False),
    ],
)
def test_it_classifies_fixed_hour_schedules(expression: str, fixed: bool) -> None:
    assert CronSchedule(expression, "UTC", "seed").fixed_hour is fixed


@pytest.mark.parametrize(
    ("expression", "days"),
    [
        # Both restricted: either day field matches (Vixie OR).
        ("0 0 1 * 1", [1, 5, 12, 19, 26]),
        # A field starting with '*' makes it AND (cronie entry.c DOM_STAR/DOW_STAR).
        ("0 0 */2 * 1", [5, 19]),
        ("0 0 1-31 * 1", list(range(1, 32))),
        ("0 0 * * 1", [5, 12, 19, 26]),
        ("0 0 1 * *", [1]),
    ],
)
def test_it_combines_day_fields_like_vixie_cron(expression: str, days: list[int]) -> None:
    schedule = CronSchedule(expression, "UTC", "seed")
    t = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    fires = []
    while (t := schedule.next_after(t)) < datetime(2026, 2, 1, tzinfo=UTC):
        fires.append(t.day)
    assert fires == days


def test_it_returns_utc_strictly_after_an_instant_in_any_zone() -> None:
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin", "seed")
    tokyo = datetime(2026, 6, 1, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo"))  # 00:30Z = 02:30 Berlin
    fire = schedule.next_after(tokyo)
    assert fire.tzinfo is UTC
    assert fire == datetime(2026, 6, 2, 0, 30, tzinfo=UTC)
    assert schedule.next_after(tokyo - timedelta(microseconds=1)) == tokyo


def test_it_answers_concurrent_callers_consistently() -> None:
    expected_schedule = CronSchedule("*/5 * * * *", "America/New_York", "seed")
    starts = [_utc("2026-11-01T04:00:00Z") + timedelta(minutes=7 * i) for i in range(8)]
    expected = [_fires(expected_schedule, t, 200) for t in starts]
    shared = CronSchedule("*/5 * * * *", "America/New_York", "seed")
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda t: _fires(shared, t, 200), starts))
    assert got == expected


def test_it_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        CronSchedule("* * * * *", "UTC", "seed").next_after(datetime(2026, 1, 1))


# --- CronSchedule: the DST policy ------------------------------------------------------------


def test_it_fires_a_skipped_fixed_time_once_right_after_the_gap() -> None:
    # DST policy: Europe/Berlin "30 2 * * *" on 2026-03-29 fires at 03:00 local = 01:00 UTC.
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin", "seed")
    fires = _fires(schedule, datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    assert fires == [_utc("2026-03-29T01:00:00Z"), _utc("2026-03-30T00:30:00Z")]


def test_it_fires_a_repeated_fixed_time_once_on_its_first_occurrence() -> None:
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin", "seed")
    fires = _fires(schedule, datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert fires == [_utc("2026-10-25T02:30:00+02:00"), _utc("2026-10-26T02:30:00+01:00")]


def test_it_fires_every_real_hour_through_a_fold() -> None:
    # DST policy: Berlin "0 * * * *" on 2026-10-25 fires at 00:00Z and 01:00Z (both 02:00 local).
    schedule = CronSchedule("0 * * * *", "Europe/Berlin", "seed")
    fires = _fires(schedule, datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 3)
    assert fires == [_utc(f"2026-10-25T0{h}:00:00Z") for h in range(3)]


def test_it_fires_every_fifteen_real_minutes_through_a_fold() -> None:
    schedule = CronSchedule("*/15 * * * *", "Europe/Berlin", "seed")
    start = datetime(2026, 10, 24, 23, 50, tzinfo=UTC)
    fires = _fires(schedule, start, 12)
    assert fires == [_utc("2026-10-25T00:00:00Z") + timedelta(minutes=15 * i) for i in range(12)]


def test_it_does_not_overshoot_a_gap_to_a_later_month() -> None:
    # node-cron#518: "30 2 * * *" in the New York gap jumped to the next January.
    schedule = CronSchedule("30 2 * * *", "America/New_York", "seed")
    assert schedule.next_after(_utc("2026-03-08T06:00:00Z")) == _utc("2026-03-08T03:00:00-04:00")


def test_it_never_fires_a_weekly_job_a_week_late() -> None:
    # cronie#218: a 23-hour day must not push the next Sunday fire out by a week.
    for zone, sunday in (("Europe/Berlin", "2026-03-29"), ("America/New_York", "2026-03-08")):
        for expression in ("0 12 * * 0", "30 2 * * 0", "0 0 * * 0"):
            schedule = CronSchedule(expression, zone, "seed")
            t = _utc(f"{sunday}T00:00:00Z") - timedelta(days=8)
            fires = _fires(schedule, t, 3)
            assert [f.astimezone(ZoneInfo(zone)).date().isoformat() for f in fires][1] == sunday
            assert all(
                timedelta(days=7) - timedelta(hours=1) <= b - a <= timedelta(days=7, hours=1)
                for a, b in pairwise(fires)
            )


@pytest.mark.parametrize(
    "case",
    _load("dst_2026.json")["cases"],
    ids=lambda case: f"{case['zone']} {case['expression']} {case['after'][:10]}",
)
def test_it_matches_golden_dst_fires(case: dict[str, Any]) -> None:
    schedule = CronSchedule(case["expression"], case["zone"], "seed")
    expected = [_utc(text) for text in case["fires"]]
    assert _fires(schedule, _utc(case["after"]), len(expected)) == expected
    # A fresh schedule asked about each instant gives the same answers as a walking one.
    fresh = CronSchedule(case["expression"], case["zone"], "seed")
    previous = [_utc(case["after"]), *expected[:-1]]
    assert [fresh.next_after(t) for t in reversed(previous)] == list(reversed(expected))


def test_golden_dst_fires_follow_the_brute_force_reference() -> None:
    for case in _load("dst_2026.json")["cases"]:
        expected = [_utc(text) for text in case["fires"]]
        got = _reference_fires(case["expression"], case["zone"], _utc(case["after"]), expected[-1])
        assert got == expected, case


_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Cairo",
    "Asia/Kolkata",
    "Pacific/Chatham",
]
_TRANSITIONS_2026 = [
    _utc(text)
    for text in (
        "2026-03-29T01:00:00Z",
        "2026-10-25T01:00:00Z",
        "2026-03-08T07:00:00Z",
        "2026-11-01T06:00:00Z",
        "2026-04-04T15:00:00Z",
        "2026-10-03T15:30:00Z",
        "2026-04-05T03:00:00Z",
        "2026-09-06T04:00:00Z",
        "2026-04-23T22:00:00Z",
        "2026-10-29T21:00:00Z",
        "2026-04-05T14:00:00Z",
        "2026-09-26T14:00:00Z",
    )
]
_PROPERTY_TERMS = {
    0: ["0", "30", "0,30", "*/15", "*/7", "5-10", "59", "H", "H/20"],
    1: ["*", "*", "*/2", "*/5", "2", "1,2,3", "0-3", "23", "0", "1-3/2", "H", "H/5"],
    2: ["*", "*", "*", "1", "*/2", "15,28", "H"],
    3: ["*", "*", "*", "3,4,9,10,11", "H"],
    4: ["*", "*", "*", "0", "1-5", "H", "*/2"],
}


@st.composite
def _instants(draw: st.DrawFn) -> datetime:
    if draw(st.booleans()):
        base = draw(st.sampled_from(_TRANSITIONS_2026))
        return base + timedelta(seconds=draw(st.integers(-3 * 86400, 86400)))
    seconds = draw(st.integers(946684800, 2145916800))  # 2000-01-01 .. 2038-01-01
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=draw(st.integers(0, 999)))


@settings(max_examples=60, deadline=None)
@given(
    terms=st.tuples(*(st.sampled_from(_PROPERTY_TERMS[i]) for i in range(5))),
    zone=st.sampled_from(_ZONES),
    t=_instants(),
    seed=st.sampled_from(["a/cron", "b/cron", "c/cron"]),
)
def test_it_walks_forward_and_agrees_with_a_minute_scan(
    terms: tuple[str, ...], zone: str, t: datetime, seed: str
) -> None:
    schedule = CronSchedule(" ".join(terms), zone, seed)
    fires = _fires(schedule, t, 50)
    assert fires[0] > t
    assert all(a < b for a, b in pairwise(fires))
    assert all(f.tzinfo is UTC for f in fires)
    until = min(t + timedelta(days=2), fires[-1])
    reference = _reference_fires(schedule.resolved, zone, t, until)
    assert [f for f in fires if f <= until] == reference
    if len(reference) < len(fires):
        assert fires[len(reference)] > until
    # Out-of-order questions to another instance give the same answers as the walk.
    other = CronSchedule(" ".join(terms), zone, seed)
    assert [other.next_after(f) for f in reversed(fires[:-1])] == list(reversed(fires[1:]))


def _fires(schedule: CronSchedule, t: datetime, count: int) -> list[datetime]:
    fires = []
    for _ in range(count):
        t = schedule.next_after(t)
        fires.append(t)
    return fires


# A brute-force oracle independent of croniter and of the window logic: walk every UTC minute,
# match the wall-clock time, and apply the documented policy literally.

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {m: i for i, m in enumerate(_MONTH_NAMES, 1)},
    {d: i for i, d in enumerate(_DAY_NAMES)},
)


def _expand(text: str, index: int) -> set[int]:
    low, high = _BOUNDS[index]

    def number(token: str) -> int:
        return int(token) if token.isdigit() else _NAMES[index][token.lower()]

    values: set[int] = set()
    for term in text.split(","):
        body, _, step = term.partition("/")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            start, end = (number(part) for part in body.split("-"))
        else:
            start = end = number(body)
        values.update(range(start, end + 1, int(step or 1)))
    return {0 if index == 4 and v == 7 else v for v in values}


def _reference_fires(resolved: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    texts = resolved.split()
    minutes, hours, doms, months, dows = (_expand(text, i) for i, text in enumerate(texts))
    day_or = not texts[2].startswith("*") and not texts[4].startswith("*")
    fixed = "*" not in texts[1] and "/" not in texts[1]
    tz = ZoneInfo(zone)

    def matches(wall: datetime) -> bool:
        if wall.minute not in minutes or wall.hour not in hours or wall.month not in months:
            return False
        dom, dow = wall.day in doms, wall.isoweekday() % 7 in dows
        return (dom or dow) if day_or else (dom and dow)

    fires = []
    u = (math.floor(after.timestamp()) // 60 + 1) * 60
    previous = datetime.fromtimestamp(u - 60, tz).replace(tzinfo=None, fold=0)
    while u <= until.timestamp():
        local = datetime.fromtimestamp(u, tz)
        wall = local.replace(tzinfo=None, fold=0)
        fire = matches(wall) and not (fixed and local.fold == 1)
        skipped = previous + timedelta(minutes=1)
        while fixed and not fire and skipped < wall:
            fire = matches(skipped)
            skipped += timedelta(minutes=1)
        if fire:
            fires.append(datetime.fromtimestamp(u, UTC))
        previous = wall
        u += 60
    return fires


# --- EverySchedule -----------------------------------------------------------------------------


def test_it_aligns_intervals_to_the_epoch() -> None:
    every = EverySchedule(300)
    t = datetime(2026, 5, 1, 10, 2, 30, tzinfo=UTC)
    assert every.next_after(t) == datetime(2026, 5, 1, 10, 5, tzinfo=UTC)
    assert every.next_after(datetime(2026, 5, 1, 10, 5, tzinfo=UTC)) == datetime(
        2026, 5, 1, 10, 10, tzinfo=UTC
    )
    before = datetime(2026, 5, 1, 10, 5, tzinfo=UTC) - timedelta(microseconds=1)
    assert every.next_after(before) == datetime(2026, 5, 1, 10, 5, tzinfo=UTC)


def test_it_shifts_intervals_by_the_offset_and_wraps_long_offsets() -> None:
    t = datetime(2026, 5, 1, 10, 2, 30, tzinfo=UTC)
    assert EverySchedule(3600, 90).next_after(t) == datetime(2026, 5, 1, 11, 1, 30, tzinfo=UTC)
    assert EverySchedule(3600, 3690).next_after(t) == datetime(2026, 5, 1, 11, 1, 30, tzinfo=UTC)
    day = EverySchedule(86400, 7200)
    assert day.next_after(t) == datetime(2026, 5, 2, 2, 0, tzinfo=UTC)


def test_it_ignores_the_zone_of_the_instant_for_intervals() -> None:
    t = datetime(2026, 5, 1, 12, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    fire = EverySchedule(60).next_after(t)
    assert fire == datetime(2026, 5, 1, 10, 3, tzinfo=UTC)
    assert fire.tzinfo is UTC


@given(
    every=st.integers(1, 7 * 86400),
    offset=st.integers(0, 10 * 86400),
    t=st.datetimes(datetime(1971, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_it_returns_the_next_aligned_instant(every: int, offset: int, t: datetime) -> None:
    fire = EverySchedule(every, offset).next_after(t)
    assert t < fire <= t + timedelta(seconds=every)
    assert (fire - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() % every == offset % every


@pytest.mark.parametrize(
    ("every", "offset", "field"),
    [
        (0, 0, "every"),
        (-5, 0, "every"),
        (math.nan, 0, "every"),
        (True, 0, "every"),
        (60, -1, "offset"),
        (60, math.inf, "offset"),
    ],
)
def test_it_rejects_bad_intervals(every: float, offset: float, field: str) -> None:
    with pytest.raises(SpecError) as info:
        EverySchedule(every, offset)
    assert info.value.field == field


# --- parse_duration and spread_offset ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        (" 2W ", 1209600.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("90", 90.0),
        ("0", 0.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_it_parses_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text, field="every") == seconds


@pytest.mark.parametrize(
    "text", ["", "abc", "5x", "m5", "-5", "-5m", "1h-30m", "nan", "inf", -1, math.inf, True, None]
)
def test_it_rejects_junk_durations_naming_the_field(text: Any) -> None:
    with pytest.raises(SpecError) as info:
        parse_duration(text, field="catchup_window")
    assert info.value.field == "catchup_window"


def test_it_spreads_a_seed_stably_within_the_interval() -> None:
    digest = hashlib.sha256(b"nightly-report/nightly").digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64 * 600
    assert spread_offset("nightly-report/nightly", 600) == expected
    assert spread_offset("nightly-report/nightly", 0) == 0.0
    offsets = [spread_offset(f"wf-{i}/cron", 60) for i in range(2000)]
    assert all(0 <= o < 60 for o in offsets)
    assert len({int(o) for o in offsets}) == 60
