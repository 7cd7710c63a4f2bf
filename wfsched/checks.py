"""``wfsched check``: prove that what is configured works, and say what answered.

Each check does what the daemon will do: log in to SMTP with the configured credentials,
resolve every secret reference of the config and of every deployed spec, load every time zone,
reach the engine over HTTP. The core checks what the core configures; each trigger type adds
its own through ``BaseTrigger.checks`` (the email type logs in to IMAP, the github type signs
an App JWT and has GitHub accept it). A check that fails gives one result whose detail names
what failed and why; the command exits 1.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio

from wfsched.config import Settings
from wfsched.dispatch.notify import SECURITY_LABELS, SmtpTarget, classify
from wfsched.errors import WfschedError
from wfsched.models import Deployment
from wfsched.secretrefs import is_reference, resolve_secret, values_at

if TYPE_CHECKING:
    from wfsched.plugins import Registry
    from wfsched.store import Store

Result = dict[str, Any]
CHECK_TIMEOUT = 10.0


async def _check(name: str, fn: Callable[[], Awaitable[str]]) -> Result:
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            detail = await fn()
        return {"name": name, "ok": True, "detail": detail}
    except TimeoutError:
        return {"name": name, "ok": False, "detail": f"timed out after {CHECK_TIMEOUT:g} s"}
    except (WfschedError, OSError, ssl.SSLError, ValueError) as exc:
        return {"name": name, "ok": False, "detail": str(exc) or type(exc).__name__}


def _failed(name: str, detail: str) -> Result:
    return {"name": name, "ok": False, "detail": detail}


async def run_checks(
    settings: Settings, registry: Registry, *, store: Store | None = None
) -> list[Result]:
    """Return one result per check; ``registry``: the plugins ``settings`` name; ``store``:
    an open store to use (the daemon's), else the configured one is opened."""
    from wfsched.backends import connected

    @asynccontextmanager
    async def opened() -> AsyncIterator[Store]:
        if store is not None:
            yield store
        else:
            async with connected(settings) as s:
                yield s

    results: list[Result] = []
    deployments: list[Deployment] = []

    async def store_check() -> str:
        async with opened() as s:
            await s.ping()
            await s.check_writable()
            deployments.extend(await s.list_deployments())
        return f"{_safe_url(settings.store_url)} ({len(deployments)} deployments)"

    results.append(await _check("store", store_check))
    results.append(await _check("locks", lambda: _locks(settings)))
    results.append(await _check("plugins", lambda: _plugins(registry)))
    results.append(_specs(settings, registry, deployments))
    results.extend(_config_secrets(settings))
    results.extend(_spec_secrets(registry, deployments))
    results.extend(_time_zones(settings, deployments))
    if settings.get("notify.smtp_url"):
        results.append(await _check("smtp", lambda: _smtp(settings)))
    for kind in registry.all():
        try:
            checks = kind.cls.checks(settings.sections)
        except (WfschedError, ValueError) as exc:
            results.append(_failed(kind.type, str(exc)))
            continue
        for check in checks:
            results.append(await _check(check.name, check.probe))
    if settings.get("dispatch.mode") == "engine":
        results.append(await _check("engine", lambda: _engine(settings)))
    return results


async def _locks(settings: Settings) -> str:
    from wfsched.backends import open_locks

    manager = open_locks(settings.locks_url)
    try:
        return await manager.describe()
    finally:
        await manager.close()


async def _plugins(registry: Registry) -> str:
    return ", ".join(t.type for t in registry.all())


def _specs(settings: Settings, registry: Registry, deployments: list[Deployment]) -> Result:
    """Deployed specs are validated again (a plugin may be gone); their advice is shown, e.g.
    a public webhook without auth."""
    from wfsched.spec import parse_spec

    warnings: list[str] = []
    for d in deployments:
        try:
            spec = parse_spec(d.document, registry, source=f"deployment {d.workflow_id}")
        except WfschedError as exc:
            return _failed("specs", str(exc))
        for trigger in spec.triggers:
            for text in registry.get(trigger.type).warnings(trigger.config):
                warnings.append(f"{spec.id}: trigger {trigger.id!r}: {text}")
    detail = f"{len(deployments)} deployed specs valid, {len(warnings)} warning(s)"
    return {"name": "specs", "ok": True, "detail": detail, "warnings": warnings}


def _config_secrets(settings: Settings) -> list[Result]:
    """Every secret setting given as a reference resolves (the daemon resolves them at start)."""
    failures, resolved = [], 0
    for setting in settings.declared:
        value = settings.get(setting.name)
        if setting.kind != "secret" or not is_reference(value):
            continue
        try:
            settings.secret(setting.name)
            resolved += 1
        except WfschedError as exc:
            failures.append(_failed("config secret", str(exc)))
    return failures or [
        {"name": "config secrets", "ok": True, "detail": f"{resolved} reference(s) resolved"}
    ]


def _spec_secrets(registry: Registry, deployments: list[Deployment]) -> list[Result]:
    """Every ``env:``/``file:`` reference in a secret field of a deployed trigger resolves."""
    failures, resolved = [], 0
    for workflow_id, trigger_id, config, cls in _deployed_triggers(registry, deployments):
        for name in cls.secret_fields(config):
            for value in values_at(config, name):
                if not is_reference(value):
                    continue
                try:
                    resolve_secret(value, field=name)
                    resolved += 1
                except WfschedError as exc:
                    where = f"deployment {workflow_id}: trigger {trigger_id!r}"
                    failures.append(_failed("spec secret", f"{where}: {exc}"))
    return failures or [
        {"name": "spec secrets", "ok": True, "detail": f"{resolved} reference(s) resolved"}
    ]


def _time_zones(settings: Settings, deployments: list[Deployment]) -> list[Result]:
    """The default zone and every zone a deployed trigger names exist on this host."""
    zones = {str(settings.get("scheduler.timezone")): "scheduler.timezone"}
    for d in deployments:
        for index, table in enumerate(d.document.get("triggers", [])):
            zone = table.get("timezone") if isinstance(table, dict) else None
            if isinstance(zone, str):
                label = table.get("id") or f"#{index + 1}"
                zones.setdefault(zone, f"deployment {d.workflow_id}: trigger {label!r}")
    failures = []
    for zone, where in zones.items():
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            failures.append(_failed("time zone", f"{where}: unknown IANA time zone {zone!r}"))
    return failures or [
        {"name": "time zones", "ok": True, "detail": f"{', '.join(sorted(zones))} known"}
    ]


def _deployed_triggers(
    registry: Registry, deployments: list[Deployment]
) -> Iterator[tuple[str, str, dict[str, Any], Any]]:
    """``(workflow_id, trigger_id, validated config, type)`` of every deployed trigger."""
    from wfsched.spec import parse_spec

    for d in deployments:
        try:
            spec = parse_spec(d.document, registry)
        except WfschedError:
            continue  # the specs check reports it
        for trigger in spec.triggers:
            yield d.workflow_id, trigger.id, dict(trigger.config), registry.get(trigger.type)


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


async def _engine(settings: Settings) -> str:
    """Any HTTP answer proves the engine is reachable (its base URL need not serve a page)."""
    import httpx

    url = str(settings.get("dispatch.engine_url"))
    try:
        async with httpx.AsyncClient(timeout=8.0, follow_redirects=False) as http:
            answer = await http.get(url)
    except httpx.HTTPError as exc:
        raise WfschedError(f"{url}: {type(exc).__name__}: {exc or 'no answer'}") from None
    return f"{url} answered HTTP {answer.status_code}"


async def _smtp(settings: Settings) -> str:
    """Connect as notify mode does (TLS as configured) and log in when the URL has a user."""
    # notify's own parser: the same host, port and security as a delivery (smtp+starttls is 587).
    target = SmtpTarget(settings.secret("notify.smtp_url"))
    where = f"{target.display} ({SECURITY_LABELS[target.security]})"

    def session() -> str:
        conn: smtplib.SMTP
        if target.security == "tls":
            context = ssl.create_default_context()
            conn = smtplib.SMTP_SSL(target.host, target.port, timeout=8, context=context)
        else:
            conn = smtplib.SMTP(target.host, target.port, timeout=8)
        try:
            conn.ehlo()
            if target.security == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if target.user is None:
                return "no user in notify.smtp_url: login not tried"
            conn.login(target.user, target.password or "")
            return f"logged in as {target.user!r}"
        finally:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()

    try:
        done = await anyio.to_thread.run_sync(session, abandon_on_cancel=True)
    except (smtplib.SMTPException, OSError) as exc:
        raise WfschedError(f"{where}: {classify(exc, target.display)}") from None
    return f"{where}: {done}"
