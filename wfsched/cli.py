"""The ``wfsched`` command line: parses, calls services, renders (rich tables or --json)."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import anyio
import typer
from rich.console import Console
from rich.table import Table

from wfsched import __version__
from wfsched.config import ConfigSource, Settings, default_config_text
from wfsched.errors import ConfigError, NotFound, SpecError, WfschedError
from wfsched.spec import InvalidSpecs

if TYPE_CHECKING:
    from wfsched.plugins import Configured

T = TypeVar("T")
app = typer.Typer(
    help="wfsched: durable workflow triggers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", help="config file (wfsched.toml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def configured(config: str | None) -> Configured:
    """The settings, validated with the plugins they name (``wfsched.plugins.configure``).

    A bad config or plugin file exits 2; two plugins claiming one name exit 1.
    """
    from wfsched.plugins import configure

    try:
        return configure(config)
    except ConfigError as exc:
        fail(str(exc), 2)
    except WfschedError as exc:
        fail(str(exc), 1)


def settings_of(config: str | None) -> Settings:
    return configured(config).settings


def run(fn: Callable[[], Awaitable[T]], *, fast_loop: bool = False) -> T:
    """Run a coroutine, mapping wfsched errors to exit codes (1 failed, 2 invalid input).

    ``fast_loop``: use uvloop when installed (the daemon: about 1.5x the HTTP throughput).
    """
    options = {"use_uvloop": True} if fast_loop and find_spec("uvloop") is not None else {}
    try:
        return anyio.run(fn, backend_options=options)
    except (InvalidSpecs, SpecError, ConfigError) as exc:
        fail(str(exc), 2)
    except NotFound as exc:
        fail(str(exc), 1)
    except WfschedError as exc:
        fail(str(exc), 1)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def with_service(config: str | None, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Open the store and a DeploymentService, run ``fn(service)``."""
    from wfsched.backends import connected
    from wfsched.deployments import DeploymentService

    settings, registry = configured(config)

    async def body() -> T:
        async with connected(settings) as store:
            return await fn(DeploymentService(store=store, registry=registry, settings=settings))

    return run(body)


def _short(ts: str | None) -> str:
    if not ts:
        return "-"
    return ts.replace("T", " ").split(".")[0].removesuffix("Z") + "Z"


@app.command()
def init(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Write a commented wfsched.toml (refuses to overwrite)."""
    from wfsched.plugins import load_registry

    path = Path(config or "wfsched.toml")
    if path.exists():
        fail(f"{path} already exists; not overwriting it", 1)
    # The plugins the new file will load (its plugins.dir) declare sections of their own.
    source = ConfigSource(path=path, data={}, environ=os.environ)
    try:
        registry = load_registry(source.core().get("plugins.dir"))
    except ConfigError as exc:
        fail(str(exc), 2)
    except WfschedError as exc:
        fail(str(exc), 1)
    path.write_text(default_config_text(registry.settings))
    if json_:
        emit_json({"path": str(path), "action": "created"})
    else:
        out.print(f"wrote {path}")


@app.command()
def check(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Validate the config and connect to the store, locks, SMTP and the trigger types' servers."""
    from wfsched.checks import run_checks

    settings, registry = configured(config)
    results = run(lambda: run_checks(settings, registry))
    ok = all(r["ok"] for r in results)
    if json_:
        emit_json({"ok": ok, "config": settings.path, "checks": results})
    else:
        out.print(f"config: {settings.path or 'built-in defaults'}")
        for r in results:
            mark = "[green]ok[/green]" if r["ok"] else "[red]FAIL[/red]"
            out.print(f"{mark}  {r['name']}: {r['detail']}", highlight=False)
            for warning in r.get("warnings", ()):
                err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if not ok:
        raise typer.Exit(1)


@app.command()
def deploy(
    paths: Annotated[list[Path], typer.Argument(help="spec files or directories")],
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Validate and deploy specs (create or update), all or nothing."""

    async def body(svc: Any) -> list[dict[str, str]]:
        specs = svc.load(paths)
        for warning in svc.warnings(specs):
            err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
        result: list[dict[str, str]] = await svc.deploy(specs, dry_run=dry_run)
        return result

    results = with_service(config, body)
    if json_:
        emit_json(results)
        return
    for r in results:
        out.print(
            f"{r['workflow_id']}: {r['action']}{' (dry run)' if dry_run else ''}", highlight=False
        )


def _ids_command(verb: str, method: str) -> Callable[..., None]:
    def command(
        ids: Annotated[list[str], typer.Argument(help="workflow ids")],
        config: ConfigOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        async def body(svc: Any) -> None:
            await getattr(svc, method)(ids)

        with_service(config, body)
        if json_:
            emit_json([{"workflow_id": i, "action": verb} for i in ids])
        else:
            for i in ids:
                out.print(f"{i}: {verb}", highlight=False)

    command.__doc__ = {
        "undeployed": "Remove deployments; their triggers stop.",
        "paused": "Stop a workflow's triggers, keeping its state.",
        "resumed": "Restart a paused workflow's triggers.",
    }[verb]
    return command


app.command("undeploy")(_ids_command("undeployed", "undeploy"))
app.command("pause")(_ids_command("paused", "pause"))
app.command("resume")(_ids_command("resumed", "resume"))


def _daemon_line(daemon: dict[str, Any]) -> str:
    """One line on the daemons: running (how many) or not (last seen when)."""
    if daemon["running"]:
        n = len(daemon["replicas"])
        return f"daemon: running ({n} replica{'s' if n != 1 else ''})"
    if daemon["last_seen"]:
        return f"daemon: NOT RUNNING (last seen {_short(daemon['last_seen'])})"
    return "daemon: NOT RUNNING (never seen on this store)"


@app.command("list")
def list_(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """List deployments: id, triggers, state, next fire."""

    async def body(svc: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        rows = await svc.list()
        return rows, None if json_ else await svc.daemon()

    rows, daemon = with_service(config, body)
    if json_:
        emit_json(rows)
        return
    if daemon is not None:
        out.print(_daemon_line(daemon), highlight=False)
    table = Table("workflow", "name", "state", "triggers", "next fire")
    for row in rows:
        fires = [t["next_fire"] for t in row["triggers"] if t["next_fire"]]
        triggers = ", ".join(
            f"{t['id']} ({t['type']}{'' if t['state'] != 'disabled' else ', disabled'})"
            for t in row["triggers"]
        )
        table.add_row(
            row["workflow_id"],
            row["name"],
            row["state"],
            triggers,
            _short(min(fires)) if fires else "-",
        )
    out.print(table)


@app.command()
def status(
    workflow_id: Annotated[str | None, typer.Argument()] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Per trigger: type, state, next fire, last event, last error, health."""

    async def body(svc: Any) -> Any:
        if workflow_id is None:
            return [await svc.status(d["workflow_id"]) for d in await svc.list()]
        return await svc.status(workflow_id)

    result = with_service(config, body)
    if json_:
        emit_json(result)
        return
    views = result if isinstance(result, list) else [result]
    if views:
        out.print(_daemon_line(views[0]["daemon"]), highlight=False)
        pending = views[0].get("pending") if len(views) == 1 else None
        if pending and pending["count"]:
            out.print(
                f"{pending['count']} event(s) pending since {_short(pending['since'])}: "
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
            title=f"{view['workflow_id']} ({view['state']})",
        )
        for t in view["triggers"]:
            last = t["last_event"]
            details = ", ".join(f"{k}={v}" for k, v in t.get("details", {}).items())
            table.add_row(
                t["id"],
                t["type"],
                t["state"],
                t["health"],
                _short(t["next_fire"]),
                f"{_short(last['fired_at'])} {last['status']}" if last else "-",
                t["last_error"] or "-",
                details or "-",
            )
        out.print(table)


@app.command()
def export(workflow_id: str, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Print the deployed spec as TOML."""

    async def body(svc: Any) -> Any:
        if json_:
            return dict((await svc.store.get_deployment(workflow_id)).document)
        return await svc.export(workflow_id)

    result = with_service(config, body)
    if json_:
        emit_json(result)
    else:
        sys.stdout.write(result)


def _read_data(data: str | None) -> Any:
    if data is None:
        return {}
    text = data
    if data.startswith("@"):
        try:
            text = Path(data[1:]).read_text()
        except OSError as exc:
            fail(f"--data {data}: {exc.strerror}", 2)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--data is not valid JSON: {exc}", 2)


@app.command()
def trigger(
    workflow_id: str,
    data: Annotated[str | None, typer.Option("--data", help="JSON or @FILE")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="skip the confirmation")] = False,
    trigger_id: Annotated[str | None, typer.Option("--trigger")] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fire a workflow's manual trigger; prints the execution id."""
    payload = _read_data(data)
    user = getpass.getuser()

    async def body(svc: Any) -> Any:
        found = await svc.find_trigger(workflow_id, kind="manual", trigger_id=trigger_id)
        confirmed = yes
        if found.requires_confirmation and not yes:
            if not sys.stdin.isatty():
                raise SpecError(
                    f"trigger {found.spec.id!r} of {workflow_id!r} requires "
                    "confirmation: pass --yes (no terminal to ask on)"
                )
            confirmed = await anyio.to_thread.run_sync(
                lambda: typer.confirm(f"Fire {workflow_id} ({found.spec.id})?", default=False)
            )
            if not confirmed:
                return None
        return await svc.fire_manual(
            workflow_id, payload, user=user, confirmed=confirmed, trigger_id=found.spec.id
        )

    result = with_service(config, body)
    if result is None:
        fail("not confirmed; nothing fired", 1)
    if json_:
        emit_json(
            {
                "execution_id": result.execution_id,
                "workflow_id": result.workflow_id,
                "status": result.status,
            }
        )
    else:
        sys.stdout.write(result.execution_id + "\n")


@app.command()
def history(
    workflow_id: Annotated[str | None, typer.Argument()] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
    status_: Annotated[
        str | None, typer.Option("--status", help="pending, dispatched or failed")
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Trigger events, newest first."""
    if status_ not in (None, "pending", "dispatched", "failed"):
        fail(f"--status {status_!r}: use pending, dispatched or failed", 2)
    events = with_service(config, lambda svc: svc.history(workflow_id, limit=limit, status=status_))
    if json_:
        emit_json([e.to_json() for e in events])
        return
    table = Table(
        "execution id", "workflow", "trigger", "type", "fired", "status", "attempts", "last error"
    )
    for e in events:
        j = e.to_json()
        table.add_row(
            e.execution_id,
            e.workflow_id,
            e.trigger_id,
            e.trigger_type,
            _short(j["fired_at"]),
            e.status,
            str(e.attempts),
            e.last_error or "-",
        )
    out.print(table)


@app.command()
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
) -> None:
    """Why each occurrence did or didn't fire: in the last hour, a window, or around --at."""
    from wfsched.explain import ExplainService, story, window

    try:
        win = window(at=at, since=since, until=until)
    except SpecError as exc:
        fail(f"--{exc.field}: {exc.message}", 2)
    answer: dict[str, Any] = with_service(
        config, lambda svc: ExplainService(svc).explain(workflow_id, win, trigger_id=trigger_id)
    )
    if json_:
        emit_json(answer)
        return
    for line in story(answer):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def redeliver(
    execution_ids: Annotated[list[str], typer.Argument()],
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Queue events for dispatch again, with the same Idempotency-Key."""
    events = with_service(config, lambda svc: svc.redeliver(execution_ids))
    if json_:
        emit_json([{"execution_id": e.execution_id, "status": e.status} for e in events])
    else:
        for e in events:
            out.print(f"{e.execution_id}: queued", highlight=False)


@app.command()
def prune(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="delete dispatched and failed events older than this"),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count, delete nothing")] = False,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Delete events past retention now (pending events never); prints how many."""
    from wfsched.models import utcnow
    from wfsched.schedules.durations import parse_duration
    from wfsched.store import Retention
    from wfsched.store.retention import prune_all

    settings = settings_of(config)
    now = utcnow()
    if older_than is not None:
        try:
            age = timedelta(seconds=parse_duration(older_than))
        except ValueError as exc:
            fail(f"--older-than: {exc}", 2)
        retention = Retention(now - age, now - age)
    else:
        retention = Retention.at(
            now, settings.get("history.retention"), settings.get("history.failed_retention")
        )

    async def body(svc: Any) -> int:
        if dry_run:
            return int(await svc.store.count_prunable(retention))
        # Exact and without rests: an operator asked for it now; steps stay short, so a
        # daemon sharing the store still gets its turns.
        return await prune_all(svc.store, retention, rest=False)

    deleted = with_service(config, body)
    if json_:
        emit_json({"deleted": deleted, "dry_run": True} if dry_run else {"deleted": deleted})
    elif dry_run:
        out.print(f"would delete {deleted} events (dry run: nothing deleted)", highlight=False)
    else:
        out.print(f"deleted {deleted} events", highlight=False)


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


@app.command()
def density(
    hours: Annotated[int, typer.Option("--hours", min=1, max=168, help="how far ahead")] = 24,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fires per minute of every active time trigger over the next --hours: the peak minutes,
    the expressions behind them and the H rewrite that spreads each."""
    from wfsched.density import density as compute
    from wfsched.density import sparkline, time_triggers

    triggers = with_service(config, time_triggers)
    result = compute(triggers, now=datetime.now(UTC), hours=hours)
    if json_:
        emit_json(result.to_json())
        return
    out.print(
        f"{result.triggers} time triggers, {result.total} fires in {hours} h from "
        f"{result.start:%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )
    out.print(sparkline(result.counts), highlight=False)
    table = Table("minute (UTC)", "fires", "expression", "triggers", "suggested")
    for peak in result.peaks:
        for i, c in enumerate(peak.contributors):
            table.add_row(
                f"{peak.minute:%Y-%m-%d %H:%M}" if i == 0 else "",
                str(peak.fires) if i == 0 else "",
                c.expression,
                str(c.triggers),
                c.suggestion or "-",
            )
    out.print(table)


@app.command()
def plugins(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Trigger types and dispatch targets with their source (built-in, entry point, plugins dir)."""
    registry = configured(config).registry
    rows = [
        {"type": t.type, "kind": "trigger", "source": t.source, "module": t.module}
        for t in registry.all()
    ] + [
        {"type": t.name, "kind": "dispatch-target", "source": t.source, "module": t.module}
        for t in registry.targets()
    ]
    if json_:
        emit_json(rows)
        return
    table = Table("type", "kind", "source", "module")
    for r in rows:
        table.add_row(r["type"], r["kind"], r["source"], r["module"])
    out.print(table)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run the daemon until SIGINT/SIGTERM, then drain and exit 0."""
    from wfsched.daemon import serve as serve_daemon
    from wfsched.logs import setup_logging

    settings, registry = configured(config)
    setup_logging(settings.get("log.format"), settings.get("log.level"))
    run(lambda: serve_daemon(settings, registry=registry, host=host, port=port), fast_loop=True)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=list(argv) if argv is not None else None, prog_name="wfsched")
