"""Secret references: ``env:NAME`` or ``file:PATH`` written where a secret goes.

A reference keeps the secret out of spec files and the config file: the daemon reads the value
from its own host when it resolves the reference. This module is the one place that resolves
them (the config file, every built-in trigger, third-party plugins through ``wfsched``), and the
one place that says when a reference is refused: in a spec that came over the HTTP API, whose
author has no access to the host, so resolving it would hand them the host's secret.

Errors are :class:`~wfsched.SpecError` naming the field (when given) and the reference, never
the secret itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wfsched.errors import SpecError

REFERENCE_PREFIXES = ("env:", "file:")
"""How a secret reference starts; any other string is a literal secret."""
MAX_SECRET_FILE_BYTES = 1024 * 1024
"""Largest ``file:`` secret read (a key or certificate chain is far smaller)."""
API_REFUSAL = (
    "env:/file: references are not accepted over the API; send the value itself, "
    "or deploy the spec with the wfsched CLI on the host"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_reference(value: object) -> bool:
    """True for a string starting ``env:`` or ``file:``."""
    return isinstance(value, str) and value.startswith(REFERENCE_PREFIXES)


def reference_problem(ref: str) -> str | None:
    """Why ``ref`` can never resolve (a malformed reference), or None; checked at deploy time."""
    if ref.startswith("env:") and not _ENV_NAME.fullmatch(ref[4:]):
        return f"{ref!r} does not name an environment variable"
    if ref == "file:":
        return f"{ref!r} does not name a file"
    return None


def resolve_secret(value: str, *, field: str | None = None) -> str:
    """Resolve ``env:NAME`` or ``file:PATH``; return any other string (a literal) unchanged.

    ``file:`` contents are read as UTF-8 (at most 1 MiB) and lose one trailing newline (LF or
    CRLF); ``~`` is expanded, and a relative path is relative to the current folder (the config
    loader anchors the config file's own ``file:`` paths to its folder first). Raises
    :class:`~wfsched.SpecError` on ``field`` naming the reference when the variable is unset or
    the file cannot be read.
    """
    problem = reference_problem(value)
    if problem:
        raise SpecError(f"secret reference {problem}", field=field)
    if value.startswith("env:"):
        name = value[4:]
        try:
            return os.environ[name]
        except KeyError:
            raise SpecError(
                f"secret reference {value!r}: environment variable {name} is not set", field=field
            ) from None
    if value.startswith("file:"):
        return _read_secret_file(value, field)
    return value


def _read_secret_file(ref: str, field: str | None) -> str:
    def fail(reason: str) -> SpecError:
        return SpecError(f"secret reference {ref!r}: {reason}", field=field)

    try:
        with open(os.path.expanduser(ref[5:]), "rb") as fh:
            data = fh.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read the file: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise fail("the file is larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("the file is not UTF-8 text") from None  # never quote the bytes: a secret
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def api_refusals(config: Mapping[str, Any], secret_fields: Iterable[str]) -> list[SpecError]:
    """One error per field of ``secret_fields`` (dotted) holding a reference in ``config``.

    The rule for specs submitted over the HTTP API (see ``BaseTrigger.untrusted_problems``);
    a list field is refused when any of its items is a reference. Other fields are data: a
    payload value that happens to start with ``env:`` stays accepted.
    """
    return [
        SpecError(API_REFUSAL, field=name)
        for name in secret_fields
        if any(is_reference(v) for v in values_at(config, name))
    ]


def unresolved_secret(
    config: Mapping[str, Any], secret_fields: Callable[[Mapping[str, Any]], Iterable[str]]
) -> str | None:
    """Why the first ``env:``/``file:`` reference in a secret field of ``config`` cannot be
    resolved now (``secret_fields``: the trigger type's), or None when every one resolves."""
    for name in secret_fields(config):
        for value in values_at(config, name):
            if is_reference(value):
                try:
                    resolve_secret(value, field=name)
                except SpecError as exc:
                    return str(exc)
    return None


def values_at(config: Mapping[str, Any], dotted: str) -> list[Any]:
    """The value(s) at ``a.b.c`` in nested tables; a list there gives each of its items."""
    value: Any = config
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return []
        value = value[key]
    return list(value) if isinstance(value, list | tuple) else [value]
