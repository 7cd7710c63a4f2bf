"""Fields of the ``email`` trigger: validation at deploy time, resolution at run time.

Mailbox settings left out of a spec come from the ``[email]`` config section when the trigger
starts, so a deploy never depends on the daemon's configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wfsched import Fields, SpecError, WfschedError, is_reference, resolve_secret
from wfsched.triggers.email.filters import Filters, compile_filters

SECURITY = ("ssl", "starttls", "none")
ATTACHMENTS = ("metadata", "inline", "store")
MAILBOX_FIELDS = ("server", "port", "security", "user", "password", "folder")
FIELDS = frozenset(
    {
        *MAILBOX_FIELDS,
        "filters",
        "attachments",
        "max_attachment_bytes",
        "attachments_dir",
        "mark_read",
        "idle",
        "check_interval",
        "idle_refresh",
        "timeout",
        "max_message_bytes",
    }
)
# RFC 2177 asks clients to re-issue IDLE within 29 minutes; some hosted servers cut sooner.
MAX_IDLE_REFRESH = 29 * 60.0
DEFAULTS: dict[str, Any] = {
    "folder": "INBOX",
    "attachments": "metadata",
    "max_attachment_bytes": 10 * 1024 * 1024,
    "attachments_dir": "attachments",
    "mark_read": True,
    "idle": True,
    "idle_refresh": 300.0,
    "timeout": 30.0,
    "max_message_bytes": 25 * 1024 * 1024,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(value: Any, field: str) -> float:
    """Accept a number of seconds or a string like ``"90s"``, ``"5m"``."""
    if isinstance(value, bool):
        raise SpecError("must be a number of seconds or a duration like '30s'", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise SpecError("must be a number of seconds or a duration like '30s'", field=field)
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise SpecError("must be positive", field=field)
    return seconds


def validate(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check the email trigger's fields; return them normalised (defaults filled in).

    Mailbox fields stay absent when absent: they default to the ``[email]`` config at run time.
    """
    fields = Fields(config, allowed=FIELDS)
    out: dict[str, Any] = {}
    for key in ("server", "user", "password"):
        if key in config:
            out[key] = fields.str(key)
    if "port" in config:
        port = fields.int("port", minimum=1)
        if port > 65535:
            raise fields.error("port", "must be a TCP port (1-65535)")
        out["port"] = port
    if "security" in config:
        out["security"] = fields.choice("security", SECURITY)
    out["folder"] = fields.str("folder", DEFAULTS["folder"])
    filters = fields.table_("filters", {})
    compile_filters(filters)  # raises SpecError naming filters.<key>
    out["filters"] = dict(filters)
    out["attachments"] = fields.choice("attachments", ATTACHMENTS, DEFAULTS["attachments"])
    for key in ("max_attachment_bytes", "max_message_bytes"):
        out[key] = fields.int(key, DEFAULTS[key], minimum=0)
    out["attachments_dir"] = fields.str("attachments_dir", DEFAULTS["attachments_dir"])
    out["mark_read"] = fields.bool("mark_read", DEFAULTS["mark_read"])
    out["idle"] = fields.bool("idle", DEFAULTS["idle"])
    if "check_interval" in config:
        out["check_interval"] = parse_seconds(config["check_interval"], "check_interval")
    for key in ("idle_refresh", "timeout"):
        out[key] = parse_seconds(config.get(key, DEFAULTS[key]), key)
    if out["idle_refresh"] > MAX_IDLE_REFRESH:
        raise fields.error("idle_refresh", "must be at most 29m (RFC 2177 IDLE limit)")
    return out


def warnings(config: Mapping[str, Any]) -> list[str]:
    """Advice for ``deploy`` and ``check``."""
    out = []
    password = config.get("password")
    if isinstance(password, str) and not is_reference(password):
        out.append("email: password is written in the spec; prefer env:NAME or file:PATH")
    if config.get("security") == "none":
        out.append("email: security = 'none' sends the password in clear text")
    return out


def untrusted_problems(config: Mapping[str, Any]) -> list[SpecError]:
    """Rules for a spec from the HTTP API, beyond its references (see BaseTrigger)."""
    if "server" in config and "password" not in config:
        # The password would default to email.password, sent to a server the caller chose.
        return [
            SpecError(
                "is required over the API when the trigger names its own server; otherwise "
                "the daemon's email.password would be sent to that server",
                field="password",
            )
        ]
    return []


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a mailbox folder lives; equal endpoints share one IMAP connection."""

    server: str
    port: int
    security: str
    user: str
    folder: str

    @property
    def label(self) -> str:
        """``user@server:port/folder``: names the mailbox in logs, status and dedupe keys."""
        return f"{self.user}@{self.server}:{self.port}/{self.folder}"


@dataclass(frozen=True, slots=True)
class Tuning:
    """How a connection is watched; a shared connection takes the strictest of its triggers."""

    idle: bool
    idle_refresh: float
    check_interval: float
    timeout: float

    @staticmethod
    def merge(items: list[Tuning]) -> Tuning:
        return Tuning(
            idle=all(t.idle for t in items),
            idle_refresh=min(t.idle_refresh for t in items),
            check_interval=min(t.check_interval for t in items),
            timeout=min(t.timeout for t in items),
        )


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a running email trigger needs, with defaults and secrets resolved."""

    endpoint: Endpoint
    password: str
    tuning: Tuning
    filters: Filters
    attachments: str
    max_attachment_bytes: int
    max_message_bytes: int
    attachments_dir: Path
    mark_read: bool


def resolve(config: Mapping[str, Any], section: Mapping[str, Any]) -> Options:
    """Combine the trigger's fields with the ``[email]`` config section (``section``)."""

    def pick(key: str, default: Any = None) -> Any:
        value = config.get(key)
        if value in (None, ""):
            value = section.get(key)
        return default if value in (None, "") else value

    server = pick("server")
    user = pick("user")
    if not server:
        raise WfschedError(
            "no IMAP server: set `server` in the trigger or email.server "
            "(IMAP_SERVER) in the config"
        )
    if not user:
        raise WfschedError("no IMAP user: set `user` in the trigger or email.user (EMAIL_USER)")
    # The error names the reference and where it was written (the spec or the config).
    where = "password" if config.get("password") not in (None, "") else "email.password"
    password = resolve_secret(str(pick("password", "")), field=where)
    if not password:
        raise WfschedError(
            "no IMAP password: set `password` in the trigger or email.password "
            "(EMAIL_PASSWORD), preferably as env:NAME or file:PATH"
        )
    security = str(pick("security", "ssl"))
    if "port" in config:
        port = int(config["port"])
    else:
        port = int(section.get("port") or 0)
        if not port or (port == 993 and security != "ssl"):
            # 993 is the config's default, which belongs to implicit TLS.
            port = 993 if security == "ssl" else 143
    interval = config.get("check_interval") or section.get("check_interval") or 60
    tuning = Tuning(
        idle=bool(config.get("idle", True)),
        idle_refresh=float(config.get("idle_refresh", DEFAULTS["idle_refresh"])),
        check_interval=float(interval),
        timeout=float(config.get("timeout", DEFAULTS["timeout"])),
    )
    return Options(
        endpoint=Endpoint(
            server=str(server),
            port=port,
            security=security,
            user=str(user),
            folder=str(config.get("folder", "INBOX")),
        ),
        password=password,
        tuning=tuning,
        filters=compile_filters(config.get("filters", {})),
        attachments=str(config.get("attachments", "metadata")),
        max_attachment_bytes=int(
            config.get("max_attachment_bytes", DEFAULTS["max_attachment_bytes"])
        ),
        max_message_bytes=int(config.get("max_message_bytes", DEFAULTS["max_message_bytes"])),
        attachments_dir=Path(str(config.get("attachments_dir", "attachments")))
        .expanduser()
        .absolute(),
        mark_read=bool(config.get("mark_read", True)),
    )
