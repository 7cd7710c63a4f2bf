"""wfsched.toml + environment → frozen Settings, validated eagerly.

Every core setting is declared once in :mod:`wfsched.config.table`, every plugin setting once
by its plugin's ``register_settings`` hook; lookup, environment overrides, ``wfsched init`` and
the docs test read both the same way. Plugin sections are known only once the plugins are
loaded, and the plugins dir is a setting: :func:`read_config` reads the file once,
:meth:`ConfigSource.core` validates the core sections (enough to find the plugins),
:meth:`ConfigSource.settings` validates everything against the plugins' declarations
(``wfsched.plugins.configure`` does the three steps for every command).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wfsched import secretrefs
from wfsched.config.table import SETTINGS, by_section
from wfsched.errors import ConfigError, SpecError
from wfsched.fields import unknown_key_error
from wfsched.schedules.durations import parse_duration
from wfsched.sections import Setting


def resolve_secret(value: str, name: str | None = None) -> str:
    """Resolve an ``env:NAME``/``file:PATH`` reference of setting ``name`` (literals unchanged).

    :func:`wfsched.secretrefs.resolve_secret` does the work; its error becomes a ConfigError
    naming the setting and the reference.
    """
    try:
        return secretrefs.resolve_secret(value)
    except SpecError as exc:
        raise ConfigError(f"{name}: {exc.message}" if name else exc.message) from None


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings, validated; ``sections`` holds plain values by section for plugins."""

    sections: Mapping[str, Mapping[str, Any]]
    path: str | None = None
    declared: tuple[Setting, ...] = SETTINGS
    """Every setting ``sections`` holds: the core's, then the plugins' (secrets, digests)."""
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Where each setting was given (``environment NAME`` or the file), for error messages."""
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def get(self, name: str) -> Any:
        """Return a setting by dotted name (``dispatch.mode``); secrets stay references."""
        section, key = name.split(".", 1)
        return self.sections[section][key]

    def secret(self, name: str) -> str:
        """Return a secret setting with its ``env:``/``file:`` reference resolved."""
        value = self.get(name)
        return resolve_secret(value, name) if value else ""

    @property
    def host(self) -> str:
        return str(self.get("server.host"))

    @property
    def port(self) -> int:
        return int(self.get("server.port"))

    @property
    def store_url(self) -> str:
        return str(self.get("store.url"))

    @property
    def locks_url(self) -> str:
        return str(self.get("locks.url"))

    @property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        """The networks whose forwarding headers (X-Forwarded-For, X-Forwarded-Proto) are believed."""
        return parse_networks(self.get("server.trusted_proxies"))

    @property
    def base_dir(self) -> Path:
        """The folder relative paths resolve against: the config file's, else the current one."""
        return Path(self.path).resolve().parent if self.path else Path.cwd()


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.1, 192.168.0.0/16, ::1"`` → networks (a bare address is a /32 or /128)."""
    nets = []
    for part in value.split(","):
        if part.strip():
            nets.append(ipaddress.ip_network(part.strip(), strict=False))
    return tuple(nets)


def convert(setting: Setting, value: Any, origin: str) -> Any:
    where = f"{origin}: {setting.name}" if origin else setting.name
    kind = setting.kind
    if kind == "int":
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{where} = {value!r}: must be an integer") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where} = {value!r}: must be a non-negative integer")
        if setting.key == "port" and not 0 < value < 65536:
            raise ConfigError(f"{where} = {value!r}: not a TCP port")
        return value
    if kind == "duration":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if kind == "timezone":
        return _time_zone(value, where)
    if kind == "networks" and isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} = {value!r}: must be a string")
    if kind == "networks":
        try:
            parse_networks(value)
        except ValueError as exc:
            raise ConfigError(f"{where} = {value!r}: {exc}") from None
    if kind.startswith("choice:"):
        choices = kind[7:].split(",")
        if value not in choices:
            raise ConfigError(f"{where} = {value!r}: must be one of {', '.join(choices)}")
    return value


def _time_zone(value: Any, where: str) -> str:
    """An IANA zone name this host knows; checked at load, so a typo never reaches a timer."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} = {value!r}: must be an IANA time zone such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where} = {value!r}: unknown IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from None
    return value


def find_config_file(explicit: str | None) -> Path | None:
    """Apply the lookup order: ``--config``, ``$WFSCHED_CONFIG``, ``./wfsched.toml``."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    env = os.environ.get("WFSCHED_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file {path} (from WFSCHED_CONFIG) does not exist")
        return path
    local = Path("wfsched.toml")
    return local if local.is_file() else None


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The config file (parsed once) and the environment, before validation."""

    path: Path | None
    data: Mapping[str, Any]
    environ: Mapping[str, str]

    def core(self) -> Settings:
        """The core sections, validated; sections only a plugin can declare are not read yet.

        Enough to load the plugins (``plugins.dir``) and to fail early on a bad core value.
        """
        return self._build(SETTINGS, strict=False)

    def settings(self, declared: Sequence[Setting] = ()) -> Settings:
        """Every section, validated: the core's and ``declared`` (the plugins' settings).

        A section neither declares is an error with a did-you-mean.
        """
        return self._build((*SETTINGS, *declared), strict=True)

    def _build(self, table: Sequence[Setting], *, strict: bool) -> Settings:
        known = by_section(table)
        origin = str(self.path) if self.path else ""
        sections: dict[str, dict[str, Any]] = {
            name: {k: s.default for k, s in keys.items()} for name, keys in known.items()
        }
        for section, values in self.data.items():
            if section not in known:
                if not strict:
                    continue
                err = unknown_key_error(section, known)
                raise ConfigError(f"{origin}: unknown section [{section}]{_hint(err)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: [{section}] must be a table")
            for key, value in values.items():
                if key not in known[section]:
                    err = unknown_key_error(key, known[section])
                    raise ConfigError(f"{origin}: unknown key {section}.{key}{_hint(err)}")
                sections[section][key] = value
        base = self.path.resolve().parent if self.path is not None else None
        env = self.environ
        origins: dict[str, str] = {}
        for setting in table:
            if setting.env in env:
                sections[setting.section][setting.key] = env[setting.env]
                where = f"environment {setting.env}"
            else:
                where = origin if setting.key in self.data.get(setting.section, {}) else ""
            origins[setting.name] = where
            value = convert(setting, sections[setting.section][setting.key], where)
            if base is not None and setting.env not in env:
                value = _anchor(setting, value, base)
            sections[setting.section][setting.key] = value
        path = str(self.path) if self.path else None
        settings = Settings(sections=sections, path=path, declared=tuple(table), origins=origins)
        _check(settings, origins)
        return settings


def read_config(
    explicit: str | None = None, *, environ: Mapping[str, str] | None = None
) -> ConfigSource:
    """Find and parse the config file (if any); keep the environment for the overrides."""
    env = os.environ if environ is None else environ
    path = find_config_file(explicit)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
    return ConfigSource(path=path, data=data, environ=env)


def load_settings(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    declared: Sequence[Setting] = (),
) -> Settings:
    """Read the config file (if any) and the environment into validated Settings.

    ``declared``: the plugins' settings (``Registry.settings``); without them a plugin's
    section is an unknown section. Commands use ``wfsched.plugins.configure``, which loads
    the plugins the core settings name and passes their declarations here.
    """
    return read_config(explicit, environ=environ).settings(declared)


def _anchor(setting: Setting, value: Any, base: Path) -> Any:
    """Make a relative path written in the config file (or its default) relative to its folder.

    A config file means the same wherever the command runs: ``sqlite:///wfsched.db`` and
    ``plugins.dir = "plugins"`` next to ``/etc/wfsched/wfsched.toml`` are
    ``/etc/wfsched/wfsched.db`` and ``/etc/wfsched/plugins``, not files in the current
    folder. Environment values keep their meaning for the process (the current folder).
    """
    if not isinstance(value, str) or not value:
        return value
    if setting.name == "store.url" and value.startswith("sqlite:///"):
        rest = value[len("sqlite:///") :]
        location, sep, query = rest.partition("?")
        if location and location != ":memory:" and not Path(location).is_absolute():
            return f"sqlite:///{(base / location).as_posix()}{sep}{query}"
        return value
    if setting.name == "plugins.dir" and not Path(value).expanduser().is_absolute():
        return str(base / value)
    if setting.kind == "secret" and value.startswith("file:"):
        target = Path(value[5:]).expanduser()
        return value if target.is_absolute() else f"file:{base / target}"
    return value


def _hint(err: Exception) -> str:
    text = str(err)
    return text[text.index(";") :] if ";" in text else ""


def _check(settings: Settings, origins: Mapping[str, str]) -> None:
    """Rules across keys and on URL shapes; each error names the key and where it was set."""

    def at(name: str) -> str:
        where = origins.get(name, "")
        return f"{where}: {name}" if where else name

    url = settings.store_url
    if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(f"{at('store.url')} = {url!r}: use sqlite:///PATH or postgresql://…")
    locks = settings.locks_url
    if locks and not locks.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{at('locks.url')} = {locks!r}: use redis://HOST:PORT/DB or leave it empty"
        )
    engine = str(settings.get("dispatch.engine_url"))
    if engine and not _http_url(engine):
        raise ConfigError(f"{at('dispatch.engine_url')} = {engine!r}: use http(s)://HOST[:PORT]")
    # dispatch.mode names a target, which checks its own settings: plugins.configure.
    if settings.get("dispatch.max_attempts") < 1:
        raise ConfigError(f"{at('dispatch.max_attempts')} must be at least 1")
    if settings.get("dispatch.retry_base") > settings.get("dispatch.retry_max"):
        raise ConfigError(
            f"{at('dispatch.retry_base')} must not exceed dispatch.retry_max "
            f"({settings.get('dispatch.retry_max'):g} s)"
        )


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
