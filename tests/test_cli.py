"""The CLI end to end as a subprocess, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon

SPEC = """id = "nightly"
name = "Nightly report"
[[triggers]]
type = "manual"
id = "go"
require_confirmation = false
payload = {{ team = "{team}" }}
"""


@pytest.fixture
def cli(tmp_path: Path, store_url: str) -> Daemon:
    return Daemon(tmp_path / "w", env={"DATABASE_URL": store_url})


def write_spec(tmp_path: Path, team: str = "ops") -> Path:
    path = tmp_path / "nightly.toml"
    path.write_text(SPEC.format(team=team))
    return path


def test_the_deploy_round_trip(cli: Daemon, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    assert cli.cli_json("deploy", str(spec)) == [{"workflow_id": "nightly", "action": "created"}]
    assert cli.cli_json("deploy", str(spec))[0]["action"] == "unchanged"
    [row] = cli.cli_json("list")
    assert (row["workflow_id"], row["name"], row["state"]) == (
        "nightly",
        "Nightly report",
        "active",
    )
    assert row["triggers"] == [{"id": "go", "type": "manual", "state": "active", "next_fire": None}]
    status = cli.cli_json("status", "nightly")
    # No daemon runs: nobody knows how the trigger is doing, and status says so.
    assert status["triggers"][0]["health"] == "unknown"
    assert status["daemon"] == {"running": False, "last_seen": None, "replicas": []}
    assert status["pending"] == {"count": 0, "since": None}
    assert {"last_event", "last_error", "health"} <= set(status["triggers"][0])
    exported = cli.cli("export", "nightly").stdout
    again = tmp_path / "again.toml"
    again.write_text(exported)
    assert cli.cli_json("deploy", str(again))[0]["action"] == "unchanged"
    (tmp_path / "v2").mkdir()
    changed = write_spec(tmp_path / "v2", "data")
    assert cli.cli_json("deploy", "--dry-run", str(changed))[0]["action"] == "updated"
    assert "data" not in cli.cli("export", "nightly").stdout
    assert cli.cli_json("deploy", str(changed))[0]["action"] == "updated"
    assert "data" in cli.cli("export", "nightly").stdout
    cli.cli("pause", "nightly")
    assert cli.cli_json("list")[0]["state"] == "paused"
    assert cli.cli_json("list")[0]["triggers"][0]["state"] == "paused"
    cli.cli("resume", "nightly")
    assert cli.cli_json("list")[0]["state"] == "active"
    cli.cli("undeploy", "nightly")
    assert cli.cli_json("list") == []


def test_unknown_workflows_exit_1(cli: Daemon) -> None:
    for args in (
        ["status", "ghost"],
        ["undeploy", "ghost"],
        ["pause", "ghost"],
        ["export", "ghost"],
        ["trigger", "ghost", "--yes"],
        ["history", "ghost"],
    ):
        result = cli.cli(*args, check=False)
        assert result.returncode == 1, args
        assert "ghost" in result.stderr


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("type.toml", 'id = "x"\n[[triggers]]\ntype = "nope"\n', "unknown trigger type"),
        ("key.toml", 'id = "x"\n[[triggers]]\ntype = "manual"\nconfirm = true\n', "confirm"),
        ("missing.toml", 'name = "x"\n', "'id'"),
        ("badid.toml", 'id = "no spaces"\n', "'id'"),
        ("bad.json", '{"id": ', "invalid JSON"),
        ("bad.toml", 'id = "x\n', "invalid TOML"),
    ],
)
def test_invalid_specs_exit_2_and_deploy_nothing(
    cli: Daemon, tmp_path: Path, name: str, text: str, needle: str
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(specs)
    (specs / name).write_text(text)
    result = cli.cli("deploy", str(specs), check=False)
    assert result.returncode == 2
    assert name in result.stderr and needle in result.stderr
    assert cli.cli_json("list") == []


def test_manual_trigger_records_data_and_user(cli: Daemon, tmp_path: Path) -> None:
    cli.cli("deploy", str(write_spec(tmp_path)))
    data = tmp_path / "data.json"
    data.write_text('{"day": "2026-11-28"}')
    result = cli.cli_json("trigger", "nightly", "--data", f"@{data}")
    assert result["workflow_id"] == "nightly" and result["status"] == "pending"
    [event] = cli.cli_json("history", "nightly")
    assert event["execution_id"] == result["execution_id"]
    assert event["payload"]["data"] == {"day": "2026-11-28"}
    assert event["payload"]["team"] == "ops"
    assert event["payload"]["user"]
    assert cli.cli("trigger", "nightly", "--data", "{bad", check=False).returncode == 2
    refused = cli.cli("redeliver", result["execution_id"], check=False)
    assert refused.returncode == 1 and "only failed events" in refused.stderr


def test_confirmation_without_a_terminal_exits_2_and_fires_nothing(
    cli: Daemon, tmp_path: Path
) -> None:
    spec = tmp_path / "c.toml"
    spec.write_text('id = "careful"\n[[triggers]]\ntype = "manual"\n')
    cli.cli("deploy", str(spec))
    result = cli.cli("trigger", "careful", check=False, input="")
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert cli.cli_json("history") == []
    assert cli.cli("trigger", "careful", "--yes").stdout.strip()
    assert len(cli.cli_json("history")) == 1


def test_init_writes_a_config_and_refuses_to_overwrite(cli: Daemon) -> None:
    cli.cli("init")
    assert "[store]" in (cli.workdir / "wfsched.toml").read_text()
    result = cli.cli("init", check=False)
    assert result.returncode == 1 and "exists" in result.stderr


def test_check_reports_each_backend(cli: Daemon) -> None:
    report = json.loads(cli.cli("check", "--json").stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"store", "locks", "plugins"}


def test_an_unreachable_store_exits_1(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    result = d.cli("list", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_plugins_lists_builtins_with_their_source(cli: Daemon) -> None:
    rows = cli.cli_json("plugins")
    manual = {"type": "manual", "source": "builtin", "module": "wfsched.triggers.manual"}
    assert {**manual, "kind": "trigger"} in rows
    targets = {r["type"] for r in rows if r["kind"] == "dispatch-target"}
    assert {"log", "engine", "notify", "cloudevents", "github-actions"} <= targets
    for row in rows:
        if row["type"] in ("log", "engine", "notify", "cloudevents"):
            assert row == {
                "type": row["type"],
                "kind": "dispatch-target",
                "source": "builtin",
                "module": "wfsched.dispatch.targets",
            }
