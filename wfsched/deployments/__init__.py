"""The deployment service the CLI and the management API share: :mod:`.service` changes
deployments and fires manual triggers, :mod:`.views` shows them."""

from __future__ import annotations

from wfsched.deployments.service import DeploymentService
from wfsched.deployments.views import (
    SECRET_KEYS,
    DeploymentViews,
    decode_cursor,
    encode_cursor,
    redact_secrets,
)

__all__ = [
    "SECRET_KEYS",
    "DeploymentService",
    "DeploymentViews",
    "decode_cursor",
    "encode_cursor",
    "redact_secrets",
]
