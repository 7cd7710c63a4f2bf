"""The plugin contract: the hooks a wfsched plugin may implement.

A plugin is a module or object with functions marked ``@wfsched.hookimpl``. Built-in trigger
types use this same door, through the ``wfsched`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

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
