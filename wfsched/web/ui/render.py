"""Rendering the dashboard's pages: one Jinja2 environment (autoescaped), the filters the
templates use, the density chart as server-made SVG, and the headers every page carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from wfsched.web.access import access_of
from wfsched.web.ui.session import Session, set_cookie

HEADERS = {
    # Nothing but the daemon itself: no CDN, no inline script, no framing by another site.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
PAGE = 50
"""Rows per page of every list."""


def utc(value: datetime | str | None) -> str:
    """An instant as ``YYYY-MM-DD HH:MM`` in UTC, ``:SS`` added when not on the minute."""
    if value is None or value == "":
        return "-"
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S" if t.second or t.microsecond else "%Y-%m-%d %H:%M")


_ENV = Environment(
    loader=PackageLoader("wfsched.web.ui", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["utc"] = utc


def page(
    request: Request,
    session: Session | None,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
) -> Response:
    """Render ``template`` with ``context``; a session started by this request sets its cookie."""
    body = _ENV.get_template(template).render(
        {
            **context,
            "csrf": session.csrf if session else "",
            "signed_in": session is not None,
            # Without a token there is no sign-in, hence nothing to sign out of.
            "sign_out": session is not None and bool(access_of(request).token),
        }
    )
    response = HTMLResponse(body, status_code=status, headers=HEADERS)
    if session is not None and session.issued:
        set_cookie(response, request, session.issued)
    return response


def static(name: str) -> bytes:
    return files("wfsched.web.ui").joinpath("static", name).read_bytes()


# -- the density chart ---------------------------------------------------------------------
CHART_HEIGHT = 160


def chart(counts: Sequence[int], peaks: Sequence[int], start: datetime) -> dict[str, Any]:
    """Bars (one per minute with fires), hour ticks every 3 h, for ``density.html``'s SVG.

    Bar heights are in viewBox units; the SVG scales to the page width without script."""
    top = max(counts, default=0) or 1
    peak_set = set(peaks)
    bars = [
        {
            "x": m,
            "h": max(1.0, round(n * CHART_HEIGHT / top, 2)),
            "peak": m in peak_set,
            "n": n,
        }
        for m, n in enumerate(counts)
        if n
    ]
    offset = (60 - start.minute) % 60
    ticks = [
        {"x": m, "label": f"{(start.hour + (m + start.minute) // 60) % 24:02d}:00"}
        for m in range(offset, len(counts), 60)
        if ((start.hour + (m + start.minute) // 60) % 24) % 3 == 0
    ]
    return {"width": len(counts), "height": CHART_HEIGHT, "top": top, "bars": bars, "ticks": ticks}
