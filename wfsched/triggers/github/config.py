"""The github trigger's fields: validated at deploy time, with errors that name the field."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from wfsched import Fields
from wfsched.triggers.github.filters import FILTER_KEYS, PatternList

CONFIG_KEYS = frozenset({*FILTER_KEYS, "fetch_context"})
MAX_PATTERNS = 100

# Webhook events GitHub sends (docs "Webhook events and payloads"); a name outside this list is
# almost always a typo that would silently never match, so it is refused with a suggestion.
KNOWN_EVENTS = frozenset({
    "branch_protection_configuration", "branch_protection_rule", "check_run", "check_suite",
    "code_scanning_alert", "commit_comment", "create", "custom_property",
    "custom_property_values", "delete", "dependabot_alert", "deploy_key", "deployment",
    "deployment_protection_rule", "deployment_review", "deployment_status", "discussion",
    "discussion_comment", "fork", "github_app_authorization", "gollum", "installation",
    "installation_repositories", "installation_target", "issue_comment", "issue_dependencies",
    "issues", "label", "marketplace_purchase", "member", "membership", "merge_group", "meta",
    "milestone", "org_block", "organization", "package", "page_build",
    "personal_access_token_request", "project", "project_card", "project_column", "projects_v2",
    "projects_v2_item", "projects_v2_status_update", "public", "pull_request",
    "pull_request_review", "pull_request_review_comment", "pull_request_review_thread", "push",
    "registry_package", "release", "repository", "repository_advisory", "repository_dispatch",
    "repository_import", "repository_ruleset", "repository_vulnerability_alert",
    "secret_scanning_alert", "secret_scanning_alert_location", "secret_scanning_scan",
    "security_advisory", "security_and_analysis", "sponsorship", "star", "status", "sub_issues",
    "team", "team_add", "watch", "workflow_dispatch", "workflow_job", "workflow_run",
})  # fmt: skip
_GLOB_CHARS = frozenset("*?[")


def _patterns(fields: Fields, key: str) -> list[str] | None:
    values: list[str] | None = fields.str_list(key, None)
    if values is None:
        return None
    if len(values) > MAX_PATTERNS:
        raise fields.error(key, f"at most {MAX_PATTERNS} patterns")
    try:
        PatternList.parse(values)
    except ValueError as exc:
        raise fields.error(key, str(exc)) from None
    return values


def _check_event(fields: Fields, pattern: str) -> None:
    name = pattern.removeprefix("!")
    if name == "ping":
        raise fields.error("events", "'ping' is answered by wfsched itself and fires nothing")
    if _GLOB_CHARS.isdisjoint(name) and name not in KNOWN_EVENTS:
        close = difflib.get_close_matches(name, sorted(KNOWN_EVENTS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise fields.error("events", f"{name!r} is not a GitHub webhook event{hint}")


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the github trigger's fields; return them normalised."""
    fields = Fields(config, allowed=CONFIG_KEYS)
    out: dict[str, Any] = {}
    for key in FILTER_KEYS:
        values = _patterns(fields, key)
        if values is None:
            continue
        if key == "events":
            for pattern in values:
                _check_event(fields, pattern)
        elif key == "repository":
            for pattern in values:
                name = pattern.removeprefix("!")
                if "/" not in name and name not in ("*", "**"):
                    raise fields.error(
                        key, f"{pattern!r} must be owner/name (globs allowed, e.g. 'my-org/*')"
                    )
        elif key in ("branches", "tags"):
            prefix = "refs/heads/" if key == "branches" else "refs/tags/"
            # Refs are matched by their short name, as GitHub Actions filters do.
            values = [
                ("!" if p.startswith("!") else "") + p.removeprefix("!").removeprefix(prefix)
                for p in values
            ]
        out[key] = values
    if "events" not in out:
        out["events"] = ["push"]
    if not out["events"]:
        raise fields.error("events", "must list at least one event")
    out["fetch_context"] = fields.bool("fetch_context", False)
    return out
