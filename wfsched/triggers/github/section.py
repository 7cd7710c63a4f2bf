"""The ``[github]`` config section: the GitHub App every github trigger shares.

Declared through the ``register_settings`` hook like any plugin's section; the environment
variable names (``GITHUB_APP_ID``, ``GITHUB_WEBHOOK_SECRET``…) are the ones wfsched always read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wfsched import Check, Setting, WfschedError

SECTION = "github"
SETTINGS = (
    Setting(SECTION, "app_id", "GITHUB_APP_ID", "", "str", "GitHub App id"),
    Setting(
        SECTION,
        "private_key",
        "GITHUB_APP_PRIVATE_KEY",
        "",
        "secret",
        "GitHub App private key as PEM text, or file:PATH",
    ),
    Setting(
        SECTION,
        "webhook_secret",
        "GITHUB_WEBHOOK_SECRET",
        "",
        "secret",
        "GitHub App webhook secret (comma-separated list to rotate)",
    ),
    Setting(
        SECTION,
        "api_url",
        "GITHUB_API_URL",
        "https://api.github.com",
        "str",
        "GitHub API base URL (GitHub Enterprise: https://HOST/api/v3)",
    ),
    Setting(
        SECTION,
        "redelivery_window",
        "GITHUB_REDELIVERY_WINDOW",
        "1h",
        "duration",
        "failed deliveries younger than this are redelivered",
    ),
)


def checks(settings: Mapping[str, Mapping[str, Any]]) -> list[Check]:
    """``wfsched check``: the webhook secret resolves; with App credentials, the key loads, an
    App JWT is signed and GitHub accepts it (``GET /app``), which proves key and id match."""
    section = settings.get(SECTION, {})
    if not any(section.get(key) for key in ("app_id", "private_key", "webhook_secret")):
        return []

    async def app() -> str:
        from wfsched.triggers.github.app import app_for, client, load_settings

        loaded = load_settings(section)  # SpecError names a reference that does not resolve
        if not loaded.webhook_secrets:
            raise WfschedError("github.webhook_secret is not set: every delivery is refused")
        secrets = f"{len(loaded.webhook_secrets)} webhook secret(s)"
        if not loaded.app_id and not loaded.private_key:
            return f"{secrets}; no App credentials (fetch_context and redelivery are off)"
        if not loaded.has_app:
            missing = "github.app_id" if not loaded.app_id else "github.private_key"
            raise WfschedError(f"{missing} is not set: the App needs both id and key")
        token = app_for(loaded).jwt()
        url = f"{loaded.api_url}/app"
        import httpx

        headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
        try:
            async with client(8.0) as http:
                answer = await http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise WfschedError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        if answer.status_code == 401:
            raise WfschedError(
                f"GET {url} refused the App JWT (401): github.private_key does not belong to "
                f"App {loaded.app_id}, or the id is wrong"
            )
        if not answer.is_success:
            raise WfschedError(f"GET {url} answered {answer.status_code}")
        return f"App {loaded.app_id}: key loaded, JWT signed and accepted by {url}; {secrets}"

    return [Check("github", app)]
