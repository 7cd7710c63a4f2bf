"""The dashboard's fleet and density pages over HTTP from a real daemon (loopback, no token),
on SQLite and PostgreSQL: the fleet page is a page of the store from the first request on,
and fire density after a deploy, an update, a pause and an undeploy equals a full recount of
the store (``wfsched density``)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, wait_for

SPEC = """id = "{id}"
name = "{name}"
[[triggers]]
type = "cron"
{trigger_id}cron = "{cron}"
[[triggers]]
type = "manual"
id = "go"
"""
FLEET = [
    ("nightly-report", "Nightly Report", "0 9 * * *", "schedule"),
    ("billing-sync", "Billing sync", "*/15 * * * *", "schedule"),
    ("spread-out", "Hashed", "H 9 * * *", "schedule"),
    # Its id is "cron"; it resolves to 0 9, so only the expression as written tells it apart.
    ("no-id", "A cron without an id", "H(0-0) 9 * * *", None),
    *[(f"team-{i}", f"Team {i} digest", "0 9 * * *", "schedule") for i in range(4)],
]

pytestmark = pytest.mark.slow


def _write(tmp: Path, workflow_id: str, name: str, cron: str, trigger_id: str | None) -> str:
    path = tmp / f"{workflow_id}.toml"
    tid = f'id = "{trigger_id}"\n' if trigger_id else ""
    path.write_text(SPEC.format(id=workflow_id, name=name, cron=cron, trigger_id=tid))
    return str(path)


def _armed(d: Daemon) -> int:
    return int(d.get("/api/v1/triggers/health").json()["timers"])


def _fleet(d: Daemon, query: str = "") -> tuple[list[str], str]:
    page = d.get("/ui/" + query)
    assert page.status_code == 200, page.text
    ids = re.findall(r'href="/ui/workflows/([^"?]+)"', page.text)
    return list(dict.fromkeys(ids)), page.text


def _density_page(d: Daemon) -> dict[str, Any]:
    """The page's trigger and fire totals and its peak rows (expression, triggers, rewrite)."""
    text = d.get("/ui/density").text
    head = re.search(r"(\d+) active time triggers? fire (\d+) times?", text)
    assert head, text
    rows = re.findall(
        r"<td><code>([^<]*)</code></td>\s*<td>(\d+)</td>\s*<td>(?:<code>([^<]*)</code>|-)</td>",
        text,
    )
    peaks = sorted({(html.unescape(e), int(n), html.unescape(s) or None) for e, n, s in rows})
    return {"triggers": int(head[1]), "fires": int(head[2]), "peaks": peaks}


def _recount(d: Daemon) -> dict[str, Any]:
    """``wfsched density`` reads every deployment from the store: the full recount."""
    report = d.cli_json("density")
    peaks = sorted(
        {
            (e["expression"], e["triggers"], e["suggestion"])
            for p in report["peaks"]
            for e in p["expressions"]
        }
    )
    return {"triggers": report["triggers"], "fires": report["fires"], "peaks": peaks}


def _same_density(d: Daemon) -> bool:
    # Both read "now": a minute turning between the two reads changes the window, so poll.
    return _density_page(d) == _recount(d)


def test_fleet_and_density_follow_every_change(
    tmp_path: Path, store_url: str, request: pytest.FixtureRequest
) -> None:
    with Daemon(tmp_path / "w", env={"DATABASE_URL": store_url}) as d:
        d.cli("deploy", *(_write(tmp_path, *w) for w in FLEET))
        # The fleet page reads the store: every deployment, before any trigger is armed.
        ids, text = _fleet(d)
        assert ids == sorted(w[0] for w in FLEET)
        assert "8 workflows · page 1 of 1" in text
        ids, text = _fleet(d, "?q=REPORT")
        assert ids == ["nightly-report"] and "1 workflow matching" in text
        assert _fleet(d, "?q=digest")[0] == [f"team-{i}" for i in range(4)]
        assert _fleet(d, "?q=%25")[0] == []  # "%" is a character, not a wildcard
        wait_for(lambda: _armed(d) == len(FLEET), message="every cron armed")
        wait_for(lambda: _same_density(d), message="density equal to the recount")
        first = _density_page(d)
        assert first["triggers"] == 8
        assert ("0 9 * * *", 5, "H 9 * * *") in first["peaks"]
        assert ("H(0-0) 9 * * *", 1, None) in first["peaks"]  # found by its default id

        # An update (a new schedule), an update that keeps the schedule (the timer keeps the
        # trigger armed as it was; only the expression as written changes), a pause and an
        # undeploy: the tallies of the changed groups only are made again.
        d.cli("deploy", _write(tmp_path, "team-0", "Team 0 digest", "30 9 * * *", "schedule"))
        d.cli("deploy", _write(tmp_path, "team-3", "Team 3 digest", "H(0-0) 9 * * *", "schedule"))
        d.cli("pause", "team-1")
        d.cli("undeploy", "team-2")
        wait_for(lambda: _armed(d) == len(FLEET) - 2, message="pause and undeploy disarmed")
        wait_for(lambda: _same_density(d), message="density equal to the recount")
        after = _density_page(d)
        assert after["triggers"] == 6
        assert ("0 9 * * *", 1, "H 9 * * *") in after["peaks"]
        assert ("H(0-0) 9 * * *", 2, None) in after["peaks"]
        assert ("30 9 * * *", 1, "H 9 * * *") in after["peaks"]

        # Resume: armed again, counted again.
        d.cli("resume", "team-1")
        wait_for(lambda: _armed(d) == len(FLEET) - 1, message="resume re-armed")
        wait_for(lambda: _same_density(d), message="density equal to the recount")
        assert _density_page(d)["triggers"] == 7
        assert _fleet(d)[0] == sorted(w[0] for w in FLEET if w[0] != "team-2")
