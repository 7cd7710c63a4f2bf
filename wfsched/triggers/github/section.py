"""The ``[github]`` config section: the GitHub App every github trigger shares.

Declared through the ``register_settings`` hook like any plugin's section; the environment
variable names (``GITHUB_APP_ID``, ``GITHUB_WEBHOOK_SECRET``…) are the ones wfsched always read.
"""

from __future__ import annotations

from wfsched import Setting

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
