"""``wfsched init`` writes a commented config file; ``wfsched check`` proves a config works."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape

from wfsched.cli.common import (
    ConfigOpt,
    JsonOpt,
    Target,
    TokenOpt,
    UrlOpt,
    app,
    call,
    examples,
)
from wfsched.cli.render import emit_json, errors_as_json, fail, out, warn
from wfsched.config import ConfigSource
from wfsched.config.table import default_config_text
from wfsched.errors import ConfigError, WfschedError


@app.command(epilog=examples("wfsched init", "wfsched init --config /etc/wfsched/wfsched.toml"))
def init(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Write a commented wfsched.toml (refuses to overwrite)."""
    from wfsched.plugins import load_registry

    errors_as_json(json_)
    path = Path(config or "wfsched.toml")
    if path.exists():
        fail(f"{path} already exists; not overwriting it", 1, "conflict")
    if not path.parent.is_dir():
        fail(f"{path}: folder {path.parent} does not exist", 2, "bad_request")
    # The plugins the new file will load (its plugins.dir) declare sections of their own.
    source = ConfigSource(path=path, data={}, environ=os.environ)
    try:
        registry = load_registry(source.core().get("plugins.dir"))
    except ConfigError as exc:
        fail(str(exc), 2, "invalid_config")
    except WfschedError as exc:
        fail(str(exc), 1)
    try:
        path.write_text(default_config_text(registry.settings))
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", 1)
    if json_:
        emit_json({"path": str(path), "action": "created"})
    else:
        out.print(f"wrote {escape(str(path))}", highlight=False)


@app.command(
    epilog=examples(
        "wfsched check",
        "wfsched check --json",
        "wfsched check --url https://wfsched.example.com --token $WFSCHED_API_TOKEN",
    )
)
def check(
    config: ConfigOpt = None, json_: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None
) -> None:
    """Prove the config works (IMAP/SMTP login, GitHub App JWT, secrets, time zones, engine).

    Connects to the store and locks, logs in to IMAP and SMTP with the configured credentials,
    signs a GitHub App JWT and has GitHub accept it, resolves every env:/file: reference of the
    config and of every deployed spec, loads every time zone and reaches the engine URL. Exits
    1 when a check fails, with one line per failure.
    """
    report = call(Target(config, url, token, json_), lambda c: c.check())
    if json_:
        emit_json(report)
    else:
        out.print(f"config: {escape(report.get('config') or 'built-in defaults')}", highlight=False)
        for r in report["checks"]:
            mark = "[green]ok[/green]" if r["ok"] else "[red]FAIL[/red]"
            line = f"{mark}  {escape(r['name'])}: {escape(r['detail'])}"
            out.print(line, highlight=False, soft_wrap=True)  # one line each, never wrapped
            for warning in r.get("warnings", ()):
                warn(warning)
    if not report["ok"]:
        raise typer.Exit(1)
