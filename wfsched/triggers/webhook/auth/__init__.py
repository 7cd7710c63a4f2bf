"""Authentication of inbound webhook requests: config validation and request verification.

Used by the built-in ``webhook`` trigger (its ``auth`` table) and the ``github`` trigger
(``X-Hub-Signature-256``). Two phases:

* **deploy time**: :func:`parse_auth` validates the ``auth`` table into a :class:`WebhookAuth`
  that keeps secrets as *references* (``env:NAME``, ``file:PATH`` or a literal), so a parsed spec
  can be stored and shown without resolving anything;
* **run time**: :class:`Verifier` resolves the references once and checks each request's headers
  and raw body, raising :class:`~wfsched.errors.AuthError` with a message that names the header at
  fault but never carries a secret, a signature or a token.

Schemes (``type``):

``none``
    Every request is accepted.
``token``
    ``secret`` (one or several, for rotation); ``header`` defaults to ``Authorization``. With
    ``Authorization`` the value must be ``Bearer <secret>`` (scheme name case-insensitive, as in
    RFC 7235); with any other header the value must be the raw secret.
``basic``
    ``username`` and ``password`` (one or several) in ``Authorization: Basic …`` (RFC 7617,
    UTF-8). The username may itself be an ``env:``/``file:`` reference.
``hmac``
    ``secret`` (one or several); ``header`` defaults to ``X-Signature-256`` and carries
    ``sha256=<hex HMAC-SHA256 of the raw body>``, hex in either case (the GitHub format).
``standard-webhooks``
    ``secret`` (one or several) as ``whsec_<base64>``; a secret without that prefix is used as its
    UTF-8 bytes (note: the reference libraries base64-decode an unprefixed secret instead).
    Headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (space-separated
    ``v1,<base64>`` entries; other versions are skipped, at most 10 entries). The timestamp must be
    within ``tolerance`` seconds (default 300, at most 3600) of now, in both directions.
``jwt``
    ``Authorization: Bearer <jwt>`` checked with ``secret`` (HS256/384/512, default HS256) or
    ``public_key`` (PEM public key or certificate; RS*, PS*, ES*, EdDSA; default RS256), never both.
    ``algorithms``, optional ``audience`` and ``issuer`` (a string or a list). The token must carry
    ``exp``; ``exp``, ``nbf`` and ``iat`` are checked with a 30 s leeway. HMAC secrets shorter than
    the hash output and RSA keys under 2048 bits are refused (RFC 7518 §3.2, NIST SP 800-131A).

Every secret-like value (``secret``, ``password``, ``public_key``) may list up to 5 values; a
request is accepted when it matches any of them.

This module is the public facade; the code lives in private sibling modules, one per reason to
change: ``_auth_config`` (the ``auth`` table), ``_auth_keys`` (secret references and key
material), ``_auth_verify`` (request checks) and ``_auth_sign`` (signature formats).
"""

from __future__ import annotations

from wfsched.triggers.webhook.auth.config import (
    AUTH_TYPES,
    DEFAULT_TOLERANCE,
    MAX_ROTATED_VALUES,
    MAX_TOLERANCE,
    RESOLVED_KEYS,
    WebhookAuth,
    parse_auth,
)
from wfsched.triggers.webhook.auth.sign import (
    github_signature_valid,
    sign_hmac_sha256_hex,
    sign_standard_webhooks,
)
from wfsched.triggers.webhook.auth.verify import JWT_LEEWAY, MAX_SIGNATURES, Verifier

__all__ = [
    "AUTH_TYPES",
    "DEFAULT_TOLERANCE",
    "JWT_LEEWAY",
    "MAX_ROTATED_VALUES",
    "MAX_SIGNATURES",
    "MAX_TOLERANCE",
    "RESOLVED_KEYS",
    "Verifier",
    "WebhookAuth",
    "github_signature_valid",
    "parse_auth",
    "sign_hmac_sha256_hex",
    "sign_standard_webhooks",
]
