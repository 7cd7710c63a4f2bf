"""A plugin's own settings section: declared by a hook, validated at config load, documented.

Plugins here are real files in a real plugins dir, loaded the way every command loads them
(``wfsched.plugins.configure``); the built-in ``email`` and ``github`` sections come through
the same hook, from the trigger packages.
"""

from __future__ import annotations

import json
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_proc import Daemon, wait_for
from tests.test_files import one_error_line
from wfsched.config import load_settings
from wfsched.config.table import SETTINGS
from wfsched.daemon import register_secrets
from wfsched.errors import ConfigError, WfschedError
from wfsched.logs import redact
from wfsched.plugins import configure, load_registry
from wfsched.timer.rearm import environment
from wfsched.web.openapi import document

ACME = """
from wfsched import BaseTrigger, Check, Setting, hookimpl


class AcmeTrigger(BaseTrigger):
    type = "acme"

    @classmethod
    def checks(cls, settings):
        url = settings["acme"]["api_url"]

        async def probe():
            return f"{url} answered"

        return [Check("acme-api", probe)]

    @classmethod
    def openapi_paths(cls):
        return {
            "/api/v1/public/webhooks/acme": {
                "post": {
                    "operationId": "acmeHook",
                    "security": [{}],
                    "responses": {
                        "202": {"description": "Recorded"},
                        "401": {},
                        "404": {"description": "No acme trigger is deployed"},
                    },
                }
            }
        }


@hookimpl
def register_trigger_types(register):
    register(AcmeTrigger)


@hookimpl
def register_settings(register):
    register(Setting("acme", "api_url", "ACME_API_URL", "https://acme.example", "str",
                     "base URL of the Acme API"))
    register(Setting("acme", "retries", "ACME_RETRIES", 3, "int", "attempts per call"))
    register(Setting("acme", "poll", "ACME_POLL", "1m", "duration", "poll period"))
    register(Setting("acme", "token", "ACME_TOKEN", "", "secret", "Acme API token"))
"""


def plugin_dir(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)
    for name, text in files.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
        (folder / f"{name}.py").chmod(0o644)
    return folder


@pytest.fixture
def acme(tmp_path: Path) -> Iterator[Path]:
    """A config file next to a plugins dir holding the ``acme`` plugin."""
    plugin_dir(tmp_path, acme=ACME)
    config = tmp_path / "wfsched.toml"
    config.write_text("")
    yield config


def test_a_plugin_section_is_validated_defaulted_and_overridden_by_its_variable(
    acme: Path,
) -> None:
    acme.write_text('[acme]\nretries = 5\npoll = "90s"\n')
    settings, registry = configure(str(acme), environ={})
    assert "acme" in registry
    assert dict(settings.sections["acme"]) == {
        "api_url": "https://acme.example",
        "retries": 5,
        "poll": 90.0,
        "token": "",
    }
    settings, _ = configure(str(acme), environ={"ACME_RETRIES": "7"})
    assert settings.get("acme.retries") == 7


@pytest.mark.parametrize(
    ("text", "environ", "needles"),
    [
        ("[acme]\nretries = 'x'\n", {}, ["wfsched.toml: acme.retries = 'x'", "integer"]),
        ("[acme]\npoll = 'soon'\n", {}, ["wfsched.toml: acme.poll"]),
        ("", {"ACME_RETRIES": "-1"}, ["environment ACME_RETRIES: acme.retries"]),
        ("[acme]\nretires = 1\n", {}, ["unknown key acme.retires", "did you mean 'retries'"]),
        ("[acmee]\nretries = 1\n", {}, ["unknown section [acmee]", "did you mean 'acme'"]),
    ],
)
def test_a_bad_plugin_section_is_one_error_naming_the_file_or_variable_and_key(
    acme: Path, text: str, environ: dict[str, str], needles: list[str]
) -> None:
    acme.write_text(text)
    with pytest.raises(ConfigError) as err:
        configure(str(acme), environ=environ)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_a_section_no_plugin_declares_is_still_an_error(tmp_path: Path) -> None:
    config = tmp_path / "wfsched.toml"
    config.write_text("[acme]\nretries = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[acme\]"):
        configure(str(config), environ={})


def test_a_bad_core_value_fails_before_any_plugin_is_loaded(tmp_path: Path) -> None:
    plugin_dir(tmp_path, boom="raise RuntimeError('loaded')\n")
    config = tmp_path / "wfsched.toml"
    config.write_text("[server]\nport = 'x'\n")
    with pytest.raises(ConfigError, match="server.port"):
        configure(str(config), environ={})


def test_declared_secrets_are_redacted_from_logs(acme: Path) -> None:
    acme.write_text('[acme]\ntoken = "acme-token-0123456789"\n')
    settings, _ = configure(str(acme), environ={})
    register_secrets(settings)
    assert "acme-token-0123456789" not in redact("calling with acme-token-0123456789")


def test_plugin_settings_shape_the_timer_digest(acme: Path) -> None:
    acme.write_text("")
    first, registry = configure(str(acme), environ={})
    changed, _ = configure(str(acme), environ={"ACME_POLL": "5m"})
    secret, _ = configure(str(acme), environ={"ACME_TOKEN": "x"})
    cls = registry.get("acme")
    assert environment(first, cls) != environment(changed, cls)
    assert environment(first, cls) == environment(secret, cls)  # secrets never enter it


@pytest.mark.parametrize(
    ("declaration", "needle"),
    [
        ('Setting("server", "extra", "ACME_EXTRA", "", "str", "x")', "core section"),
        ('Setting("acme2", "port", "PORT", 1, "int", "x")', "PORT is declared twice"),
        ('Setting("acme2", "n", "ACME2_N", "x", "int", "x")', "default is invalid"),
        ('Setting("acme2", "n", "ACME2_N", "", "text", "x")', "kind 'text'"),
        ('Setting("acme2", "Bad-Key", "ACME2_N", "", "str", "x")', "key 'Bad-Key'"),
        ('Setting("acme", "other", "ACME2_OTHER", "", "str", "x")', "[acme] is declared twice"),
    ],
)
def test_a_bad_declaration_is_an_error_naming_the_plugin(
    tmp_path: Path, declaration: str, needle: str
) -> None:
    other = f"""
        from wfsched import Setting, hookimpl

        @hookimpl
        def register_settings(register):
            register({declaration})
        """
    folder = plugin_dir(tmp_path, acme=ACME, other=other)
    with pytest.raises(WfschedError) as err:
        load_registry(folder)
    assert needle in str(err.value)
    assert str(folder / "other.py") in str(err.value)


def test_the_builtin_sections_come_from_their_trigger_packages(tmp_path: Path) -> None:
    registry = load_registry(None)
    owners = {s.section for s in SETTINGS}
    assert not {"email", "github"} & owners  # the core declares neither
    declared = {s.name: s.env for s in registry.settings}
    assert declared["email.password"] == "EMAIL_PASSWORD"
    assert declared["github.webhook_secret"] == "GITHUB_WEBHOOK_SECRET"
    config = tmp_path / "wfsched.toml"
    config.write_text("[email]\nserver = 'imap.example.com'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[email\]"):
        load_settings(str(config), environ={})  # without the plugins: nobody declares it
    settings, _ = configure(str(config), environ={"IMAP_PORT": "143"})
    assert (settings.get("email.server"), settings.get("email.port")) == ("imap.example.com", 143)


def test_a_types_routes_join_the_openapi_document_with_standard_error_bodies(
    acme: Path,
) -> None:
    _, registry = configure(str(acme), environ={})
    doc = document(t.cls for t in registry.all())
    responses = doc["paths"]["/api/v1/public/webhooks/acme"]["post"]["responses"]
    error = {"$ref": "#/components/schemas/Error"}
    assert responses["401"]["content"]["application/json"]["schema"] == error
    assert responses["401"]["description"].startswith("Missing or wrong credentials")
    assert responses["404"]["description"] == "No acme trigger is deployed"
    assert responses["404"]["content"]["application/json"]["schema"] == error
    assert "/api/v1/public/webhooks/github" in doc["paths"]  # the built-in, the same way
    assert "/api/v1/public/webhooks/acme" not in document()["paths"]


# the commands --------------------------------------------------------------------------------


def test_init_writes_the_plugin_sections_commented(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    plugin_dir(tmp_path, acme=ACME)
    d.cli("init")
    text = (tmp_path / "wfsched.toml").read_text()
    assert "[acme]\n# base URL of the Acme API (env ACME_API_URL)\n" in text
    assert "[email]" in text and "IMAP_SERVER" in text and "GITHUB_WEBHOOK_SECRET" in text
    d.cli("check", "--json")  # the file it wrote is valid, plugin sections included


def test_every_command_refuses_a_bad_plugin_value_with_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    d = Daemon(tmp_path)
    plugin_dir(tmp_path, acme=ACME)
    (tmp_path / "wfsched.toml").write_text("[acme]\nretries = 'many'\n")
    for command in ("check", "plugins", "list", "serve"):
        result = d.cli(command, check=False, timeout=30)
        assert result.returncode == 2, (command, result)
        line = one_error_line(result.stderr)
        assert "wfsched.toml" in line and "acme.retries" in line, line


def test_check_runs_the_checks_of_each_trigger_type(tmp_path: Path) -> None:
    plugin_dir(tmp_path, acme=ACME)
    with socket.socket() as imap:
        imap.bind(("127.0.0.1", 0))
        imap.listen()
        port = imap.getsockname()[1]
        d = Daemon(tmp_path, env={"IMAP_SERVER": "127.0.0.1", "IMAP_PORT": str(port)})
        report = json.loads(d.cli("check", "--json").stdout)
    checks = {c["name"]: c for c in report["checks"]}
    # Without email.user only the server can be reached; with one, check logs in.
    assert checks["imap"] == {
        "name": "imap",
        "ok": True,
        "detail": f"127.0.0.1:{port} reachable (email.user is not set: login not tried)",
    }
    assert checks["acme-api"]["detail"] == "https://acme.example answered"


def test_serve_redacts_a_plugin_secret_it_logs(tmp_path: Path) -> None:
    plugin_dir(
        tmp_path,
        acme=ACME,
        leak="""
        import logging

        import anyio
        from wfsched import BaseTrigger, hookimpl

        class Leak(BaseTrigger):
            type = "leak"
            has_run = True

            async def run(self):
                token = self.ctx.settings("acme")["token"]
                logging.getLogger("wfsched.leak").warning(f"using {token}")
                self.ctx.report_health("healthy")
                await anyio.sleep_forever()

        @hookimpl
        def register_trigger_types(register):
            register(Leak)
        """,
    )
    d = Daemon(tmp_path, env={"ACME_TOKEN": "acme-token-9876543210"})
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "leak.json").write_text(
        json.dumps({"id": "leak", "triggers": [{"type": "leak"}]})
    )
    d.cli("deploy", str(tmp_path / "specs"))
    with d:
        wait_for(lambda: "using " in d.logs(), message="the plugin's log line")
    assert "acme-token-9876543210" not in d.logs()
