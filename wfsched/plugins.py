"""The plugin host: entry points (group ``wfsched``), the plugins dir, the registry of trigger
types and of the settings the plugins declare; :func:`configure`, how every command starts.

Files in the plugins dir run as code of the daemon (often as root), so the folder and each
file must be owned by us or root and writable by nobody else, as ssh demands of its keys;
anything else is refused with the ``chmod``/``chown`` that fixes it. A plugin that raises at
import, ``SystemExit`` included, is a load error naming its file, never a silent exit.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import stat
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal, NamedTuple, TypeVar

import pluggy

from wfsched import hookspecs
from wfsched.config import Settings, convert, read_config
from wfsched.config.table import CORE_SECTION_NAMES, SETTINGS
from wfsched.errors import ConfigError, SpecError, WfschedError
from wfsched.sections import Setting, declaration_problem
from wfsched.target import DispatchTarget
from wfsched.trigger import BaseTrigger

Source = Literal["builtin", "entry-point", "plugins-dir"]
ENTRY_POINT_GROUP = "wfsched"


@dataclass(frozen=True, slots=True)
class TriggerType:
    """A registered trigger type and where it came from."""

    type: str
    cls: builtins.type[BaseTrigger]
    source: Source
    module: str


@dataclass(frozen=True, slots=True)
class TargetType:
    """A registered dispatch target and where it came from."""

    name: str
    cls: builtins.type[DispatchTarget]
    source: Source
    module: str


_Entry = TypeVar("_Entry", TriggerType, TargetType)
_WHAT = {"trigger": "trigger type", "target": "dispatch target"}


def _checked(
    table: Mapping[str, _Entry],
    cls: object,
    base: type,
    attr: str,
    kind: str,
    source: Source,
    module: str,
) -> str:
    """The name a plugin's class registers under; refuses a non-subclass, a missing name and
    a name registered twice (naming both plugins)."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise WfschedError(f"plugin {module} registered {cls!r}, which is not a {base.__name__}")
    name = getattr(cls, attr, None)
    if not isinstance(name, str) or not name:
        raise WfschedError(f"plugin {module}: {kind} class {cls.__name__} has no `{attr}`")
    if name in table:
        first = table[name]
        raise WfschedError(
            f"{_WHAT[kind]} {name!r} is registered twice: by {first.module} ({first.source})"
            f" and by {module} ({source})"
        )
    return name


def _found(table: Mapping[str, _Entry], name: str, what: str, field: str) -> _Entry:
    """The entry registered as ``name``, or a SpecError on ``field`` listing the known ones."""
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise SpecError(f"unknown {what} {name!r} (known: {known})", field=field) from None


class Registry:
    """Trigger types and dispatch targets by name and the plugins' settings; a name, a
    settings section or an environment variable claimed twice is an error naming both plugins."""

    def __init__(self) -> None:
        self._types: dict[str, TriggerType] = {}
        self._targets: dict[str, TargetType] = {}
        self._settings: dict[str, tuple[Setting, str]] = {}
        self._section_owner: dict[str, str] = {}
        self._env_owner: dict[str, str] = {s.env: "wfsched (core)" for s in SETTINGS}

    def add(self, cls: type[BaseTrigger], source: Source, module: str) -> None:
        """Register one trigger class."""
        name = _checked(self._types, cls, BaseTrigger, "type", "trigger", source, module)
        self._types[name] = TriggerType(name, cls, source, module)

    def get(self, name: str) -> type[BaseTrigger]:
        """Return the class for a type, or raise SpecError listing the known types."""
        return _found(self._types, name, "trigger type", "type").cls

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def all(self) -> list[TriggerType]:
        """Return every registered type, sorted by name."""
        return [self._types[k] for k in sorted(self._types)]

    def add_target(self, cls: type[DispatchTarget], source: Source, module: str) -> None:
        """Register one dispatch target class."""
        name = _checked(self._targets, cls, DispatchTarget, "name", "target", source, module)
        self._targets[name] = TargetType(name, cls, source, module)

    def target(self, name: str) -> type[DispatchTarget]:
        """Return the class of a dispatch target, or raise SpecError listing the known ones."""
        return _found(self._targets, name, "dispatch target", "mode").cls

    def targets(self) -> list[TargetType]:
        """Return every registered dispatch target, sorted by name."""
        return [self._targets[k] for k in sorted(self._targets)]

    def add_setting(self, setting: Setting, module: str) -> None:
        """Register one key of a plugin's settings section (``register_settings``)."""
        problem = declaration_problem(setting)
        if problem is None:
            try:
                convert(setting, setting.default, "")
            except ConfigError as exc:
                problem = f"its default is invalid: {exc}"
        if problem is not None:
            raise WfschedError(f"plugin {module} declared an invalid setting: {problem}")
        section = setting.section
        if section in CORE_SECTION_NAMES:
            raise WfschedError(
                f"plugin {module} declared {setting.name}, but [{section}] is a core section;"
                " declare keys in a section of the plugin's own"
            )
        owner = self._section_owner.setdefault(section, module)
        if owner != module:
            raise WfschedError(
                f"settings section [{section}] is declared twice: by {owner} and by {module}"
            )
        if setting.name in self._settings:
            raise WfschedError(f"plugin {module} declared {setting.name} twice")
        env_owner = self._env_owner.setdefault(setting.env, module)
        if env_owner != module or any(s.env == setting.env for s, _ in self._settings.values()):
            raise WfschedError(
                f"environment variable {setting.env} is declared twice: by {env_owner} and by"
                f" {module} ({setting.name})"
            )
        self._settings[setting.name] = (setting, module)

    @property
    def settings(self) -> tuple[Setting, ...]:
        """Every setting the plugins declared, in the order they declared them."""
        return tuple(s for s, _ in self._settings.values())


def _importing(exc: BaseException) -> str:
    """The file of the innermost module body running when ``exc`` was raised."""
    modules = [f.filename for f in traceback.extract_tb(exc.__traceback__) if f.name == "<module>"]
    return modules[-1] if modules else "(unknown module)"


def _entry_point_source(plugin: object, dist: object) -> Source:
    name = getattr(getattr(dist, "metadata", None), "get", lambda _k: None)("Name")
    return "builtin" if name == "wfsched" else "entry-point"


def check_private(path: Path) -> None:
    """Raise ConfigError unless ``path`` is owned by us or root and writable by no one else."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"plugins: cannot read {path}: {exc.strerror}") from None
    kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"plugins: refusing the plugin {kind} {path}: it is owned by uid {st.st_uid}, "
            f"not by this user or root; fix: chown {os.geteuid()} {path}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"plugins: refusing the plugin {kind} {path}: it is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}); fix: chmod go-w {path}"
        )


def _load_dir_module(path: Path) -> ModuleType:
    check_private(path)
    name = f"wfsched_plugins_dir.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(name, None)
        raise
    except BaseException as exc:  # SystemExit at import is a broken plugin too
        sys.modules.pop(name, None)
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ConfigError(f"plugin file {path} failed to import: {what}") from exc
    return module


def load_registry(
    plugins_dir: str | Path | None, *, blocked: frozenset[str] = frozenset()
) -> Registry:
    """Build a fresh plugin manager and registry from entry points and ``plugins_dir``."""
    pm = pluggy.PluginManager("wfsched")
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # named below; SystemExit included
        raise ConfigError(
            f"plugin {_importing(exc)} (entry point group {ENTRY_POINT_GROUP!r}) failed to "
            f"import: {type(exc).__name__}: {exc}"
        ) from exc
    sources: dict[int, tuple[Source, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        sources[id(plugin)] = (
            _entry_point_source(plugin, dist),
            getattr(plugin, "__name__", repr(plugin)),
        )
    if plugins_dir is not None:
        directory = Path(plugins_dir)
        if directory.is_dir():
            check_private(directory)
            for path in sorted(directory.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                module = _load_dir_module(path)
                pm.register(module, name=f"plugins-dir:{path.name}")
                sources[id(module)] = ("plugins-dir", str(path))
    pm.check_pending()
    registry = Registry()
    for plugin in pm.get_plugins():
        source, module_name = sources.get(id(plugin), ("entry-point", repr(plugin)))
        # Each plugin's hooks are called one by one (not through pm.hook) so that whatever
        # it registers is attributed to it in errors and in `wfsched plugins`.
        types_hook = getattr(plugin, "register_trigger_types", None)
        if types_hook is not None:

            def register(
                cls: type[BaseTrigger], _s: Source = source, _m: str = module_name
            ) -> None:
                registry.add(cls, _s, _m)

            types_hook(register=register)
        targets_hook = getattr(plugin, "register_dispatch_targets", None)
        if targets_hook is not None:

            def register_target(
                cls: type[DispatchTarget], _s: Source = source, _m: str = module_name
            ) -> None:
                registry.add_target(cls, _s, _m)

            targets_hook(register=register_target)
        settings_hook = getattr(plugin, "register_settings", None)
        if settings_hook is not None:

            def declare(setting: Setting, _m: str = module_name) -> None:
                registry.add_setting(setting, _m)

            settings_hook(register=declare)
    return registry


def plugin_rows(registry: Registry) -> list[dict[str, str]]:
    """What ``wfsched plugins`` lists: every trigger type and dispatch target, with its kind
    and where it came from."""
    return [
        {"type": t.type, "kind": "trigger", "source": t.source, "module": t.module}
        for t in registry.all()
    ] + [
        {"type": t.name, "kind": "dispatch-target", "source": t.source, "module": t.module}
        for t in registry.targets()
    ]


class Configured(NamedTuple):
    """Validated settings and the plugins they name."""

    settings: Settings
    registry: Registry


def configure(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    blocked: frozenset[str] = frozenset(),
) -> Configured:
    """Read the configuration and load its plugins: how every command starts.

    The plugins dir is a setting and plugin sections are known only once the plugins are
    loaded, so: the core sections first (a bad core value fails before any plugin runs),
    then the plugins they name, then every section against the plugins' declarations (a
    section nobody declares is an error with a did-you-mean).
    """
    source = read_config(explicit, environ=environ)
    registry = load_registry(source.core().get("plugins.dir"), blocked=blocked)
    settings = source.settings(registry.settings)
    check_dispatch_mode(settings, registry)
    return Configured(settings, registry)


def check_dispatch_mode(settings: Settings, registry: Registry) -> None:
    """ConfigError unless ``dispatch.mode`` names a registered target whose settings work."""
    mode = settings.get("dispatch.mode")
    try:
        target = registry.target(mode)
    except SpecError as exc:
        origin = f"{settings.path}: " if settings.path else ""
        raise ConfigError(f"{origin}dispatch.mode = {mode!r}: {exc.message}") from None
    try:
        target.check_settings(settings.sections, {})
    except ConfigError as exc:
        where = settings.origins.get("dispatch.mode", "")
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
