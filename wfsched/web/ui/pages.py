"""The dashboard's handlers: sign-in, the fleet, one workflow, fire density, and the three
actions (pause, resume, a confirmed manual fire). Nothing else here changes state.

Every handler runs behind :func:`guarded`, which settles the session
(:mod:`wfsched.web.ui.session`) into ``request.state.session`` and answers every failure as
an HTML page (or a redirect to the sign-in form).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from wfsched.density import next_fires, triggers_of
from wfsched.explain import ExplainService, window
from wfsched.models import EventStatus
from wfsched.web.access import access_of
from wfsched.web.errors import Handler, http_error_of
from wfsched.web.requests import HttpError
from wfsched.web.services import services_of
from wfsched.web.ui.index import density_now, expressions_of
from wfsched.web.ui.render import HEADERS, PAGE, chart, page, static
from wfsched.web.ui.session import (
    Refused,
    Session,
    authenticate,
    check_csrf,
    clear_cookie,
    new_cookie,
    read_form,
    set_cookie,
    token_matches,
)

STATUSES: tuple[EventStatus, ...] = ("pending", "dispatched", "failed")
_HEALTH_ORDER = {"healthy": 0, "degraded": 1, "failing": 2}


def guarded(handler: Handler) -> Handler:
    """``handler`` for signed-in (or loopback) browsers; every failure an HTML page."""

    async def endpoint(request: Request) -> Response:
        try:
            request.state.session = authenticate(request)
            return await handler(request)
        except Refused as exc:
            if exc.sign_in and request.method == "GET":
                return RedirectResponse("/ui/signin", 303, headers=HEADERS)
            return _error(request, exc.status, exc.detail)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a page
            err = http_error_of(exc, path=request.url.path, method=request.method)
            return _error(request, err.status, err.detail)

    return endpoint


def _error(request: Request, status: int, detail: str) -> Response:
    session = getattr(request.state, "session", None)
    return page(request, session, "error.html", {"status": status, "detail": detail}, status=status)


def _session(request: Request) -> Session:
    session: Session = request.state.session
    return session


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return max(1, int(raw)) if raw.isdigit() else 1


def _see(path: str, **query: str) -> RedirectResponse:
    target = path + ("?" + urlencode(query) if query else "")
    return RedirectResponse(target, 303, headers=HEADERS)


# -- sign-in -------------------------------------------------------------------------------
async def signin(request: Request) -> Response:
    """The sign-in form (GET) and its check (POST); without a token there is nothing to do."""
    access = access_of(request)
    if access.closed or not access.token:
        return await guarded(_home)(request)
    if request.method == "GET":
        return page(request, None, "signin.html", {"error": ""})
    try:
        form = await read_form(request)
    except Exception as exc:  # noqa: BLE001 - answered as the form again
        return page(request, None, "signin.html", {"error": str(exc)}, status=400)
    if not token_matches(request, form.get("token", "")):
        return page(
            request, None, "signin.html", {"error": "that is not server.api_token"}, status=401
        )
    response = _see("/ui/")
    set_cookie(response, request, new_cookie(access)[0])
    return response


async def _home(request: Request) -> Response:
    return _see("/ui/")


async def signout(request: Request) -> Response:
    check_csrf(_session(request), await read_form(request))
    response = _see("/ui/signin" if access_of(request).token else "/ui/")
    clear_cookie(response)
    return response


async def stylesheet(request: Request) -> Response:
    return Response(
        static("ui.css"), media_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


async def favicon(request: Request) -> Response:
    return Response(
        static("favicon.svg"), media_type="image/svg+xml", headers={"Cache-Control": "max-age=3600"}
    )


# -- the fleet -----------------------------------------------------------------------------
async def fleet(request: Request) -> Response:
    """Deployments whose id or name contains ``q``, 50 a page, with health and next fire."""
    services = services_of(request.app)
    # Pages read through the store's reader: never queued behind a burst's writes.
    views = services.deployments.reading()
    query = request.query_params.get("q", "").strip()
    number = _page_number(request)
    # One page from the store (no document read for the search): as fast first as later.
    shown, total = await views.store.find_deployments(query, offset=(number - 1) * PAGE, limit=PAGE)
    # The rows' statuses in a few reads for the whole page, not a few per row.
    statuses = await views.statuses(shown)
    rows = [_fleet_row(status) for status in statuses if status is not None]
    return page(
        request,
        _session(request),
        "fleet.html",
        {
            "q": query,
            "rows": rows,
            "total": total,
            "page": number,
            "pages": max(1, -(-total // PAGE)),
        },
    )


def _fleet_row(view: dict[str, Any]) -> dict[str, Any]:
    triggers = view["triggers"]
    health = max(
        (t["health"] for t in triggers), key=lambda h: _HEALTH_ORDER.get(h, 3), default="-"
    )
    fires = [t["next_fire"] for t in triggers if t["next_fire"]]
    return {
        "id": view["workflow_id"],
        "name": view["name"],
        "state": view["state"],
        "health": health,
        "next_fire": min(fires, key=_instant) if fires else None,
        "triggers": len(triggers),
    }


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- one workflow --------------------------------------------------------------------------
async def workflow(request: Request) -> Response:
    """Triggers, the next 10 fires of each time trigger, history (filtered, 50 a page)."""
    views = services_of(request.app).deployments.reading()
    workflow_id = request.path_params["id"]
    view = await views.status(workflow_id)
    deployment = await views.store.get_deployment(workflow_id)
    now = datetime.now(UTC)
    upcoming = [
        {"trigger": t.trigger_id, "expression": t.expression, "fires": next_fires(t.timer, now)}
        for t in triggers_of(views, deployment)
    ]
    status_filter = request.query_params.get("status", "")
    trigger_filter = request.query_params.get("trigger", "")
    status: EventStatus | None = next((s for s in STATUSES if s == status_filter), None)
    number = _page_number(request)
    # Newest first by limit, filters in the query (index-backed): fetch through this page,
    # one row more to know whether a next page exists.
    events = await views.store.history(
        workflow_id, limit=number * PAGE + 1, status=status, trigger_id=trigger_filter or None
    )
    shown = events[(number - 1) * PAGE : number * PAGE]
    # The explain timeline: every occurrence of the last hour, newest first.
    explained = await ExplainService(views).explain(
        workflow_id, window(), trigger_id=trigger_filter or None
    )
    return page(
        request,
        _session(request),
        "workflow.html",
        {
            "wf": view,
            "upcoming": upcoming,
            "events": shown,
            "explain": explained,
            "occurrences": list(reversed(explained["occurrences"])),
            "has_next": len(events) > number * PAGE,
            "page": number,
            "status": status or "",
            "trigger": trigger_filter,
            "statuses": STATUSES,
            "done": request.query_params.get("done", ""),
            "quoted": quote(workflow_id, safe=""),
        },
    )


# -- fire density --------------------------------------------------------------------------
async def density(request: Request) -> Response:
    await expressions_of(request.app).refresh(services_of(request.app).store.reader())
    result = density_now(request.app, datetime.now(UTC))
    peaks = [int((p.minute - result.start).total_seconds() // 60) for p in result.peaks]
    return page(
        request,
        _session(request),
        "density.html",
        {"d": result, "chart": chart(result.counts, peaks, result.start)},
    )


# -- actions -------------------------------------------------------------------------------
async def pause(request: Request) -> Response:
    return await _set_state(request, "paused")


async def resume(request: Request) -> Response:
    return await _set_state(request, "resumed")


async def _set_state(request: Request, done: str) -> Response:
    check_csrf(_session(request), await read_form(request))
    services = services_of(request.app)
    workflow_id = request.path_params["id"]
    await services.store.get_deployment(workflow_id)  # NotFound before changing anything
    if done == "paused":
        await services.deployments.pause([workflow_id])
    else:
        await services.deployments.resume([workflow_id])
    return _see(f"/ui/workflows/{quote(workflow_id, safe='')}", done=done)


async def manual(request: Request) -> Response:
    """GET: the confirmation step; POST (confirmed, with the CSRF token): the fire."""
    services = services_of(request.app)
    workflow_id = request.path_params["id"]
    if request.method == "GET":
        trigger_id = request.query_params.get("trigger", "")
        await services.store.get_deployment(workflow_id)
        return page(
            request,
            _session(request),
            "confirm.html",
            {"id": workflow_id, "trigger": trigger_id, "quoted": quote(workflow_id, safe="")},
        )
    session = _session(request)
    form = await read_form(request)
    check_csrf(session, form)
    if form.get("confirm") != "yes":
        raise HttpError(400, "bad_request", "nothing fired: the confirmation was not given")
    result = await services.deployments.fire_manual(
        workflow_id,
        {},
        user=session.user,
        confirmed=True,
        trigger_id=form.get("trigger") or None,
    )
    return _see(f"/ui/workflows/{quote(workflow_id, safe='')}", done=f"fired {result.execution_id}")
