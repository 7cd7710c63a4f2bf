"""What the web layer needs from the daemon, and how a handler finds it on the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wfsched.config import Settings
from wfsched.deployments import DeploymentService
from wfsched.manager import TriggerManager
from wfsched.store import Store


@dataclass
class WebServices:
    """What the web layer needs from the daemon."""

    settings: Settings
    store: Store
    deployments: DeploymentService
    manager: TriggerManager
    api_token: str
    bind_host: str = ""
    """The address the server listens on; empty: ``server.host``."""


def services_of(app: Any) -> WebServices:
    """The services ``create_app`` gave ``app`` (``request.app``, or ``scope["app"]``).

    An attribute of the app rather than of ``app.state``: the webhook route reads it on every
    request, and ``State`` finds its keys through ``__getattr__``, after a failed lookup that
    costs a microsecond.
    """
    services: WebServices = app.services
    return services
