"""The CLI with --url: the same command sequence run locally (on the store) and remotely (from
an empty folder, over a daemon's HTTP API alone) gives the same output and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon

TOKEN = "remote-cli-token-0123456789"
SPECS = {
    "nightly.toml": (
        'id = "nightly"\nname = "Nightly [/b] report"\n[[triggers]]\ntype = "manual"\n'
        'id = "go"\nrequire_confirmation = false\n'
        '[[triggers]]\ntype = "cron"\nid = "tick"\ncron = "H 3 * * *"\n'
    ),
    "orders.json": json.dumps(
        {"id": "orders", "name": "dependabot[bot] orders", "triggers": [{"type": "manual"}]}
    ),
}
BAD = 'id = "bad"\n[[triggers]]\ntype = "cron"\ncron = "99 * * * *"\n'
VOLATILE = [
    (re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b"), "<ID>"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"), "<TIME>"),
    (re.compile(r'"user": "[^"]*"'), '"user": "<USER>"'),
    (re.compile(r'"updated_at": "[^"]*"'), '"updated_at": "<TIME>"'),
    # Only the remote side has a daemon, which dispatches (log mode) at once.
    (re.compile(r'"status": "(pending|dispatched)"'), '"status": "<STATUS>"'),
    (re.compile(r'"attempts": \d+'), '"attempts": <N>'),
    (re.compile(r'"(next_attempt_at|dispatched_at)": (null|"<TIME>")'), '"\\1": <T>'),
]


def normal(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def wfsched(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "wfsched", *args],
        cwd=cwd,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, normal(result.stdout), normal(result.stderr)


def session(
    run: Callable[..., tuple[int, str, str]], specs: Path
) -> list[tuple[str, tuple[int, str, str]]]:
    """The command sequence both sessions run; ids of events come from the answers."""
    steps: list[tuple[str, tuple[int, str, str]]] = []

    def step(*args: str) -> tuple[int, str, str]:
        result = run(*args)
        steps.append((" ".join(args), result))
        return result

    step("deploy", str(specs / "nightly.toml"), str(specs / "orders.json"), "--json")
    step("deploy", str(specs / "nightly.toml"), "--dry-run")
    step("deploy", str(specs / "bad"), "--json")
    step("list", "--json")
    step("list")
    step("list", "--limit", "1", "--json")
    step("list", "--state", "paused", "--json")
    step("list", "--q", "DEPENDABOT", "--json")
    step("status", "nightly", "--json")
    step("status", "nowhere", "--json")
    step("status", "nowhere")
    step("export", "nightly")
    step("export", "orders", "--json")
    step("pause", "nightly", "--json")
    step("list", "--state", "paused", "--json")
    step("trigger", "nightly", "--yes", "--json")
    step("resume", "nightly")
    step("trigger", "nightly", "--data", '{"day": 1}', "--yes", "--json")
    step("trigger", "orders", "--json")
    step("history", "--json")
    step("history", "nightly", "--trigger", "go", "--since", "2000-01-01", "--json")
    step("history", "--until", "2000-01-01T00:00:00Z", "--json")
    step("history", "--since", "yesterday", "--json")
    step("history", "nowhere")
    step("redeliver", "01NOSUCHEVENT0000000000000", "--json")
    step("undeploy", "orders", "nowhere")
    step("undeploy", "orders", "--json")
    step("plugins", "--json")
    step("prune", "--dry-run", "--json")
    step("prune", "--older-than", "soon")
    return steps


def _same_port(result: tuple[int, str, str]) -> tuple[int, str, str]:
    code, out, err = result
    return code, re.sub(r"(127\.0\.0\.1|:)\d{2,5}\b", r"\1<PORT>", out), err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_remote_session_answers_as_a_local_one(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    (specs / "bad").mkdir(parents=True)
    for name, text in SPECS.items():
        (specs / name).write_text(text)
    (specs / "bad" / "bad.toml").write_text(BAD)
    base = {k: v for k, v in os.environ.items() if not k.startswith("WFSCHED_")}

    local_dir = tmp_path / "local"
    local = Daemon(local_dir)
    local_env = {**local.env, "USER": "tester"}
    # A daemon runs on both sides, so status, health and list's daemon line agree.
    with local:
        local_steps = session(lambda *a: wfsched(local_dir, local_env, *a), specs)

    daemon = Daemon(tmp_path / "daemon", env={"WFSCHED_API_TOKEN": TOKEN})
    empty = tmp_path / "empty"
    empty.mkdir()
    remote_env = {**base, "WFSCHED_URL": daemon.url, "WFSCHED_API_TOKEN": TOKEN}
    with daemon:
        remote_steps = session(lambda *a: wfsched(empty, remote_env, *a), specs)
    assert list(empty.iterdir()) == [], "the remote session wrote files"

    for (command, mine), (_, theirs) in zip(local_steps, remote_steps, strict=True):
        # The daemons differ only in their port (a replica's id and address).
        assert _same_port(theirs) == _same_port(mine), f"wfsched {command}"
    [remote_list] = [result for command, result in remote_steps if command == "list"]
    assert remote_list[1].startswith("daemon: running (1 replica)")
    codes = {command: result[0] for command, result in local_steps}
    assert codes["status nowhere --json"] == 1
    assert codes["deploy " + str(specs / "bad") + " --json"] == 2
    assert codes["trigger orders --json"] == 2  # confirmation required, no terminal
    assert codes["history --since yesterday --json"] == 2
    errors = dict(local_steps)
    assert json.loads(errors["status nowhere --json"][1]) == {
        "error": "not_found",
        "detail": "workflow 'nowhere' is not deployed",
    }
    assert "Nightly [/b] report" in errors["list"][1]
    assert "dependabot[bot] orders" in errors["list"][1]


def test_remote_errors_are_one_line_and_json_with_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFSCHED_")}
    code, out, err = wfsched(tmp_path, env, "list", "--url", "http://127.0.0.1:9", "--json")
    assert code == 1
    answer = json.loads(out)
    assert answer["error"] == "unreachable" and "127.0.0.1:9" in answer["detail"]
    code, out, err = wfsched(tmp_path, env, "list", "--url", "ftp://x")
    assert code == 2 and err.count("\n") == 1 and "--url" in err
    code, out, err = wfsched(tmp_path, env, "list", "--limit", "0", "--json")
    assert code == 2 and json.loads(out)["error"] == "usage"
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_token_is_refused_with_exit_1(tmp_path: Path) -> None:
    with Daemon(tmp_path / "d", env={"WFSCHED_API_TOKEN": TOKEN}) as daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WFSCHED_")}
        code, out, _ = wfsched(
            tmp_path, env, "list", "--url", daemon.url, "--token", "no", "--json"
        )
        assert code == 1 and json.loads(out)["error"] == "unauthorized"
        code, out, _ = wfsched(
            tmp_path, env, "version", "--url", daemon.url, "--token", TOKEN, "--json"
        )
        assert code == 0 and set(json.loads(out)) == {"version", "server"}
