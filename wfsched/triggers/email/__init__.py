"""The ``email`` trigger: fires once per new message in an IMAP folder.

It watches with IDLE where the server offers it and polls otherwise, over one connection per
mailbox folder shared by every trigger on it (``_imap_hub``). Each trigger keeps its own
cursor and filters (``_imap_sync``); a message fires exactly once because its dedupe key is
(mailbox, UIDVALIDITY, UID) and the cursor moves only after the fire is committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from wfsched import BaseTrigger, Check, Setting, SpecError, TriggerContext, TriggerSpec, hookimpl
from wfsched.triggers.email import options as _imap_options
from wfsched.triggers.email import section
from wfsched.triggers.email.filters import compile_filters
from wfsched.triggers.email.hub import HUB, Hub, Watcher
from wfsched.triggers.email.reader import Reader


class EmailTrigger(BaseTrigger):
    """Watches one IMAP folder; its fields are checked by ``validate`` (see ``options``)."""

    type = "email"
    has_run = True
    hub: ClassVar[Hub] = HUB
    """Where mailbox watchers live (tests may give a trigger class its own)."""

    def __init__(self, spec: TriggerSpec, ctx: TriggerContext) -> None:
        super().__init__(spec, ctx)
        self._reader: Reader | None = None
        self._watcher: Watcher | None = None

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return _imap_options.validate(config)

    @classmethod
    def warnings(cls, config: Mapping[str, Any]) -> list[str]:
        return _imap_options.warnings(config)

    @classmethod
    def secret_fields(cls, config: Mapping[str, Any]) -> list[str]:
        return ["password"]

    @classmethod
    def untrusted_problems(cls, config: Mapping[str, Any]) -> list[SpecError]:
        return [*super().untrusted_problems(config), *_imap_options.untrusted_problems(config)]

    @classmethod
    def checks(cls, settings: Mapping[str, Mapping[str, Any]]) -> list[Check]:
        return section.checks(settings)

    async def run(self) -> None:
        options = _imap_options.resolve(self.config, self.ctx.settings(section.SECTION))
        reader = Reader(self.ctx, options)
        async with self.hub.subscribe(options.endpoint, options.password, reader) as watcher:
            self._reader, self._watcher = reader, watcher
            try:
                await watcher.participate(reader)
            finally:
                self._reader = self._watcher = None

    def describe(self) -> dict[str, Any]:
        config = self.config
        out: dict[str, Any] = {
            "folder": config.get("folder", "INBOX"),
            "filters": compile_filters(config.get("filters", {})).describe(),
            "attachments": config.get("attachments", "metadata"),
            "mark_read": config.get("mark_read", True),
            "idle": config.get("idle", True),
        }
        if self._reader is not None and self._watcher is not None:
            out["mailbox"] = self._reader.label
            out["state"] = self._watcher.state
            out["connects"] = self._watcher.connects
            out["shared_by"] = len(self._watcher.subscribers)
            out.update(self._reader.describe())
        return out


@hookimpl
def register_trigger_types(register: Callable[[type[BaseTrigger]], None]) -> None:
    register(EmailTrigger)


@hookimpl
def register_settings(register: Callable[[Setting], None]) -> None:
    for setting in section.SETTINGS:
        register(setting)
