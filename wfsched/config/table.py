"""Every core setting, declared once: section, key, environment variable, default, kind, doc.

Lookup and environment overrides (:mod:`wfsched.config`), ``wfsched init`` (the commented
file :func:`default_config_text` writes) and the docs test all read this table; plugins
declare theirs with the ``register_settings`` hook in the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence

from wfsched.sections import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("server", "host", "HOST", "127.0.0.1", "str", "address the HTTP server binds"),
    Setting("server", "port", "PORT", 8003, "int", "HTTP port"),
    Setting(
        "server",
        "api_token",
        "WFSCHED_API_TOKEN",
        "",
        "secret",
        "bearer token for the management API; empty: loopback clients only",
    ),
    Setting(
        "server",
        "trusted_proxies",
        "WFSCHED_TRUSTED_PROXIES",
        "",
        "networks",
        "proxies (addresses or networks, comma-separated) whose forwarding headers are believed",
    ),
    Setting(
        "server",
        "max_connections",
        "WFSCHED_MAX_CONNECTIONS",
        1000,
        "int",
        "open HTTP connections at most; past it new connections are refused",
    ),
    Setting(
        "store",
        "url",
        "DATABASE_URL",
        "sqlite:///wfsched.db",
        "str",
        "sqlite:///PATH (embedded) or postgresql://… (replicas)",
    ),
    Setting(
        "store",
        "sync",
        "WFSCHED_STORE_SYNC",
        "full",
        "choice:full,normal",
        "full: every commit is on disk before it is acknowledged; normal: faster, "
        "a power loss may drop the last acknowledged events (SQLite)",
    ),
    Setting(
        "store",
        "commit_timeout",
        "WFSCHED_STORE_COMMIT_TIMEOUT",
        "5s",
        "duration",
        "a commit not done within this answers 503 to the requests waiting on it",
    ),
    Setting("locks", "url", "REDIS_URL", "", "str", "redis://… for replicas; empty: in-process"),
    Setting(
        "scheduler",
        "timezone",
        "SCHEDULER_TIMEZONE",
        "UTC",
        "timezone",
        "default IANA zone of cron triggers",
    ),
    Setting(
        "scheduler", "max_workers", "SCHEDULER_MAX_WORKERS", 10, "int", "concurrent dispatches"
    ),
    Setting(
        "scheduler",
        "late_after",
        "WFSCHED_LATE_AFTER",
        "60s",
        "duration",
        "a time trigger whose due instant is this far past with no event is late",
    ),
    Setting(
        "dispatch",
        "mode",
        "WFSCHED_DISPATCH_MODE",
        "log",
        "str",
        "where fired events go: a dispatch target (log, engine, notify, cloudevents, "
        "github-actions or a plugin's)",
    ),
    Setting(
        "dispatch",
        "engine_url",
        "WORKFLOW_ENGINE_URL",
        "",
        "str",
        "workflow engine base URL (engine mode)",
    ),
    Setting(
        "dispatch",
        "cloudevents_url",
        "WFSCHED_CLOUDEVENTS_URL",
        "",
        "str",
        "CloudEvents sink URL (cloudevents mode)",
    ),
    Setting(
        "dispatch",
        "allowed_urls",
        "WFSCHED_DISPATCH_ALLOWED_URLS",
        "",
        "str",
        "URL prefixes (comma-separated) a [dispatch] url of a spec deployed over the HTTP API "
        "may start with; empty: such specs may not name a url",
    ),
    Setting(
        "dispatch",
        "max_attempts",
        "WFSCHED_DISPATCH_MAX_ATTEMPTS",
        8,
        "int",
        "attempts before an event is failed",
    ),
    Setting(
        "dispatch",
        "retry_base",
        "WFSCHED_DISPATCH_RETRY_BASE",
        "1s",
        "duration",
        "first retry delay (exponential backoff, full jitter)",
    ),
    Setting(
        "dispatch",
        "retry_max",
        "WFSCHED_DISPATCH_RETRY_MAX",
        "5m",
        "duration",
        "longest retry delay",
    ),
    Setting(
        "dispatch",
        "claim_ttl",
        "WFSCHED_DISPATCH_CLAIM_TTL",
        "10s",
        "duration",
        "a claimed event whose dispatcher died is retried after this",
    ),
    Setting(
        "dispatch",
        "timeout",
        "WFSCHED_DISPATCH_TIMEOUT",
        "30s",
        "duration",
        "per-request timeout towards the engine or SMTP server",
    ),
    Setting(
        "notify",
        "smtp_url",
        "WFSCHED_SMTP_URL",
        "",
        "secret",
        "smtp://[user:pass@]host:port, smtps://… or smtp+starttls://… (notify mode)",
    ),
    Setting("notify", "from", "WFSCHED_NOTIFY_FROM", "", "str", "sender address of notify mails"),
    Setting(
        "notify",
        "to",
        "WFSCHED_NOTIFY_TO",
        "",
        "str",
        "recipients of notify mails (comma-separated)",
    ),
    Setting(
        "history",
        "retention",
        "WFSCHED_HISTORY_RETENTION",
        "30d",
        "duration",
        "dispatched events older than this (by fired_at) are deleted; 0: kept forever",
    ),
    Setting(
        "history",
        "failed_retention",
        "WFSCHED_HISTORY_FAILED_RETENTION",
        "90d",
        "duration",
        "failed events older than this are deleted; 0: kept forever (pending: never deleted)",
    ),
    Setting(
        "history",
        "prune_interval",
        "WFSCHED_HISTORY_PRUNE_INTERVAL",
        "1m",
        "duration",
        "how often the daemon prunes history (one replica at a time); 0: never",
    ),
    Setting(
        "history",
        "partition_interval",
        "WFSCHED_HISTORY_PARTITION_INTERVAL",
        "1d",
        "duration",
        "PostgreSQL: width of the events table's time partitions (dropped whole when expired)",
    ),
    Setting(
        "ledger",
        "keep",
        "WFSCHED_LEDGER_KEEP",
        "7d",
        "duration",
        "refused, filtered and deduplicated deliveries are kept at least this long",
    ),
    Setting(
        "ledger",
        "keep_per_trigger",
        "WFSCHED_LEDGER_KEEP_PER_TRIGGER",
        1000,
        "int",
        "and at least this many of them per trigger, however old",
    ),
    Setting("plugins", "dir", "WFSCHED_PLUGINS_DIR", "plugins", "str", "folder of .py plugins"),
    Setting("log", "format", "WFSCHED_LOG_FORMAT", "json", "choice:json,text", "log line format"),
    Setting(
        "log", "level", "WFSCHED_LOG_LEVEL", "info", "choice:debug,info,warning,error", "log level"
    ),
)
CORE_SECTION_NAMES = frozenset(s.section for s in SETTINGS)
"""The sections of the core; a plugin declares keys in a section of its own only."""


def by_section(table: Sequence[Setting]) -> dict[str, dict[str, Setting]]:
    """``table`` as section → key → Setting, in declaration order."""
    out: dict[str, dict[str, Setting]] = {}
    for setting in table:
        out.setdefault(setting.section, {})[setting.key] = setting
    return out


def default_config_text(declared: Sequence[Setting] = ()) -> str:
    """Return the commented ``wfsched.toml`` that ``wfsched init`` writes.

    ``declared``: the plugins' settings, written after the core sections, a section at a
    time in the order of their names (plugins load in no fixed order; the file must not vary).
    """
    import tomli_w

    lines = [
        "# wfsched configuration. Every key shows its default; environment variables override.",
        "# Secrets may be written as env:NAME or file:PATH instead of a literal.",
    ]
    plugins = sorted(declared, key=lambda setting: setting.section)  # stable: keys keep order
    for section, keys in by_section((*SETTINGS, *plugins)).items():
        lines.append("")
        lines.append(f"[{section}]")
        for setting in keys.values():
            value = setting.default
            rendered = tomli_w.dumps({"v": value}).split("=", 1)[1].strip()
            lines.append(f"# {setting.doc} (env {setting.env})")
            line = f"{_toml_key(setting.key)} = {rendered}"
            # Keys whose default is empty stay commented so the file changes nothing by itself.
            lines.append(line if value not in ("", None) else f"# {line}")
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").isalnum() and key != "from" else f'"{key}"'
