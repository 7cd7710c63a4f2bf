"""A trigger instance the manager runs: its record, its identity, its watcher's supervision.

Triggers of on-demand types (:func:`on_demand`) have no instance until a request or a manual
fire needs one; pure timer triggers never have one (the timer's compact member is all).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import anyio

from wfsched.context import TriggerCtx
from wfsched.errors import Conflict, WfschedError
from wfsched.models import TriggerSpec
from wfsched.spec import canonical_json
from wfsched.trigger import BaseTrigger, FireResult


def trigger_hash(spec: TriggerSpec) -> bytes:
    """Identity of a trigger's definition: a change restarts that trigger only."""
    text = canonical_json(
        {
            "type": spec.type,
            "enabled": spec.enabled,
            "payload": dict(spec.payload),
            "config": dict(spec.config),
        }
    )
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def on_demand(cls: type[BaseTrigger]) -> bool:
    """True when a trigger of type ``cls`` needs no instance until it is used: no watcher,
    no timer, no shared ingress index (a webhook, a manual trigger). The manager builds one
    from the stored spec on the first request and keeps it while the trigger is unchanged."""
    return not cls.has_run and cls.ingress in (None, "workflow") and cls.timer is BaseTrigger.timer


@dataclass(eq=False, slots=True)
class Running:
    """One running trigger instance (a watcher, a shared ingress, or an on-demand trigger
    built by its first request).

    Pure timer triggers have none: the timer's compact member is all they need; on-demand
    triggers (:func:`on_demand`) have none until a request needs one.
    """

    trigger: BaseTrigger
    ctx: TriggerCtx
    hash: bytes
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event | None = None


async def supervise(run: Running) -> None:
    """Run a watcher; restart it with backoff when it fails, reporting its health."""
    assert run.scope is not None and run.stopped is not None
    delay = 1.0
    with run.scope:
        try:
            while True:
                started = anyio.current_time()
                try:
                    await run.trigger.run()
                    return
                except WfschedError as exc:
                    # Something the operator fixes (an unset env: secret, an unreadable
                    # file, a refused login), not a bug: no traceback. The health report
                    # logs one line when the problem changes; retried until it is fixed.
                    run.ctx.report_health("failing", str(exc))
                    await run.ctx.flush_health()
                except Exception as exc:  # reported, then restarted
                    run.ctx.report_health("failing", f"{type(exc).__name__}: {exc}")
                    run.ctx.log.exception("trigger crashed; restarting")
                    await run.ctx.flush_health()
                if anyio.current_time() - started > 60:
                    delay = 1.0
                await anyio.sleep(delay)
                delay = min(delay * 2, 60.0)
        finally:
            run.stopped.set()


async def retire(run: Running) -> None:
    """Stop a trigger instance no longer in ``running``."""
    if run.scope is not None:
        run.scope.cancel()
        if run.stopped is not None:
            with anyio.move_on_after(10):
                await run.stopped.wait()
    run.ctx.log.info("trigger stopped")


async def invoke(trigger: BaseTrigger, data: Any, *, user: str, confirmed: bool) -> FireResult:
    """Fire a trigger by hand, enforcing its confirmation rule."""
    if trigger.requires_confirmation and not confirmed:
        raise Conflict("confirmation_required")
    return await trigger.invoke(data, user=user)
