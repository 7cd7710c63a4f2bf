"""The ``[email]`` config section: the defaults of every email trigger's mailbox.

Declared through the ``register_settings`` hook like any plugin's section; the environment
variable names (``IMAP_SERVER``, ``EMAIL_PASSWORD``…) are the ones wfsched always read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from wfsched import Check, Setting, WfschedError

SECTION = "email"
SETTINGS = (
    Setting(SECTION, "server", "IMAP_SERVER", "", "str", "IMAP host of email triggers"),
    Setting(SECTION, "port", "IMAP_PORT", 993, "int", "IMAP port"),
    Setting(
        SECTION,
        "security",
        "IMAP_SECURITY",
        "ssl",
        "choice:ssl,starttls,none",
        "IMAP transport security",
    ),
    Setting(SECTION, "user", "EMAIL_USER", "", "str", "IMAP user"),
    Setting(
        SECTION,
        "password",
        "EMAIL_PASSWORD",
        "",
        "secret",
        "IMAP password (an app password for hosted mail)",
    ),
    Setting(
        SECTION,
        "check_interval",
        "EMAIL_CHECK_INTERVAL",
        60,
        "duration",
        "seconds between polls when IDLE is unavailable",
    ),
)


def checks(settings: Mapping[str, Mapping[str, Any]]) -> list[Check]:
    """``wfsched check``: log in to the configured IMAP server with the configured credentials
    and select INBOX, as a trigger would (without a user: only that the server answers)."""
    section = settings.get(SECTION, {})
    host, port = str(section.get("server") or ""), int(section.get("port", 993))
    if not host:
        return []

    async def reachable() -> str:
        stream = await anyio.connect_tcp(host, port)
        await stream.aclose()
        return f"{host}:{port} reachable (email.user is not set: login not tried)"

    async def login() -> str:
        from wfsched.triggers.email.connection import Connection, ImapError
        from wfsched.triggers.email.options import resolve

        options = resolve({}, section)
        conn = Connection(options.endpoint, options.password, timeout=8.0)

        def attempt() -> None:
            try:
                conn.open()
            finally:
                conn.logout()

        ep = options.endpoint
        try:
            await anyio.to_thread.run_sync(attempt, abandon_on_cancel=True)
        except ImapError as exc:
            raise WfschedError(f"{ep.server}:{ep.port}: {exc}") from None
        return f"logged in to {ep.server}:{ep.port} ({ep.security}) as {ep.user!r}, INBOX selected"

    return [Check("imap", login if section.get("user") else reachable)]
