"""Commands on trigger events: trigger (a manual fire), history, explain (why each occurrence
did or didn't fire), redeliver and prune."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.table import Table

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
from wfsched.cli.render import cell, emit_json, errors_as_json, fail, out, short
from wfsched.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    from wfsched.control import Control


def _read_data(data: str | None) -> Any:
    if data is None:
        return {}
    text = data
    if data.startswith("@"):
        try:
            text = Path(data[1:]).read_text()
        except OSError as exc:
            fail(f"--data {data}: {exc.strerror}", 2, "bad_request")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--data is not valid JSON: {exc}", 2, "invalid_json")


@app.command(
    epilog=examples(
        "wfsched trigger nightly-report",
        """wfsched trigger nightly-report --data '{"day": "2026-11-28"}' --yes""",
        "wfsched trigger nightly-report --data @input.json --yes --json",
    )
)
def trigger(
    workflow_id: str,
    data: Annotated[str | None, typer.Option("--data", help="JSON or @FILE")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="skip the confirmation")] = False,
    trigger_id: Annotated[str | None, typer.Option("--trigger")] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fire a workflow's manual trigger; prints the execution id."""
    errors_as_json(json_)
    payload = _read_data(data)

    async def body(control: Control) -> dict[str, Any] | None:
        try:
            return await control.fire(workflow_id, payload, confirmed=yes, trigger_id=trigger_id)
        except Conflict as exc:
            if str(exc) != "confirmation_required":
                raise
        if not sys.stdin.isatty():
            raise InvalidInput(
                f"the manual trigger of {workflow_id!r} requires confirmation: pass --yes "
                "(no terminal to ask on)"
            )
        confirmed = await anyio.to_thread.run_sync(
            lambda: typer.confirm(f"Fire {workflow_id}?", default=False)
        )
        if not confirmed:
            return None
        return await control.fire(workflow_id, payload, confirmed=True, trigger_id=trigger_id)

    result = call(Target(config, url, token, json_), body)
    if result is None:
        fail("not confirmed; nothing fired", 1, "not_confirmed")
    if json_:
        emit_json(result)
    else:
        sys.stdout.write(result["execution_id"] + "\n")


@app.command(
    epilog=examples(
        "wfsched history",
        "wfsched history nightly-report --status failed --limit 50",
        "wfsched history orders --trigger hook --since 2026-11-28T00:00:00Z --json",
    )
)
def history(
    workflow_id: Annotated[str | None, typer.Argument()] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
    status_: Annotated[
        str | None, typer.Option("--status", help="pending, dispatched or failed")
    ] = None,
    trigger_: Annotated[str | None, typer.Option("--trigger", help="only this trigger")] = None,
    since: Annotated[str | None, typer.Option("--since", help="fired at or after (ISO)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="fired before (ISO)")] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Trigger events, newest first (an instant without offset is UTC)."""
    from wfsched.control import EventQuery
    from wfsched.models import parse_instant

    errors_as_json(json_)
    if status_ not in (None, "pending", "dispatched", "failed"):
        fail(f"--status {status_!r}: use pending, dispatched or failed", 2, "bad_request")
    try:
        query = EventQuery(
            limit=limit,
            workflow_id=workflow_id,
            trigger_id=trigger_,
            status=status_,  # type: ignore[arg-type]
            since=parse_instant(since, "--since") if since else None,
            until=parse_instant(until, "--until") if until else None,
        )
    except InvalidInput as exc:
        fail(str(exc), 2, "bad_request")
    page = call(Target(config, url, token, json_), lambda c: c.executions(query))
    events = page["items"]
    if json_:
        emit_json(events)
        return
    table = Table(
        "execution id", "workflow", "trigger", "type", "fired", "status", "attempts", "last error"
    )
    # The execution id is what redeliver takes: never cut; other ids fold rather than cut.
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max((len(e["execution_id"]) for e in events), default=12)
    table.columns[1].overflow = table.columns[2].overflow = "fold"
    for e in events:
        table.add_row(
            cell(e["execution_id"]),
            cell(e["workflow_id"]),
            cell(e["trigger_id"]),
            cell(e["trigger_type"]),
            cell(short(e["fired_at"])),
            cell(e["status"]),
            cell(e["attempts"]),
            cell(e["last_error"]),
        )
    out.print(table)


@app.command(
    epilog=examples(
        "wfsched explain nightly-report",
        "wfsched explain nightly-report --at 2026-03-02T10:05:00Z",
        "wfsched explain nightly-report --since 2026-03-02T09:00Z --until 2026-03-02T12:00Z --json",
    )
)
def explain(
    workflow_id: str,
    trigger_id: Annotated[str | None, typer.Option("--trigger", help="one trigger only")] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="ISO 8601 instant: the minute around it")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 window start")] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="ISO 8601 window end (default now)")
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Why each occurrence did or didn't fire: in the last hour, a window, or around --at."""
    from wfsched.explain import story

    answer = call(
        Target(config, url, token, json_),
        lambda c: c.explain(workflow_id, trigger_id=trigger_id, at=at, since=since, until=until),
    )
    if json_:
        emit_json(answer)
        return
    for line in story(answer):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command(epilog=examples("wfsched redeliver 01JD5Y0N3V8Q2W7K4M6P9R1T3X"))
def redeliver(
    execution_ids: Annotated[list[str], typer.Argument()],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Queue failed events for dispatch again, with the same Idempotency-Key."""
    events = call(Target(config, url, token, json_), lambda c: c.redeliver(execution_ids))
    if json_:
        emit_json(events)
    else:
        for e in events:
            out.print(f"{e['execution_id']}: queued", highlight=False)


@app.command(epilog=examples("wfsched prune --dry-run", "wfsched prune --older-than 7d --json"))
def prune(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="delete dispatched and failed events older than this"),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count, delete nothing")] = False,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete events past retention now (pending events never); prints how many."""
    from wfsched.schedules.durations import parse_duration

    errors_as_json(json_)
    age: float | None = None
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            fail(f"--older-than: {exc}", 2, "bad_request")
    result = call(Target(config, url, token, json_), lambda c: c.prune(age, dry_run=dry_run))
    deleted = result["deleted"]
    if json_:
        emit_json(result)
    elif dry_run:
        out.print(f"would delete {deleted} events (dry run: nothing deleted)", highlight=False)
    else:
        out.print(f"deleted {deleted} events", highlight=False)
