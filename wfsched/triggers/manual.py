"""The ``manual`` trigger: fired by an operator from the CLI or the management API."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from wfsched import BaseTrigger, Fields, FireRequest, FireResult, hookimpl


class ManualTrigger(BaseTrigger):
    """Fires on request; asks for confirmation unless ``require_confirmation = false``."""

    type = "manual"

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        fields = Fields(config, allowed={"require_confirmation"})
        return {"require_confirmation": fields.bool("require_confirmation", True)}

    @property
    def requires_confirmation(self) -> bool:
        return bool(self.config.get("require_confirmation", True))

    async def invoke(self, data: Any, *, user: str) -> FireResult:
        return await self.ctx.fire(FireRequest(payload={"data": data, "user": user}))

    def describe(self) -> dict[str, Any]:
        return {"require_confirmation": self.requires_confirmation}


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(ManualTrigger)
