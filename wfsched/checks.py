"""``wfsched check``: connect to everything that is configured and say what answered.

The core checks what the core configures (store, locks, SMTP, engine); each trigger type adds
its own through ``BaseTrigger.checks`` (e.g. the server its own settings section names).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from wfsched.config import Settings
from wfsched.dispatch.notify import SECURITY_LABELS, SmtpTarget
from wfsched.errors import WfschedError

if TYPE_CHECKING:
    from wfsched.plugins import Registry


async def _check(name: str, fn: Any) -> dict[str, Any]:
    try:
        with anyio.fail_after(10):
            detail = await fn()
        return {"name": name, "ok": True, "detail": detail}
    except TimeoutError:
        return {"name": name, "ok": False, "detail": "timed out after 10 s"}
    except (WfschedError, OSError, ssl.SSLError, ValueError) as exc:
        return {"name": name, "ok": False, "detail": str(exc) or type(exc).__name__}


async def run_checks(settings: Settings, registry: Registry) -> list[dict[str, Any]]:
    """Return one result per configured backend; ``registry``: the plugins ``settings`` name."""
    from wfsched.backends import connected, open_locks
    from wfsched.deployments import DeploymentService

    results: list[dict[str, Any]] = []

    async def store() -> str:
        async with connected(settings) as s:
            await s.ping()
            await s.check_writable()
            deployments = await s.list_deployments()
        return f"{_safe_url(settings.store_url)} ({len(deployments)} deployments)"

    async def locks() -> str:
        manager = open_locks(settings.locks_url)
        try:
            return await manager.describe()
        finally:
            await manager.close()

    async def plugins() -> str:
        return ", ".join(t.type for t in registry.all())

    warnings: list[str] = []

    async def specs() -> str:
        # Deployed specs are checked again (a plugin may be gone) and their advice shown,
        # e.g. a public webhook without auth.
        async with connected(settings) as s:
            svc = DeploymentService(store=s, registry=registry, settings=settings)
            parsed = [
                svc.parse_document(d.document, source=f"deployment {d.workflow_id}")
                for d in await s.list_deployments()
            ]
        warnings.extend(svc.warnings(parsed))
        return f"{len(parsed)} deployed specs valid, {len(warnings)} warning(s)"

    results.append(await _check("store", store))
    results.append(await _check("locks", locks))
    results.append(await _check("plugins", plugins))
    results.append({**await _check("specs", specs), "warnings": warnings})
    if settings.get("notify.smtp_url"):
        results.append(await _check("smtp", lambda: _smtp(settings)))
    for kind in registry.all():
        try:
            checks = kind.cls.checks(settings.sections)
        except (WfschedError, ValueError) as exc:
            results.append({"name": kind.type, "ok": False, "detail": str(exc)})
            continue
        for check in checks:
            results.append(await _check(check.name, check.probe))
    if settings.get("dispatch.mode") == "engine":
        results.append(await _check("engine", lambda: _tcp(settings.get("dispatch.engine_url"))))
    return results


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


async def _tcp(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "smtps") else 80)
    stream = await anyio.connect_tcp(parts.hostname or "localhost", port)
    await stream.aclose()
    return f"{parts.hostname}:{port} reachable"


async def _smtp(settings: Settings) -> str:
    # notify's own parser: the same host, port and security as a delivery (smtp+starttls is 587).
    target = SmtpTarget(settings.secret("notify.smtp_url"))
    where = f"{target.display} ({SECURITY_LABELS[target.security]})"
    try:
        stream = await anyio.connect_tcp(target.host, target.port)
    except OSError as exc:
        # anyio reports "All connection attempts failed"; the cause says why (refused, …).
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        raise WfschedError(f"{where}: cannot connect: {cause.strerror or cause}") from None
    await stream.aclose()
    return f"{where} reachable"
