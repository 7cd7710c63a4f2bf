"""The dashboard: server-rendered pages under ``/ui``, served by the daemon itself.

No CDN, no script, no build step: Jinja2 templates, one stylesheet and plain HTML forms.
:func:`mount` is the one entry the routes table adds.
"""

from __future__ import annotations

from starlette.routing import Mount, Route

from wfsched.web.ui import pages


def mount() -> Mount:
    """Every dashboard route under ``/ui``; each does its own access check (``pages.guarded``)."""
    g = pages.guarded
    return Mount(
        "/ui",
        routes=[
            Route("/", g(pages.fleet), methods=["GET"]),
            Route("/signin", pages.signin, methods=["GET", "POST"]),
            Route("/signout", g(pages.signout), methods=["POST"]),
            Route("/static/ui.css", pages.stylesheet, methods=["GET"]),
            Route("/static/favicon.svg", pages.favicon, methods=["GET"]),
            Route("/density", g(pages.density), methods=["GET"]),
            Route("/workflows/{id}", g(pages.workflow), methods=["GET"]),
            Route("/workflows/{id}/pause", g(pages.pause), methods=["POST"]),
            Route("/workflows/{id}/resume", g(pages.resume), methods=["POST"]),
            Route("/workflows/{id}/trigger", g(pages.manual), methods=["GET", "POST"]),
        ],
    )
