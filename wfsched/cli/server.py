"""Commands on the daemon: serve runs it, plugins lists the trigger types and dispatch targets
it loads, version prints the version (with --url, the daemon's too)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from wfsched import __version__
from wfsched.cli.common import (
    ConfigOpt,
    JsonOpt,
    Target,
    TokenOpt,
    UrlOpt,
    app,
    call,
    configured,
    examples,
    run,
)
from wfsched.cli.render import cell, emit_json, errors_as_json, out

if TYPE_CHECKING:
    from wfsched.control import Control


@app.command(epilog=examples("wfsched plugins", "wfsched plugins --json"))
def plugins(
    config: ConfigOpt = None, json_: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Trigger types and dispatch targets with their source (built-in, entry point, plugins dir)."""
    rows = call(Target(config, url, token, json_), lambda c: c.plugins())
    if json_:
        emit_json(rows)
        return
    table = Table("type", "kind", "source", "module")
    for r in rows:
        table.add_row(
            cell(r["type"]), cell(r.get("kind", "trigger")), cell(r["source"]), cell(r["module"])
        )
    out.print(table)


@app.command(
    epilog=examples(
        "wfsched serve",
        "wfsched serve --host 0.0.0.0 --port 8080   # needs server.api_token for the API",
    )
)
def serve(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535)] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run the daemon until SIGINT/SIGTERM, then drain and exit 0.

    A port that cannot be bound (in use, or not allowed) exits 1 with one line.
    """
    from wfsched.daemon import serve as serve_daemon
    from wfsched.logs import setup_logging

    errors_as_json(json_)
    settings, registry = configured(config)
    setup_logging(settings.get("log.format"), settings.get("log.level"))
    run(lambda: serve_daemon(settings, registry=registry, host=host, port=port), fast_loop=True)


@app.command(epilog=examples("wfsched version", "wfsched version --json --url http://wfsched:8003"))
def version(json_: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Print the version (with --url, also the daemon's)."""
    server: str | None = None
    if url:
        from wfsched.client import RemoteControl

        async def ask(control: Control) -> str:
            assert isinstance(control, RemoteControl)
            return await control.server_version()

        server = call(Target(url=url, token=token, json=json_), ask)
    if json_:
        emit_json({"version": __version__, **({"server": server} if url else {})})
    else:
        out.print(
            __version__ if server is None else f"{__version__} (server {server})", highlight=False
        )
