"""``status`` tells the truth: a fixed problem clears within a heartbeat (a restart with the
missing GitHub App key, a redeploy that fixes a plugin trigger's folder), and a time trigger
that should have fired is ``late``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.github_harness import (  # noqa: F401 - fixtures
    SECRET,
    github_env,
    key_path_fixture,
    key_pem_fixture,
    standin_fixture,
)
from tests.github_standin import GitHubStandIn

pytestmark = pytest.mark.slow

FOLDER_PLUGIN = """
import os
import anyio
from wfsched import BaseTrigger, hookimpl

class FolderTrigger(BaseTrigger):
    type = "folder"
    has_run = True

    @classmethod
    def validate(cls, config):
        return {"path": str(config["path"])}

    async def run(self):
        if os.path.isdir(self.config["path"]):
            self.ctx.report_health("healthy")
        else:
            self.ctx.report_health("failing", f"folder {self.config['path']} does not exist")
        await anyio.sleep_forever()

@hookimpl
def register_trigger_types(register):
    register(FolderTrigger)
"""


def _trigger(d: Daemon, workflow_id: str) -> dict[str, Any]:
    trigger: dict[str, Any] = d.cli_json("status", workflow_id)["triggers"][0]
    return trigger


def _health(d: Daemon, workflow_id: str, health: str) -> dict[str, Any]:
    return wait_for(
        lambda: (t := _trigger(d, workflow_id))["health"] == health and t,
        15,
        interval=0.3,
        message=f"{workflow_id} {health} in wfsched status",
    )


def test_a_github_trigger_fixed_by_a_restart_with_the_key_clears_its_error(
    tmp_path: Path, standin: GitHubStandIn, key_path: Path
) -> None:
    spec = tmp_path / "gh.toml"
    spec.write_text('id = "gh"\n[[triggers]]\ntype = "github"\nfetch_context = true\n')
    without_key = {"GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_API_URL": standin.url}
    d = Daemon(tmp_path / "d", env=without_key)
    d.cli("deploy", str(spec))
    with d:
        degraded = _health(d, "gh", "degraded")
        assert "github.private_key" in degraded["last_error"]
        assert d.stop() == 0
        d.env.update(github_env(standin, key_path))
        for _ in range(3):  # restarted with the key, as many times as the issue saw
            d.start()
            fixed = _health(d, "gh", "healthy")
            assert fixed["last_error"] is None
            assert d.stop() == 0
        assert _trigger(d, "gh")["health"] == "unknown"  # no daemon: nobody knows


def test_a_plugin_trigger_fixed_by_a_redeploy_clears_its_error(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o755)
    (plugins / "folder.py").write_text(FOLDER_PLUGIN)
    (plugins / "folder.py").chmod(0o644)
    spec = tmp_path / "f.toml"
    missing, present = tmp_path / "inbox", tmp_path / "inbox-2"
    present.mkdir()
    with Daemon(tmp_path) as d:
        spec.write_text(f'id = "f"\n[[triggers]]\ntype = "folder"\npath = "{missing}"\n')
        d.cli("deploy", str(spec))
        assert "does not exist" in _health(d, "f", "failing")["last_error"]
        spec.write_text(f'id = "f"\n[[triggers]]\ntype = "folder"\npath = "{present}"\n')
        d.cli("deploy", str(spec))
        assert _health(d, "f", "healthy")["last_error"] is None


def test_a_time_trigger_that_should_have_fired_is_late(tmp_path: Path) -> None:
    spec = tmp_path / "t.toml"
    spec.write_text('id = "t"\n[[triggers]]\ntype = "cron"\nevery = "2s"\n')
    with Daemon(tmp_path, env={"WFSCHED_LATE_AFTER": "1s"}) as d:
        d.cli("deploy", str(spec))
        assert _health(d, "t", "healthy")["next_fire"]
        # The daemon still runs (its heartbeat is fresh) but its timer is frozen.
        assert d.proc is not None
        d.proc.send_signal(signal.SIGSTOP)
        try:
            late = _health(d, "t", "late")
            assert late["last_error"].startswith("due at ")
        finally:
            d.proc.send_signal(signal.SIGCONT)
        _health(d, "t", "healthy")
