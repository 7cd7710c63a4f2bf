"""Configuration: lookup order, environment overrides, secrets, validation, init text."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from wfsched.config import load_settings, resolve_secret
from wfsched.config.table import SETTINGS, default_config_text
from wfsched.errors import ConfigError
from wfsched.plugins import configure, load_registry

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = load_registry(None).settings
"""The settings the installed plugins declare (the built-in trigger types' sections)."""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for setting in (*SETTINGS, *BUILTIN):
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.delenv("WFSCHED_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def test_it_uses_the_embedded_defaults_without_file_or_environment() -> None:
    s = load_settings()
    assert s.path is None
    assert (s.store_url, s.locks_url, s.host, s.port) == (
        "sqlite:///wfsched.db",
        "",
        "127.0.0.1",
        8003,
    )
    assert s.get("dispatch.mode") == "log"
    assert (s.get("dispatch.retry_base"), s.get("dispatch.retry_max")) == (1.0, 300.0)


def test_lookup_order_is_flag_then_variable_then_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wfsched.toml").write_text("[server]\nport = 1001\n")
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 1002\n")
    flag = tmp_path / "flag.toml"
    flag.write_text("[server]\nport = 1003\n")
    assert load_settings().port == 1001
    monkeypatch.setenv("WFSCHED_CONFIG", str(other))
    assert load_settings().port == 1002
    assert load_settings(str(flag)).port == 1003


def test_the_seed_variable_names_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wfsched.toml").write_text('[store]\nurl = "sqlite:///a.db"\n')
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("SCHEDULER_MAX_WORKERS", "4")
    monkeypatch.setenv("EMAIL_CHECK_INTERVAL", "30")
    s = configure().settings
    assert s.store_url == "postgresql://db/x"
    assert s.locks_url == "redis://r:6379/0"
    assert s.get("scheduler.max_workers") == 4
    assert s.get("email.check_interval") == 30.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[server]\nprot = 1\n", "did you mean 'port'"),
        ("[sever]\nport = 1\n", "did you mean 'server'"),
        ("[server]\nport = 'x'\n", "server.port"),
        ("[dispatch]\nmode = 'smtp'\n", "dispatch.mode"),
        ("[dispatch]\nmode = 'engine'\n", "engine_url"),
        ("[dispatch]\nmode = 'cloudevents'\n", "dispatch.cloudevents_url"),
        ("[dispatch]\nmode = 'engine'\nengine_url = 'ftp://x'\n", "dispatch.engine_url"),
        ("[dispatch]\nmode = 'notify'\n", "notify.smtp_url"),
        ("[dispatch]\nretry_base = 'soon'\n", "dispatch.retry_base"),
        ("[store]\nurl = 'mysql://x'\n", "store.url"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_it_refuses_bad_config_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "wfsched.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        configure()  # dispatch.mode names a target: checked once the plugins are loaded
    assert needle in str(err.value)


def test_environment_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ConfigError, match="environment PORT"):
        load_settings()


def test_secret_references_resolve_from_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    (tmp_path / "key").write_text("from-file\n")
    assert resolve_secret("env:MY_TOKEN") == "s3cret"
    assert resolve_secret(f"file:{tmp_path / 'key'}") == "from-file"
    assert resolve_secret("literal") == "literal"
    with pytest.raises(ConfigError, match="NOPE"):
        resolve_secret("env:NOPE")
    (tmp_path / "wfsched.toml").write_text('[server]\napi_token = "env:MY_TOKEN"\n')
    s = load_settings()
    assert s.get("server.api_token") == "env:MY_TOKEN"
    assert s.secret("server.api_token") == "s3cret"


def test_init_text_is_valid_toml_equal_to_the_defaults() -> None:
    text = default_config_text(BUILTIN)
    data = tomllib.loads(text)
    assert data["server"]["port"] == 8003
    assert data["store"]["url"] == "sqlite:///wfsched.db"
    assert data["email"]["port"] == 993
    for setting in (*SETTINGS, *BUILTIN):
        assert setting.env in text
    (Path.cwd() / "wfsched.toml").write_text(text)
    assert configure().settings.sections == load_settings(declared=BUILTIN).sections


def test_every_setting_is_documented_in_the_readme_and_spec_keys_exist() -> None:
    """The core's settings and the built-in trigger types' sections, which they declare
    through the plugin hook, are all in README's table (and nothing else is)."""
    readme = (ROOT / "README.md").read_text()
    spec_keys = set(re.findall(r"\| `([a-z_]+\.[a-z_]+)`", readme))
    builtin = [s for s in BUILTIN if s.section in {"email", "github"}]
    assert {s.section for s in builtin} == {"email", "github"}
    names = {s.name for s in (*SETTINGS, *builtin)}
    for setting in (*SETTINGS, *builtin):
        assert f"| `{setting.name}` | `{setting.env}` |" in readme, f"{setting.name} not in README"
    assert spec_keys <= names


def test_the_example_plugin_documents_its_section() -> None:
    readme = (ROOT / "examples" / "http-poll-plugin" / "README.md").read_text()
    declared = [s for s in BUILTIN if s.section == "http_poll"]
    if not declared:
        pytest.skip("wfsched-http-poll is not installed (scripts/test installs it)")
    for setting in declared:
        assert f"| `{setting.name}` | `{setting.env}` |" in readme, setting.name


def test_the_repository_demo_config_is_the_embedded_default() -> None:
    s = configure(str(ROOT / "wfsched.toml")).settings
    assert s.store_url == f"sqlite:///{ROOT.resolve().as_posix()}/wfsched.db"
    assert s.get("dispatch.mode") == "log"
    assert s.locks_url == ""


def test_relative_paths_in_a_config_file_resolve_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc" / "wfsched.toml"
    conf.parent.mkdir()
    conf.write_text(
        '[store]\nurl = "sqlite:///data/w.db"\n[github]\nprivate_key = "file:key.pem"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = configure(str(conf)).settings
    folder = conf.parent.resolve()
    assert s.store_url == f"sqlite:///{folder.as_posix()}/data/w.db"
    assert s.get("plugins.dir") == str(folder / "plugins")  # the default, anchored too
    assert s.get("github.private_key") == f"file:{folder / 'key.pem'}"
    # The environment keeps meaning the current folder; no config file: the current folder.
    monkeypatch.setenv("DATABASE_URL", "sqlite:///here.db")
    assert configure(str(conf)).settings.store_url == "sqlite:///here.db"
    monkeypatch.delenv("DATABASE_URL")
    assert load_settings().store_url == "sqlite:///wfsched.db"


def test_trusted_proxies_are_networks_and_a_bad_one_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wfsched.toml").write_text(
        '[server]\ntrusted_proxies = ["10.0.0.1", "192.168.0.0/16"]\n'
    )
    nets = load_settings().trusted_proxies
    assert [str(n) for n in nets] == ["10.0.0.1/32", "192.168.0.0/16"]
    monkeypatch.setenv("WFSCHED_TRUSTED_PROXIES", "10.0.0.0/8, nope")
    with pytest.raises(ConfigError, match="WFSCHED_TRUSTED_PROXIES.*nope"):
        load_settings()


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ("env", "environment SCHEDULER_TIMEZONE: scheduler.timezone = 'Mars/x': unknown IANA"),
        ("file", "wfsched.toml: scheduler.timezone = 'Mars/x': unknown IANA"),
    ],
)
def test_an_unknown_time_zone_is_refused_at_load_naming_key_and_origin(
    tmp_path: Path, where: str, needle: str
) -> None:
    path = tmp_path / "wfsched.toml"
    path.write_text('[scheduler]\ntimezone = "Mars/x"\n' if where == "file" else "")
    environ = {"SCHEDULER_TIMEZONE": "Mars/x"} if where == "env" else {}
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_settings(str(path), environ=environ)


def test_cross_key_errors_name_the_origin_and_an_engine_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="environment WORKFLOW_ENGINE_URL: dispatch.engine_url"):
        load_settings(environ={"WORKFLOW_ENGINE_URL": "ftp://engine"})
    # The engine target checks what it needs when the plugins are loaded with the config.
    from wfsched.plugins import configure

    with pytest.raises(ConfigError, match="environment WFSCHED_DISPATCH_MODE: dispatch.mode"):
        configure(None, environ={"WFSCHED_DISPATCH_MODE": "engine"})


def test_init_text_lists_plugin_sections_in_one_order_whatever_the_load_order() -> None:
    """Entry points load in no fixed order; the file ``wfsched init`` writes must not vary."""
    sections = list(dict.fromkeys(s.section for s in BUILTIN))
    assert len(sections) > 1
    other_order = [s for section in reversed(sections) for s in BUILTIN if s.section == section]
    assert default_config_text(BUILTIN) == default_config_text(other_order)
