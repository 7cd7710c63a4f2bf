"""How a configuration key is declared: by the core (``wfsched.config``) and by plugins alike.

A plugin with settings of its own declares them through the ``register_settings`` hook, one
:class:`Setting` per key, all in a section named after the plugin. Such a section then works
like a core one: ``[section]`` in ``wfsched.toml`` is validated when the config is loaded (an
unknown key or a bad value is one error naming the file or variable and the key), the
environment variable overrides the file, ``wfsched init`` writes it commented, and values of
kind ``secret`` are redacted from every log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KINDS = ("str", "int", "duration", "secret", "networks", "timezone")
"""The kinds a setting may have, besides ``choice:a,b,c`` (one of the listed words)."""
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_ENV = re.compile(r"[A-Z_][A-Z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: where it lives, its variable, default, kind and meaning.

    ``kind`` is ``str``, ``int`` (non-negative), ``duration`` (``"90s"``, ``"5m"`` or
    seconds; read as float seconds), ``secret`` (a string that may be an ``env:NAME`` or
    ``file:PATH`` reference; redacted from logs), ``networks`` (addresses or networks,
    comma-separated), ``timezone`` (an IANA zone known to this host) or ``choice:a,b,c``. A plugin reads the validated values with
    ``ctx.settings(section)``; every key is there, with its default when unset.

    Example::

        Setting("http_poll", "user_agent", "WFSCHED_HTTP_POLL_USER_AGENT",
                "wfsched-http-poll/1.0", "str", "User-Agent header of every poll")
    """

    section: str
    key: str
    env: str
    default: Any
    kind: str
    doc: str

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


def declaration_problem(setting: Setting) -> str | None:
    """Why ``setting`` is not a usable declaration (names, kind), or None when it is."""
    if not isinstance(setting, Setting):
        return f"{setting!r} is not a wfsched.Setting"
    for what, value in (("section", setting.section), ("key", setting.key)):
        if not isinstance(value, str) or not _NAME.match(value):
            return f"{what} {value!r} must be lower-case letters, digits and _"
    if not isinstance(setting.env, str) or not _ENV.match(setting.env):
        return f"environment variable {setting.env!r} must be upper-case letters, digits and _"
    kind = setting.kind
    choices = kind[7:].split(",") if isinstance(kind, str) and kind.startswith("choice:") else []
    if kind not in KINDS and not (choices and all(choices)):
        return f"kind {kind!r} must be one of {', '.join(KINDS)} or choice:a,b,c"
    if not isinstance(setting.doc, str) or not setting.doc.strip():
        return "doc must say what the setting means (wfsched init and the docs show it)"
    return None
