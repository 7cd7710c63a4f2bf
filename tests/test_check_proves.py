"""``wfsched check`` proves what it reports: real logins (Dovecot, aiosmtpd), a GitHub App JWT
the GitHub stand-in accepts, every secret reference resolved, a reachable engine."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.daemon_proc import Daemon, free_port
from tests.dovecot import (
    PASSWORD,
    Dovecot,
    dovecot_fixture,  # noqa: F401 - a fixture
)
from tests.engine_app import EngineThread
from tests.github_harness import (
    APP_ID,
    key_pem_fixture,  # noqa: F401 - a fixture
)
from tests.github_standin import GitHubStandIn

TOKEN = "check-token-0123456789"


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@pytest.fixture(name="smtp")
def smtp_fixture() -> Iterator[int]:
    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == b"smtp-pass"
        return AuthResult(success=ok, handled=False)

    controller = Controller(
        Sink(),
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@pytest.fixture(name="engine")
def engine_fixture() -> Iterator[EngineThread]:
    engine = EngineThread(free_port())
    engine.start()
    try:
        yield engine
    finally:
        engine.close()


def check(cwd: Path, env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "wfsched", "check", "--json", *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.startswith("{"), result.stderr
    return result.returncode, json.loads(result.stdout)


def failures(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_check_logs_in_signs_resolves_and_reaches(
    tmp_path: Path,
    dovecot: Dovecot,
    smtp: int,
    engine: EngineThread,
    key_pem: tuple[bytes, bytes],
) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(key_pem[0])
    user = dovecot.add_user()
    with GitHubStandIn(app_id=APP_ID, public_key=key_pem[1], webhook_secret="s3cret") as github:
        daemon = Daemon(tmp_path / "d")
        env = {
            **daemon.env,
            "IMAP_SERVER": "127.0.0.1",
            "IMAP_PORT": str(dovecot.port),
            "IMAP_SECURITY": "none",
            "EMAIL_USER": user,
            "EMAIL_PASSWORD": "env:CHECK_IMAP_PASSWORD",
            "CHECK_IMAP_PASSWORD": PASSWORD,
            "WFSCHED_DISPATCH_MODE": "notify",
            "WFSCHED_SMTP_URL": f"smtp://bot:smtp-pass@127.0.0.1:{smtp}",
            "WFSCHED_NOTIFY_TO": "ops@example.test",
            "WFSCHED_NOTIFY_FROM": "wfsched@example.test",
            "GITHUB_APP_ID": APP_ID,
            "GITHUB_APP_PRIVATE_KEY": f"file:{key}",
            "GITHUB_WEBHOOK_SECRET": "s3cret",
            "GITHUB_API_URL": github.url,
            "HOOK_SECRET": "hook-secret-value",
        }
        specs = tmp_path / "specs"
        specs.mkdir()
        (specs / "hook.toml").write_text(
            'id = "hook"\n[[triggers]]\ntype = "webhook"\n'
            '[triggers.auth]\ntype = "token"\nsecret = "env:HOOK_SECRET"\n'
            '[[triggers]]\ntype = "cron"\ncron = "H 2 * * *"\ntimezone = "Europe/Berlin"\n'
        )
        daemon.env = env
        daemon.cli("deploy", str(specs))

        code, report = check(daemon.workdir, env)
        assert (code, failures(report)) == (0, {}), report
        names = {c["name"]: c["detail"] for c in report["checks"]}
        assert f"as {user!r}" in names["imap"]
        assert "logged in as 'bot'" in names["smtp"]
        assert "JWT signed and accepted" in names["github"]
        assert github.jwt_claims and str(github.jwt_claims[-1]["iss"]) == APP_ID
        assert "Europe/Berlin" in names["time zones"]
        assert "1 reference(s) resolved" in names["spec secrets"]

        # Over the API: the daemon runs the same checks with its own settings.
        env_api = {**env, "WFSCHED_API_TOKEN": TOKEN}
        daemon.env = env_api
        with daemon:
            code, remote = check(tmp_path, {**env_api, "WFSCHED_URL": daemon.url})
        assert code == 0 and {c["name"] for c in remote["checks"]} == set(names)

        broken = {
            **env,
            "CHECK_IMAP_PASSWORD": "wrong",
            "WFSCHED_SMTP_URL": f"smtp://bot:wrong@127.0.0.1:{smtp}",
            "GITHUB_APP_PRIVATE_KEY": f"file:{tmp_path / 'missing.pem'}",
        }
        broken.pop("HOOK_SECRET")
        result = subprocess.run(
            [sys.executable, "-m", "wfsched", "check"],
            cwd=daemon.workdir,
            env=broken,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
        text = "\n".join(failed)
        # The key is named twice: as a config secret, and by the github check that needs it.
        assert len(failed) == 5, result.stdout
        assert "imap: " in text and "refused" in text
        assert "smtp: " in text and "535" in text
        assert "github: " in text and "missing.pem" in text
        assert "HOOK_SECRET is not set" in text and "trigger 'webhook'" in text

        engine_mode = {**env, "WFSCHED_DISPATCH_MODE": "engine", "WORKFLOW_ENGINE_URL": engine.url}
        code, report = check(daemon.workdir, engine_mode)
        assert (
            code == 0
            and "answered HTTP" in {c["name"]: c["detail"] for c in report["checks"]}["engine"]
        )

    engine.stop()
    code, report = check(daemon.workdir, engine_mode)
    assert code == 1 and "ConnectError" in failures(report)["engine"]
