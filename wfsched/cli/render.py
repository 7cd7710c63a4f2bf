"""How a command prints: rich tables or JSON (--json) on stdout, warnings on stderr, and errors
as one line with their exit code."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

out = Console()
err = Console(stderr=True)

_JSON_ERRORS = [False]
"""Whether the running command prints its errors as JSON (set once per process)."""


def errors_as_json(on: bool) -> None:
    """Whether this command prints its errors as JSON (``--json``) or as one line on stderr."""
    _JSON_ERRORS[0] = on


def fail(message: str, code: int, error: str = "error") -> NoReturn:
    """Report an error in one line (JSON ``{"error", "detail"}`` on stdout with --json)."""
    if _JSON_ERRORS[0]:
        emit_json({"error": error, "detail": message})
    else:
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def cell(value: Any) -> Text:
    """User text in a table cell, shown verbatim (never read as rich markup)."""
    return Text("-" if value is None or value == "" else str(value))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def short(ts: str | None) -> str:
    """An ISO 8601 instant as a table shows it: ``YYYY-MM-DD HH:MM:SSZ``."""
    if not ts:
        return "-"
    return ts.replace("T", " ").split(".")[0].removesuffix("Z") + "Z"
