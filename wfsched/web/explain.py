"""``GET /api/v1/deployment/workflows/{id}/explain``: the answer of ``wfsched explain``.

Query: ``trigger``, ``at`` or ``since`` (and ``until``), ISO 8601. A bad instant or window is
400 ``bad_request`` naming the parameter; an unknown workflow or trigger 404.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wfsched.errors import SpecError
from wfsched.explain import ExplainService, window
from wfsched.web.requests import HttpError
from wfsched.web.services import services_of


async def explain(request: Request) -> Response:
    services = services_of(request.app)
    query = request.query_params
    try:
        win = window(at=query.get("at"), since=query.get("since"), until=query.get("until"))
    except SpecError as exc:
        raise HttpError(400, "bad_request", f"{exc.field}: {exc.message}") from None
    answer = await ExplainService(services.deployments).explain(
        request.path_params["id"], win, trigger_id=query.get("trigger") or None
    )
    return JSONResponse(answer)
