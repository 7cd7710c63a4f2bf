"""The ingress ceiling: a bare Starlette route that reads the body and answers 202.

Served by ``uvicorn benchmarks._ingress_bare:app`` with the same flags as wfsched; it has
wfsched's route shape and answer shape but no auth, no store and no logging.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def hook(request: Request) -> Response:
    await request.body()
    return JSONResponse(
        {"execution_id": "0" * 26, "workflow_id": request.path_params["id"], "status": "accepted"},
        status_code=202,
    )


app = Starlette(routes=[Route("/api/v1/public/webhook/workflow/{id}", hook, methods=["POST"])])
