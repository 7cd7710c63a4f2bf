"""Commands on schedules: cron (an expression's next fire times) and density (fires per
minute of every active time trigger ahead, with the H rewrites that spread the peaks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

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
    settings_of,
)
from wfsched.cli.render import cell, emit_json, errors_as_json, fail, out
from wfsched.errors import SpecError


@app.command()
def cron(
    expression: str,
    seed: Annotated[str | None, typer.Option("--seed", help="hash seed for H")] = None,
    id_: Annotated[str | None, typer.Option("--id", help="workflow id to seed with")] = None,
    trigger_: Annotated[
        str | None, typer.Option("--trigger", help="trigger id to seed with (default cron)")
    ] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone")] = None,
    count: Annotated[int, typer.Option("--count", min=1, max=1000)] = 5,
    from_: Annotated[str | None, typer.Option("--from", help="ISO 8601 instant")] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the resolved expression and the next fire times strictly after --from (or now)."""
    from zoneinfo import ZoneInfo

    from wfsched.schedules.cron import CronSchedule

    errors_as_json(json_)
    if seed is not None and id_ is not None:
        fail("use --seed or --id, not both", 2)
    if trigger_ is not None and id_ is None:
        fail("--trigger needs --id", 2)
    zone = tz or settings_of(config).get("scheduler.timezone")
    seed_text = seed if seed is not None else f"{id_}/{trigger_ or 'cron'}" if id_ else "wfsched"
    try:
        schedule = CronSchedule(expression, zone, seed_text)
    except SpecError as exc:
        where = f"--tz {zone!r}" if exc.field == "timezone" else repr(expression)
        fail(f"{where}: {exc.message}", 2)
    local = ZoneInfo(zone)
    start = datetime.now(UTC)
    if from_:
        try:
            start = datetime.fromisoformat(from_)
        except ValueError:
            fail(f"--from {from_!r} is not an ISO 8601 instant", 2)
        if start.tzinfo is None:
            start = start.replace(tzinfo=local)
    fires: list[str] = []
    t = start
    for _ in range(count):
        t = schedule.next_after(t)
        fires.append(t.astimezone(local).isoformat())
    if json_:
        emit_json(
            {
                "expression": expression,
                "resolved": schedule.resolved,
                "timezone": zone,
                "seed": seed_text,
                "next": fires,
            }
        )
        return
    out.print(
        f"expression: {expression}\nresolved:   {schedule.resolved}\ntimezone:   {zone}\n"
        f"seed:       {seed_text}",
        highlight=False,
    )
    for f in fires:
        out.print(f"  {f}", highlight=False)


@app.command(epilog=examples("wfsched density", "wfsched density --hours 6 --json"))
def density(
    hours: Annotated[int, typer.Option("--hours", min=1, max=168, help="how far ahead")] = 24,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fires per minute of every active time trigger over the next --hours: the peak minutes,
    the expressions behind them and the H rewrite that spreads each."""
    from wfsched.density import sparkline

    result = call(Target(config, url, token, json_), lambda c: c.density(hours))
    if json_:
        emit_json(result)
        return
    start = result["start"].replace("T", " ")[:16]
    out.print(
        f"{result['triggers']} time triggers, {result['fires']} fires in {hours} h from "
        f"{start} UTC",
        highlight=False,
    )
    out.print(sparkline(result["counts"]), highlight=False)
    table = Table("minute (UTC)", "fires", "expression", "triggers", "suggested")
    for peak in result["peaks"]:
        for i, c in enumerate(peak["expressions"]):
            table.add_row(
                peak["minute"].replace("T", " ")[:16] if i == 0 else "",
                str(peak["fires"]) if i == 0 else "",
                cell(c["expression"]),
                str(c["triggers"]),
                cell(c["suggestion"] or "-"),
            )
    out.print(table)
