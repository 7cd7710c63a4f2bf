"""TriggerManager: runs deployed triggers and keeps them equal to the store (reconciliation).

The store is the source of truth. ``reconcile`` (:mod:`.reconcile`) compares deployed specs
with running triggers and starts, stops or restarts the difference, by each trigger's own hash,
so editing one trigger leaves the others of the workflow running; :mod:`.lookups` answers what
requests and views ask of the running set; :mod:`.instances` is one running trigger.
"""

from __future__ import annotations

from wfsched.context import TriggerCtx, build_trigger
from wfsched.manager.instances import Running, invoke, on_demand, trigger_hash
from wfsched.manager.reconcile import TriggerManager

__all__ = [
    "Running",
    "TriggerCtx",
    "TriggerManager",
    "build_trigger",
    "invoke",
    "on_demand",
    "trigger_hash",
]
