"""The ``wfsched`` command line: parses, calls a Control, renders (rich tables or --json).

Every command but ``serve``, ``init`` and ``cron`` works on the store here or, with ``--url``,
on a daemon's HTTP API alone; it calls a :class:`wfsched.control.Control` either way and
renders the same answers the same way. Adding a command stays one function.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wfsched import __version__
from wfsched.config import ConfigSource, Settings, default_config_text
from wfsched.errors import (
    AuthError,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    SpecError,
    StoreError,
    WfschedError,
)
from wfsched.spec import InvalidSpecs

if TYPE_CHECKING:
    from wfsched.control import Control
    from wfsched.plugins import Configured

T = TypeVar("T")
app = typer.Typer(
    help="wfsched: durable workflow triggers. Shell completion: wfsched --install-completion.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", help="config file (wfsched.toml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="WFSCHED_URL",
        help="a daemon's base URL: work over its HTTP API (no store or plugins here)",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="WFSCHED_API_TOKEN",
        help="bearer token of the daemon's management API (with --url)",
        show_envvar=True,
    ),
]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a command works (the store of ``config``, or the daemon at ``url``) and how it
    prints (``json``: answers and errors as JSON)."""

    config: str | None = None
    url: str | None = None
    token: str | None = None
    json: bool = False


_JSON_ERRORS = [False]
"""Whether the running command prints its errors as JSON (set once per process)."""


def fail(message: str, code: int, error: str = "error") -> NoReturn:
    """Report an error in one line (JSON ``{"error", "detail"}`` on stdout with --json)."""
    if _JSON_ERRORS[0]:
        emit_json({"error": error, "detail": message})
    else:
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def configured(config: str | None) -> Configured:
    """The settings, validated with the plugins they name (``wfsched.plugins.configure``).

    A bad config or plugin file exits 2; two plugins claiming one name exit 1.
    """
    from wfsched.plugins import configure

    try:
        return configure(config)
    except ConfigError as exc:
        fail(str(exc), 2, "invalid_config")
    except WfschedError as exc:
        fail(str(exc), 1)


def settings_of(config: str | None) -> Settings:
    return configured(config).settings


def error_of(exc: WfschedError) -> tuple[str, int]:
    """The JSON code and exit code of an error (1 operation failed, 2 invalid input); the
    codes are the HTTP API's, so a command reports alike on either side."""
    from wfsched.client import ApiError, Unreachable

    if isinstance(exc, ApiError):
        return exc.code, 2 if exc.invalid_input else 1
    table: tuple[tuple[type[WfschedError], str, int], ...] = (
        (InvalidSpecs, "invalid_spec", 2),
        (SpecError, "invalid_spec", 2),
        (ConfigError, "invalid_config", 2),
        (InvalidInput, "bad_request", 2),
        (NotFound, "not_found", 1),
        (Conflict, "conflict", 1),
        (AuthError, "unauthorized", 1),
        (StoreError, "store_unavailable", 1),
        (Unreachable, "unreachable", 1),
    )
    for kind, code, exit_code in table:
        if isinstance(exc, kind):
            return code, exit_code
    return "error", 1


def run(fn: Callable[[], Awaitable[T]], *, fast_loop: bool = False) -> T:
    """Run a coroutine, mapping wfsched errors to one line and an exit code.

    ``fast_loop``: use uvloop when installed (the daemon: about 1.5x the HTTP throughput).
    """
    options = {"use_uvloop": True} if fast_loop and find_spec("uvloop") is not None else {}
    try:
        return anyio.run(fn, backend_options=options)
    except WfschedError as exc:
        code, exit_code = error_of(exc)
        fail(str(exc), exit_code, code)
    except BaseExceptionGroup as group:
        # A task group fails with every error of its tasks; report the first one of ours.
        first = group.subgroup(lambda e: isinstance(e, WfschedError))
        while first is not None and isinstance(first.exceptions[0], BaseExceptionGroup):
            first = first.exceptions[0]
        if first is None:
            raise
        inner = first.exceptions[0]
        assert isinstance(inner, WfschedError)
        code, exit_code = error_of(inner)
        fail(str(inner), exit_code, code)


def control_of(target: Target) -> Control:
    """The Control a command calls: remote with a URL, else on the configured store."""
    from wfsched.client import RemoteControl
    from wfsched.control import LocalControl

    if target.url:
        try:
            return RemoteControl(target.url, target.token)
        except InvalidInput as exc:
            fail(str(exc), 2, "bad_request")
    return LocalControl(configured(target.config))


def call(target: Target, fn: Callable[[Control], Awaitable[T]]) -> T:
    """Run ``fn`` with the target's Control; errors exit with one line (JSON with --json)."""
    _JSON_ERRORS[0] = target.json
    control = control_of(target)

    async def body() -> T:
        try:
            return await fn(control)
        finally:
            await control.aclose()

    return run(body)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def cell(value: Any) -> Text:
    """User text in a table cell, shown verbatim (never read as rich markup)."""
    return Text("-" if value is None or value == "" else str(value))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def _short(ts: str | None) -> str:
    if not ts:
        return "-"
    return ts.replace("T", " ").split(".")[0].removesuffix("Z") + "Z"


def _examples(*lines: str) -> str:
    """An epilog of examples (click keeps a ``\\b`` paragraph's lines as written)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@app.command(epilog=_examples("wfsched init", "wfsched init --config /etc/wfsched/wfsched.toml"))
def init(config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Write a commented wfsched.toml (refuses to overwrite)."""
    from wfsched.plugins import load_registry

    _JSON_ERRORS[0] = json_
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
    epilog=_examples(
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


@app.command(
    epilog=_examples(
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
    app.command(_method, epilog=_examples(f"wfsched {_method} nightly-report orders"))(
        _ids_command(_verb, _method, _doc)
    )


def _daemon_line(daemon: dict[str, Any]) -> str:
    """One line on the daemons: running (how many) or not (last seen when)."""
    if daemon["running"]:
        n = len(daemon["replicas"])
        return f"daemon: running ({n} replica{'s' if n != 1 else ''})"
    if daemon["last_seen"]:
        return f"daemon: NOT RUNNING (last seen {_short(daemon['last_seen'])})"
    return "daemon: NOT RUNNING (never seen on this store)"


@app.command(
    "list",
    epilog=_examples(
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
    _JSON_ERRORS[0] = json_
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
            cell(_short(min(fires)) if fires else "-"),
        )
    out.print(table)
    if page["next_cursor"]:
        err.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@app.command(epilog=_examples("wfsched status", "wfsched status nightly-report --json"))
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
                cell(_short(t["next_fire"])),
                cell(f"{_short(last['fired_at'])} {last['status']}" if last else "-"),
                cell(t["last_error"]),
                cell(details),
            )
        out.print(table)


@app.command(epilog=_examples("wfsched export nightly-report > nightly-report.toml"))
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
    epilog=_examples(
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
    _JSON_ERRORS[0] = json_
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
    epilog=_examples(
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

    _JSON_ERRORS[0] = json_
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
            cell(_short(e["fired_at"])),
            cell(e["status"]),
            cell(e["attempts"]),
            cell(e["last_error"]),
        )
    out.print(table)


@app.command(
    epilog=_examples(
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


@app.command(epilog=_examples("wfsched redeliver 01JD5Y0N3V8Q2W7K4M6P9R1T3X"))
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


@app.command(epilog=_examples("wfsched prune --dry-run", "wfsched prune --older-than 7d --json"))
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

    _JSON_ERRORS[0] = json_
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

    _JSON_ERRORS[0] = json_
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


@app.command(epilog=_examples("wfsched density", "wfsched density --hours 6 --json"))
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


@app.command(epilog=_examples("wfsched plugins", "wfsched plugins --json"))
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
    epilog=_examples(
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

    _JSON_ERRORS[0] = json_
    settings, registry = configured(config)
    setup_logging(settings.get("log.format"), settings.get("log.level"))
    run(lambda: serve_daemon(settings, registry=registry, host=host, port=port), fast_loop=True)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__, highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version_: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """wfsched: durable workflow triggers."""


@app.command(
    epilog=_examples("wfsched version", "wfsched version --json --url http://wfsched:8003")
)
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
