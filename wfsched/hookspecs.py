"""The plugin contract: the hooks a wfsched plugin may implement.

A plugin is a module or object with functions marked ``@wfsched.hookimpl``. Built-in trigger
types use this same door, through the ``wfsched`` entry-point group, settings sections
included: the core names none of them; so do the built-in dispatch targets.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from wfsched.sections import Setting
from wfsched.target import DispatchTarget
from wfsched.trigger import BaseTrigger

hookspec = pluggy.HookspecMarker("wfsched")
hookimpl = pluggy.HookimplMarker("wfsched")


@hookspec
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    """Register trigger types by calling ``register`` with each :class:`BaseTrigger` subclass.

    Example::

        @hookimpl
        def register_trigger_types(register):
            register(FileTrigger)
    """


@hookspec
def register_dispatch_targets(register: Callable[[type[DispatchTarget]], None]) -> None:
    """Register dispatch targets by calling ``register`` with each :class:`DispatchTarget`
    subclass; ``dispatch.mode`` or a workflow's ``[dispatch] mode`` names one.

    Example::

        @hookimpl
        def register_dispatch_targets(register):
            register(JsonlFileTarget)
    """


@hookspec
def register_settings(register: Callable[[Setting], None]) -> None:
    """Declare this plugin's own config section by calling ``register`` with each key.

    Every key is in one section named after the plugin (not a core section, not another
    plugin's); it is validated when the config is loaded, read with ``ctx.settings(section)``
    and, for kind ``secret``, redacted from logs. Example::

        @hookimpl
        def register_settings(register):
            register(Setting("acme", "api_url", "ACME_API_URL", "https://acme.example",
                             "str", "base URL of the Acme API"))
    """
