"""Small helpers for trigger types validating their fields with errors that name the field."""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from wfsched.errors import SpecError

T = TypeVar("T")
_MISSING: Any = object()


def unknown_key_error(key: str, allowed: Iterable[str], *, prefix: str = "") -> SpecError:
    """Build the error for an unknown key, with a did-you-mean when one is close."""
    name = f"{prefix}{key}"
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SpecError(f"unknown field{hint}", field=name)


class Fields:
    """Read a table of fields with type checks; every error names the field.

    ``Fields(table, allowed={...})`` refuses keys outside ``allowed`` at once.
    """

    def __init__(
        self, table: Mapping[str, Any], *, allowed: Iterable[str], prefix: builtins.str = ""
    ) -> None:
        if not isinstance(table, Mapping):
            raise SpecError("must be a table", field=prefix.rstrip(".") or None)
        self.table = table
        self.prefix = prefix
        allowed = set(allowed)
        for key in table:
            if key not in allowed:
                raise unknown_key_error(str(key), allowed, prefix=prefix)

    def _get(self, key: builtins.str, default: Any) -> Any:
        if key in self.table:
            return self.table[key]
        if default is _MISSING:
            raise SpecError("is required", field=self.prefix + key)
        return default

    def error(self, key: builtins.str, message: builtins.str) -> SpecError:
        """Return a SpecError naming ``key``."""
        return SpecError(message, field=self.prefix + key)

    def str(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """Return a non-empty string (or ``default`` when absent)."""
        value = self._get(key, default)
        if value is default and key not in self.table:
            return value
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string")
        return value

    def bool(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """Return a boolean."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def int(
        self, key: builtins.str, default: Any = _MISSING, *, minimum: builtins.int | None = None
    ) -> Any:
        """Return an integer, at least ``minimum``."""
        value = self._get(key, default)
        if value is default and key not in self.table:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return value

    def number(
        self, key: builtins.str, default: Any = _MISSING, *, minimum: float | None = None
    ) -> Any:
        """Return an int or float, at least ``minimum``."""
        value = self._get(key, default)
        if value is default and key not in self.table:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return value

    def str_list(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """Return a list of non-empty strings; a single string becomes a one-item list."""
        value = self._get(key, default)
        if value is default and key not in self.table:
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "must be a string or a list of strings")
        return list(value)

    def choice(
        self, key: builtins.str, choices: Iterable[builtins.str], default: Any = _MISSING
    ) -> Any:
        """Return one of ``choices``."""
        value = self._get(key, default)
        options = list(choices)
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(repr(c) for c in options)}")
        return value

    def table_(self, key: builtins.str, default: Any = _MISSING) -> Any:
        """Return a nested table."""
        value = self._get(key, default)
        if value is default and key not in self.table:
            return value
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a table")
        return value
