"""The rough edges a new user hit: each one a clear line and the right exit code, never a
traceback; user text shown verbatim; ids never cut."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, wait_for


def wfsched(
    cwd: Path, *args: str, env: dict[str, str] | None = None, columns: int = 80
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WFSCHED_")}
    base.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "wfsched", *args],
        cwd=cwd,
        env={**base, "COLUMNS": str(columns), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_list_with_a_config_elsewhere_creates_nothing_here(tmp_path: Path) -> None:
    home, here = tmp_path / "etc", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    (home / "wfsched.toml").write_text('[store]\nurl = "sqlite:///wfsched.db"\n')
    assert wfsched(here, "list", "--config", str(home / "wfsched.toml")).returncode == 0
    assert list(here.iterdir()) == []
    assert (home / "wfsched.db").exists()


def test_init_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    one_line_error(
        wfsched(tmp_path, "init", "--config", "/nonexistent/dir/x.toml"), 2, "/nonexistent/dir"
    )


def test_a_store_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    env = {"DATABASE_URL": "sqlite:///notes.txt"}
    one_line_error(wfsched(tmp_path, "list", env=env), 1, "notes.txt", "not a database")


def test_a_store_folder_that_does_not_exist_is_one_line_and_not_created(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "sqlite:///missing/w.db"}
    one_line_error(wfsched(tmp_path, "list", env=env), 1, "folder missing does not exist")
    assert not (tmp_path / "missing").exists()


def test_serve_on_a_busy_port_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = wfsched(tmp_path, "serve", "--port", str(port))
    one_line_error(result, 1, f"127.0.0.1:{port}", "in use")


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    result = wfsched(tmp_path, "serve", "--port", "83546")
    assert result.returncode == 2 and "--port" in result.stderr
    assert not (tmp_path / "wfsched.db").exists()


@pytest.mark.parametrize("command", [("check",), ("deploy", "specs"), ("serve",)])
def test_an_unknown_time_zone_exits_2_naming_the_key(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "a.toml").write_text('id = "a"\n')
    result = wfsched(tmp_path, *command, env={"SCHEDULER_TIMEZONE": "Mars/x"})
    one_line_error(result, 2, "SCHEDULER_TIMEZONE", "scheduler.timezone", "Mars/x")


def test_a_lone_surrogate_exits_2_naming_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "s.json"
    spec.write_text('{"id": "s", "name": "bad \\ud800", "triggers": [{"type": "manual"}]}')
    result = wfsched(tmp_path, "deploy", str(spec))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "field 'name'" in result.stderr and "surrogate" in result.stderr


def test_version(tmp_path: Path) -> None:
    from wfsched import __version__

    assert wfsched(tmp_path, "--version").stdout.strip() == __version__
    assert json.loads(wfsched(tmp_path, "version", "--json").stdout) == {"version": __version__}


def test_history_keeps_ids_whole_and_text_verbatim_at_80_columns(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "a.toml").write_text(
        'id = "a-rather-long-workflow-identifier"\nname = "dependabot[bot] and [/b] [red]"\n'
        '[[triggers]]\ntype = "manual"\nid = "by-hand"\nrequire_confirmation = false\n'
    )
    assert wfsched(tmp_path, "deploy", str(specs)).returncode == 0
    fired = json.loads(
        wfsched(tmp_path, "trigger", "a-rather-long-workflow-identifier", "--json").stdout
    )
    table = wfsched(tmp_path, "history").stdout
    assert fired["execution_id"] in table
    listed = wfsched(tmp_path, "list", columns=200)
    assert listed.returncode == 0, listed.stderr
    assert "dependabot[bot] and [/b] [red]" in listed.stdout


@pytest.mark.slow
def test_a_missing_secret_is_one_line_per_change_not_a_traceback_per_retry(
    tmp_path: Path,
) -> None:
    daemon = Daemon(tmp_path / "d", env={"WFSCHED_LOG_FORMAT": "json"})
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "hook.toml").write_text(
        'id = "hook"\n[[triggers]]\ntype = "webhook"\n'
        '[triggers.auth]\ntype = "token"\nsecret = "env:WFSCHED_TEST_NEVER_SET"\n'
    )
    daemon.cli("deploy", str(specs))
    with daemon:
        started = time.monotonic()
        wait_for(lambda: "WFSCHED_TEST_NEVER_SET" in daemon.logs(), message="the first report")
        # A watcher retrying after 1 s, 2 s, 4 s would have failed three times by 3.5 s.
        wait_for(
            lambda: (
                time.monotonic() - started > 3.5
                and daemon.cli_json("status", "hook")["triggers"][0]["health"] == "failing"
            ),
            timeout=15,
            message="three attempts",
        )
    lines = [x for x in daemon.log_lines() if "WFSCHED_TEST_NEVER_SET" in json.dumps(x)]
    assert len(lines) == 1, lines
    assert "trigger crashed" not in daemon.logs() and "Traceback" not in daemon.logs()


def _dockerfile_healthcheck() -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
    command = text.split("HEALTHCHECK", 1)[1].split("CMD python -c ", 1)[1].split("\nCMD", 1)[0]
    return [sys.executable, "-c", json.loads(command.strip())]


def test_the_healthchecks_follow_port(tmp_path: Path) -> None:
    """The Dockerfile's HEALTHCHECK and the ECS task definitions' health checks ask /health
    on the port the daemon listens on (PORT)."""
    root = Path(__file__).resolve().parent.parent
    probes = [_dockerfile_healthcheck()]
    for name in ("task-definition.sqlite.json", "task-definition.replicas.json"):
        task = json.loads((root / "examples" / "ecs" / name).read_text())
        [container] = task["containerDefinitions"]
        assert {s["name"] for s in container["secrets"]} >= {"WFSCHED_API_TOKEN"}
        probes.append([sys.executable, *container["healthCheck"]["command"][2:]])
    with Daemon(tmp_path / "d") as daemon:
        for probe in probes:
            env = {**os.environ, "PORT": str(daemon.port)}
            assert subprocess.run(probe, env=env, timeout=30, check=False).returncode == 0
            env["PORT"] = str(daemon.port + 1 if daemon.port < 65535 else daemon.port - 1)
            assert (
                subprocess.run(
                    probe, env=env, timeout=30, check=False, capture_output=True
                ).returncode
                != 0
            )


def test_example_readmes_use_options_where_the_cli_takes_them() -> None:
    """``--config`` belongs to the subcommand (``wfsched --config x check`` fails), each example
    has its own port, and every example folder has a README."""
    import re
    import tomllib

    examples = Path(__file__).resolve().parent.parent / "examples"
    ports = {}
    for folder in sorted(p for p in examples.iterdir() if p.is_dir()):
        readme = (folder / "README.md").read_text()
        assert not re.search(r"wfsched\s+--(config|json|url)", readme), folder.name
        config = folder / "wfsched.toml"
        if config.exists():
            port = tomllib.loads(config.read_text()).get("server", {}).get("port")
            if port is not None:
                ports[folder.name] = port
    assert ports and len(set(ports.values())) == len(ports), ports
    assert 8003 not in ports.values()
