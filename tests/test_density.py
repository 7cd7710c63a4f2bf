"""Fire density: per-minute counts, peaks with the expressions behind them, the H rewrites,
and ``wfsched density`` on a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon
from wfsched.density import TimeTrigger, density, next_fires, sparkline, suggest_h
from wfsched.schedules.series import cron_series, every_series
from wfsched.trigger import TimerSpec

NOW = datetime(2026, 3, 2, 8, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "suggested"),
    [
        ("0 9 * * *", "H 9 * * *"),
        ("*/15 * * * *", "H/15 * * * *"),
        ("0-59/10 * * * 1-5", "H/10 * * * 1-5"),
        ("0-29/10 * * * *", "H(0-29)/10 * * * *"),
        ("0,30 * * * *", "H/30 * * * *"),
        ("0,15,30,45 8-18 * * *", "H/15 8-18 * * *"),
        ("30 0 1 * *", "H 0 1 * *"),
        ("H 9 * * *", None),
        ("H/15 * * * *", None),
        ("* * * * *", None),
        ("5,17 * * * *", None),
        ("@daily", None),
        ("every 60s", None),
    ],
)
def test_the_h_rewrite_hashes_the_minute_field(expression: str, suggested: str | None) -> None:
    assert suggest_h(expression) == suggested


def cron(
    workflow: str, expression: str, *, seed: str | None = None, spread: float = 0
) -> TimeTrigger:
    series = cron_series(expression, "UTC", seed or f"{workflow}/c")
    return TimeTrigger(workflow, "c", expression, TimerSpec(schedule=series, spread=spread))


def every(workflow: str, seconds: float, offset: float = 0.0) -> TimeTrigger:
    timer = TimerSpec(schedule=every_series(seconds, offset))
    return TimeTrigger(workflow, "e", f"every {seconds:g}s", timer)


def test_counts_per_minute_group_identical_schedules_and_name_the_peak() -> None:
    triggers = [cron(f"w{i}", "0 9 * * *") for i in range(5)] + [cron("q", "*/15 * * * *")]
    d = density(triggers, now=NOW, hours=24)
    assert d.start == datetime(2026, 3, 2, 8, 31, tzinfo=UTC)
    assert len(d.counts) == 24 * 60
    nine = 29  # 09:00 is minute 29 of a window starting 08:31
    assert d.counts[nine] == 6
    assert d.total == 5 + 24 * 4
    assert d.triggers == 6
    peak = d.peaks[0]
    assert (peak.minute, peak.fires) == (datetime(2026, 3, 2, 9, 0, tzinfo=UTC), 6)
    assert [(c.expression, c.triggers, c.suggestion) for c in peak.contributors] == [
        ("0 9 * * *", 5, "H 9 * * *"),
        ("*/15 * * * *", 1, "H/15 * * * *"),
    ]
    assert peak.contributors[0].examples == ("w0/c", "w1/c", "w2/c")
    # The rest of the peaks are the quarter hours, earliest first among equals.
    assert [p.fires for p in d.peaks[1:3]] == [1, 1]
    assert d.peaks[1].minute == datetime(2026, 3, 2, 8, 45, tzinfo=UTC)


def test_h_expressions_spread_out() -> None:
    hashed = [cron(f"w{i}", "H 9 * * *") for i in range(60)]
    d = density(hashed, now=NOW, hours=24)
    assert d.total == 60
    assert d.peaks[0].fires < 10  # 60 triggers over 60 minutes, not one spike


def test_intervals_are_counted_by_arithmetic_exactly() -> None:
    d = density([every("a", 1.0), every("b", 7.0, offset=3.0)], now=NOW, hours=2)
    start = NOW.replace(second=0) + timedelta(minutes=1)
    expected = [0] * 120
    t = start
    while t < start + timedelta(hours=2):
        seconds = int(t.timestamp())
        m = int((t - start).total_seconds() // 60)
        expected[m] += 1 + (1 if (seconds - 3) % 7 == 0 else 0)
        t += timedelta(seconds=1)
    assert list(d.counts) == expected


def test_spread_moves_fires_into_later_minutes() -> None:
    d = density([cron("a", "0 9 * * *", spread=90.0)], now=NOW, hours=2)
    assert d.counts[30] == 1  # 09:01:30
    assert d.total == 1


def test_windows_clip_the_counts() -> None:
    series = cron_series("*/10 * * * *", "UTC", "x")
    timer = TimerSpec(
        schedule=series,
        start_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        end_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    )
    d = density([TimeTrigger("w", "c", "*/10 * * * *", timer)], now=NOW, hours=3)
    assert d.total == 4  # 09:00, 09:10, 09:20, 09:30


def test_next_fires_lists_ten_instants_with_spread() -> None:
    timer = TimerSpec(schedule=cron_series("0 * * * *", "UTC", "x"), spread=30.0)
    fires = next_fires(timer, NOW)
    assert len(fires) == 10
    assert fires[0] == datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)
    assert fires[-1] == datetime(2026, 3, 2, 18, 0, 30, tzinfo=UTC)


def test_sparkline_scales_to_the_maximum() -> None:
    assert sparkline([0, 1, 2, 4], width=4) == " ▂▄█"
    assert sparkline([]) == ""


WORKFLOWS = """id = "{id}"
name = "{id}"
[[triggers]]
type = "cron"
id = "c"
cron = "{cron}"
"""


def test_the_cli_reports_peaks_and_suggestions(tmp_path: Path, store_url: str) -> None:
    cli = Daemon(tmp_path / "w", env={"DATABASE_URL": store_url})
    for i in range(3):
        (tmp_path / f"n{i}.toml").write_text(WORKFLOWS.format(id=f"n{i}", cron="0 9 * * *"))
    (tmp_path / "q.toml").write_text(WORKFLOWS.format(id="q", cron="*/15 * * * *"))
    cli.cli("deploy", *(str(p) for p in sorted(tmp_path.glob("*.toml"))))
    cli.cli("pause", "q")
    report = cli.cli_json("density", "--hours", "24")
    assert report["triggers"] == 3  # the paused workflow does not fire
    assert report["fires"] == 3
    assert len(report["counts"]) == 24 * 60
    [peak] = report["peaks"]
    assert peak["minute"].endswith("T09:00:00Z")
    assert peak["expressions"] == [
        {
            "expression": "0 9 * * *",
            "triggers": 3,
            "suggestion": "H 9 * * *",
            "examples": ["n0/c", "n1/c", "n2/c"],
        }
    ]
    text = cli.cli("density").stdout
    assert "H 9 * * *" in text and "3 time triggers" in text


def test_walks_kept_across_minutes_count_as_a_fresh_walk() -> None:
    """The density page keeps the walked instants and extends them as time passes."""
    from wfsched.density import Walks, density_of, groups_of

    triggers = [
        cron("a", "0 9 * * *"),
        cron("b", "*/15 * * * *"),
        cron("c", "H/5 * * * *", spread=40.0),
        cron("d", "H/5 * * * *"),
        every("e", 7.0, offset=3.0),
    ]
    groups = groups_of(triggers)
    walks = Walks()
    for minutes in (0, 1, 59, 61, 200, 24 * 60 + 5, 10):  # forward, past an hour, and back
        now = NOW + timedelta(minutes=minutes)
        assert density_of(groups, now=now, walks=walks) == density(triggers, now=now)
