"""Commands on deployments: deploy, undeploy, pause, resume, list, status and export."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

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
from wfsched.cli.render import cell, emit_json, err, errors_as_json, fail, out, short, warn

if TYPE_CHECKING:
    from wfsched.control import Control


@app.command(
    epilog=examples(
        "wfsched deploy specs/",
        "wfsched deploy nightly.toml orders.json --dry-run",
        "wfsched deploy specs/ --url http://wfsched:8003 --token $WFSCHED_API_TOKEN",
    )
)
def deploy(
    paths: Annotated[list[Path], typer.Argument(help="spec files or directories")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and plan only")] = False,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Validate and deploy specs (create or update), all or nothing."""
    deployed = call(Target(config, url, token, json_), lambda c: c.deploy(paths, dry_run=dry_run))
    for warning in deployed.warnings:
        warn(warning)
    if json_:
        emit_json(deployed.results)
        return
    for r in deployed.results:
        out.print(
            f"{r['workflow_id']}: {r['action']}{' (dry run)' if dry_run else ''}", highlight=False
        )


def _ids_command(verb: str, method: str, doc: str) -> Callable[..., None]:
    def command(
        ids: Annotated[list[str], typer.Argument(help="workflow ids")],
        config: ConfigOpt = None,
        json_: JsonOpt = False,
        url: UrlOpt = None,
        token: TokenOpt = None,
    ) -> None:
        async def body(control: Control) -> None:
            await getattr(control, method)(ids)

        call(Target(config, url, token, json_), body)
        if json_:
            emit_json([{"workflow_id": i, "action": verb} for i in ids])
        else:
            for i in ids:
                out.print(f"{i}: {verb}", highlight=False)

    command.__doc__ = doc
    return command


for _verb, _method, _doc in (
    ("undeployed", "undeploy", "Remove deployments; their triggers stop."),
    ("paused", "pause", "Stop a workflow's triggers, keeping its state."),
    ("resumed", "resume", "Restart a paused workflow's triggers."),
):
    app.command(_method, epilog=examples(f"wfsched {_method} nightly-report orders"))(
        _ids_command(_verb, _method, _doc)
    )


def _daemon_line(daemon: dict[str, Any]) -> str:
    """One line on the daemons: running (how many) or not (last seen when)."""
    if daemon["running"]:
        n = len(daemon["replicas"])
        return f"daemon: running ({n} replica{'s' if n != 1 else ''})"
    if daemon["last_seen"]:
        return f"daemon: NOT RUNNING (last seen {short(daemon['last_seen'])})"
    return "daemon: NOT RUNNING (never seen on this store)"


@app.command(
    "list",
    epilog=examples(
        "wfsched list",
        "wfsched list --state paused --json",
        "wfsched list --limit 50 --json   # one page; pass its next_cursor as --cursor",
    ),
)
def list_(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=1000, help="one page of N")
    ] = None,
    cursor: Annotated[str | None, typer.Option("--cursor", help="next_cursor of a page")] = None,
    state: Annotated[str | None, typer.Option("--state", help="active or paused")] = None,
    query: Annotated[str | None, typer.Option("--q", help="substring of the id or name")] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List deployments: id, triggers, state, next fire.

    With --limit, one page: --json then prints the API's {"items", "next_cursor"}.
    """
    errors_as_json(json_)
    if state not in (None, "active", "paused"):
        fail(f"--state {state!r}: use active or paused", 2, "bad_request")

    async def body(c: Control) -> tuple[dict[str, Any], dict[str, Any] | None]:
        page = await c.workflows(limit=limit, cursor=cursor, state=state, q=query)
        return page, None if json_ else await c.daemon()

    page, daemon = call(Target(config, url, token, json_), body)
    if json_:
        emit_json(page if limit is not None else page["items"])
        return
    if daemon is not None:
        out.print(_daemon_line(daemon), highlight=False)
    table = Table("workflow", "name", "state", "triggers", "next fire")
    table.columns[0].overflow = "fold"
    for row in page["items"]:
        fires = [t["next_fire"] for t in row["triggers"] if t["next_fire"]]
        triggers = ", ".join(
            f"{t['id']} ({t['type']}{'' if t['state'] != 'disabled' else ', disabled'})"
            for t in row["triggers"]
        )
        table.add_row(
            cell(row["workflow_id"]),
            cell(row["name"]),
            cell(row["state"]),
            cell(triggers),
            cell(short(min(fires)) if fires else "-"),
        )
    out.print(table)
    if page["next_cursor"]:
        err.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@app.command(epilog=examples("wfsched status", "wfsched status nightly-report --json"))
def status(
    workflow_id: Annotated[str | None, typer.Argument()] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Per trigger: type, state, next fire, last event, last error, health."""

    async def body(control: Control) -> Any:
        if workflow_id is None:
            page = await control.workflows(limit=None, cursor=None, state=None, q=None)
            return [await control.status(d["workflow_id"]) for d in page["items"]]
        return await control.status(workflow_id)

    result = call(Target(config, url, token, json_), body)
    if json_:
        emit_json(result)
        return
    views = result if isinstance(result, list) else [result]
    if views:
        out.print(_daemon_line(views[0]["daemon"]), highlight=False)
        pending = views[0].get("pending") if len(views) == 1 else None
        if pending and pending["count"]:
            out.print(
                f"{pending['count']} event(s) pending since {short(pending['since'])}: "
                "nothing is dispatched until a daemon runs",
                highlight=False,
            )
    for view in views:
        table = Table(
            "trigger",
            "type",
            "state",
            "health",
            "next fire",
            "last event",
            "last error",
            "details",
            title=Text(f"{view['workflow_id']} ({view['state']})"),
        )
        for t in view["triggers"]:
            last = t["last_event"]
            details = ", ".join(f"{k}={v}" for k, v in t.get("details", {}).items())
            table.add_row(
                cell(t["id"]),
                cell(t["type"]),
                cell(t["state"]),
                cell(t["health"]),
                cell(short(t["next_fire"])),
                cell(f"{short(last['fired_at'])} {last['status']}" if last else "-"),
                cell(t["last_error"]),
                cell(details),
            )
        out.print(table)


@app.command(epilog=examples("wfsched export nightly-report > nightly-report.toml"))
def export(
    workflow_id: str,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print the deployed spec as TOML (--json: as a JSON document)."""
    result = call(
        Target(config, url, token, json_),
        lambda c: c.document(workflow_id) if json_ else c.export(workflow_id),
    )
    if json_:
        emit_json(result)
    else:
        sys.stdout.write(str(result))
