"""The ``wfsched`` command line: parses, calls a Control, renders (rich tables or --json).

Every command but ``serve``, ``init`` and ``cron`` works on the store here or, with ``--url``,
on a daemon's HTTP API alone; it calls a :class:`wfsched.control.Control` either way and
renders the same answers the same way. Adding a command stays one function.

``common`` holds the app, the options commands share and the choice of Control; ``render``
the output and exit codes. The commands live by what they work on: ``config`` (init, check),
``deployments`` (deploy, undeploy, pause, resume, list, status, export), ``events`` (trigger,
history, explain, redeliver, prune), ``schedules`` (cron, density) and ``server`` (plugins,
serve, version).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

import typer

# Importing a command module registers its commands: --help lists them in this order.
from wfsched.cli import config, deployments, events, schedules, server  # noqa: F401
from wfsched.cli.common import app
from wfsched.cli.render import emit_json, err

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; a usage error is JSON too when --json was given."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        code = app(args=args, prog_name="wfsched", standalone_mode=False)
    except typer.Abort:
        err.print("aborted", highlight=False)
        sys.exit(1)
    except typer.TyperException as exc:  # a usage error: bad option or value
        if "--json" in args:
            emit_json({"error": "usage", "detail": exc.format_message()})
        else:
            cast(Any, exc).show()
        sys.exit(exc.exit_code)
    # Outside standalone mode a command's Exit comes back as its code.
    sys.exit(code if isinstance(code, int) else 0)
