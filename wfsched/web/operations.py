"""Management routes that give the API what the CLI can do: pause and resume, export, a batch
deploy, executions (filtered, cursor-paged) and their redelivery, check, plugins, prune, and
the paged deployment list. Every handler reads the daemon's services from
``services_of(request.app)`` and is registered behind the management guard.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wfsched.errors import InvalidInput
from wfsched.models import EventStatus, parse_instant, utcnow
from wfsched.web.requests import HttpError, parse_json, read_body, require_json
from wfsched.web.services import WebServices, services_of

MAX_PAGE = 1000
"""The largest ``limit`` a paged route serves at once."""
BATCH_BODY_LIMIT = 16 * 1024 * 1024
"""A batch deploy carries many specs; each one is also limited by the spec rules."""
EVENT_STATUSES = ("pending", "dispatched", "failed")
DEPLOYMENT_STATES = ("active", "paused")


def _services(request: Request) -> WebServices:
    return services_of(request.app)


def _param(request: Request, name: str) -> str | None:
    """A query parameter given at most once; an empty value is a value (and usually wrong)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def _query(request: Request, name: str, choices: tuple[str, ...] = ()) -> str | None:
    value = _param(request, name)
    if value is not None and choices and value not in choices:
        raise InvalidInput(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value


def _flag(request: Request, name: str) -> bool:
    return _query(request, name, ("true", "false")) == "true"


def _limit(request: Request, default: int | None) -> int | None:
    raw = _param(request, "limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidInput(f"limit={raw!r}: use a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _instant(request: Request, name: str) -> datetime | None:
    raw = _param(request, name)
    return None if raw is None else parse_instant(raw, name)


async def workflows(request: Request) -> Response:
    """``GET``: the deployments; ``POST``: a batch deploy."""
    return await (deploy_batch(request) if request.method == "POST" else list_workflows(request))


async def list_workflows(request: Request) -> Response:
    """All deployments (a list), or with ``limit`` one page ``{"items", "next_cursor"}``."""
    limit = _limit(request, None)
    page = await _services(request).deployments.page(
        limit=limit,
        cursor=_param(request, "cursor"),
        state=_query(request, "state", DEPLOYMENT_STATES),
        q=_param(request, "q"),
    )
    return JSONResponse(page if limit is not None else page["items"])


async def deploy_batch(request: Request) -> Response:
    """Validate and deploy ``{"specs": [{"source", "document"}], "dry_run"}`` all or nothing."""
    require_json(request)
    body = parse_json(await read_body(request, BATCH_BODY_LIMIT))
    if not isinstance(body, dict) or not isinstance(body.get("specs"), list):
        raise HttpError(400, "invalid_json", 'send {"specs": [{"source", "document"}, …]}')
    documents: list[tuple[str, Mapping[str, Any]]] = []
    for index, item in enumerate(body["specs"]):
        if not isinstance(item, dict) or not isinstance(item.get("document"), dict):
            raise HttpError(400, "invalid_json", f"specs[{index}].document must be an object")
        source = item.get("source")
        documents.append(
            (source if isinstance(source, str) else f"specs[{index}]", item["document"])
        )
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise HttpError(400, "invalid_json", "dry_run must be true or false")
    deployments = _services(request).deployments
    specs = deployments.parse_batch(documents, from_api=True)
    results = await deployments.deploy(specs, dry_run=dry_run)
    return JSONResponse({"results": results, "warnings": deployments.warnings(specs)})


def _state_change(verb: str, method: str) -> Any:
    async def handler(request: Request) -> Response:
        workflow_id = request.path_params["id"]
        await getattr(_services(request).deployments, method)([workflow_id])
        return JSONResponse({"workflow_id": workflow_id, "action": verb})

    handler.__name__ = method
    handler.__doc__ = f"{method.capitalize()} one workflow (404 when it is not deployed)."
    return handler


pause = _state_change("paused", "pause")
resume = _state_change("resumed", "resume")


async def export(request: Request) -> Response:
    """The deployed spec as TOML (``application/toml``)."""
    text = await _services(request).deployments.export(request.path_params["id"])
    return Response(text, media_type="application/toml")


async def executions(request: Request) -> Response:
    """Trigger events newest first, filtered, one page at a time (keyset on execution id)."""
    page = await _services(request).deployments.executions(
        limit=cast(int, _limit(request, 50)),
        workflow_id=_query(request, "workflow_id"),
        trigger_id=_query(request, "trigger_id"),
        status=cast(EventStatus | None, _query(request, "status", EVENT_STATUSES)),
        since=_instant(request, "since"),
        until=_instant(request, "until"),
        cursor=_param(request, "cursor"),
    )
    return JSONResponse(page)


async def redeliver(request: Request) -> Response:
    """Queue one failed event for dispatch again (same execution id: same Idempotency-Key)."""
    [event] = await _services(request).deployments.redeliver([request.path_params["execution_id"]])
    return JSONResponse({"execution_id": event.execution_id, "status": event.status})


async def check(request: Request) -> Response:
    """What ``wfsched check`` reports, run by the daemon with its own settings and store."""
    from wfsched.checks import run_checks

    services = _services(request)
    results = await run_checks(services.settings, services.manager.registry, store=services.store)
    return JSONResponse(
        {
            "ok": all(r["ok"] for r in results),
            "config": services.settings.path,
            "checks": results,
        }
    )


async def plugins(request: Request) -> Response:
    """Trigger types and dispatch targets the daemon loaded, with their kind and source."""
    from wfsched.plugins import plugin_rows

    return JSONResponse(plugin_rows(_services(request).manager.registry))


async def density(request: Request) -> Response:
    """Fires per minute of every active time trigger over the next ``hours`` (default 24)."""
    from wfsched.density import density as compute
    from wfsched.density import time_triggers

    raw = _param(request, "hours")
    raw = "24" if raw is None else raw
    if not raw.isdigit() or not 1 <= int(raw) <= 168:
        raise HttpError(400, "bad_request", "hours: a whole number from 1 to 168")
    triggers = await time_triggers(_services(request).deployments)
    return JSONResponse(compute(triggers, now=utcnow(), hours=int(raw)).to_json())


async def prune(request: Request) -> Response:
    """Delete events past retention now (``older_than``: one age for dispatched and failed);
    ``dry_run=true`` counts only. Pending events are never deleted."""
    from wfsched.schedules.durations import parse_duration
    from wfsched.store import Retention
    from wfsched.store.retention import prune_all

    services = _services(request)
    now = utcnow()
    older_than = _param(request, "older_than")
    if older_than is not None:
        try:
            age = timedelta(seconds=parse_duration(older_than))
        except ValueError as exc:
            raise InvalidInput(f"older_than: {exc}") from None
        retention = Retention(now - age, now - age)
    else:
        settings = services.settings
        retention = Retention.at(
            now, settings.get("history.retention"), settings.get("history.failed_retention")
        )
    if _flag(request, "dry_run"):
        return JSONResponse(
            {"deleted": await services.store.count_prunable(retention), "dry_run": True}
        )
    return JSONResponse({"deleted": await prune_all(services.store, retention, rest=False)})
