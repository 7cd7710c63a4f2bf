"""Webhook signatures on the wire: HMAC-SHA256 hex (GitHub, ``hmac``) and Standard Webhooks v1.

Signing and comparison primitives shared by the request verifier, the github trigger and tests.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Sequence
from typing import Any

_new_hmac: Callable[..., Any]
try:  # OpenSSL's HMAC, which hmac.new makes through three Python calls
    from _hashlib import hmac_new as _new_hmac
except ImportError:  # pragma: no cover - a CPython without OpenSSL
    _new_hmac = hmac.new

_SW_SECRET_PREFIX = "whsec_"
_SW_ASYMMETRIC_PREFIXES = ("whsk_", "whpk_")


def sign_hmac_sha256_hex(secret: str, body: bytes) -> str:
    """Return ``sha256=<hex>``, the HMAC-SHA256 of ``body`` that GitHub and ``hmac`` send."""
    return "sha256=" + hmac_sha256(secret.encode("utf-8"), body).hex()


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the Standard Webhooks ``v1,<base64>`` signature of ``{msg_id}.{timestamp}.{body}``.

    ``secret`` is read as the verifier reads it: ``whsec_<base64>``, else its UTF-8 bytes.
    """
    key = standard_webhooks_key(secret)
    digest = standard_webhooks_digest(key, msg_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def standard_webhooks_key(secret: str) -> bytes:
    """Decode a Standard Webhooks secret; ``ValueError`` (no secret in the message) if invalid."""
    if secret.startswith(_SW_ASYMMETRIC_PREFIXES):
        raise ValueError(
            "asymmetric Standard Webhooks keys (whsk_/whpk_) are not supported; use a whsec_ secret"
        )
    if secret.startswith(_SW_SECRET_PREFIX):
        encoded = secret[len(_SW_SECRET_PREFIX) :]
        # Secrets are often shown without base64 padding; restore it before a strict decode.
        encoded += "=" * (-len(encoded) % 4)
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    else:
        key = secret.encode("utf-8")
    if not key:
        raise ValueError("the secret is empty")
    return key


def standard_webhooks_digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """The raw HMAC-SHA256 of ``{msg_id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, "sha256").digest()


def hmac_sha256(key: bytes, body: bytes) -> bytes:
    """The raw HMAC-SHA256 of ``body``.

    Not the one-shot ``hmac.digest``: it lets go of the GIL on every call (CPython does around
    OpenSSL's ``HMAC``), which on a busy daemon hands the event loop's thread to the store's
    worker thread and back; an HMAC object lets go of it only for bodies of 2 KiB or more.
    The object is OpenSSL's, made directly: ``hmac.new`` makes the same one through three
    Python calls."""
    digest: bytes = _new_hmac(key, body, "sha256").digest()
    return digest


def hmac_sha256_candidate(value: str) -> bytes | None:
    """The raw digest a ``sha256=<64 hex digits>`` value carries, or None if malformed."""
    if len(value) != 71 or value[:7].lower() != "sha256=":
        return None
    try:
        raw = bytes.fromhex(value[7:])
    except ValueError:
        return None
    return raw if len(raw) == 32 else None  # fromhex skips spaces: "ab cd…" is shorter


def any_equal(candidate: bytes, expected: Sequence[bytes]) -> bool:
    """Constant-time membership test: every expected value is compared, no early exit."""
    matched = False
    for value in expected:
        matched |= hmac.compare_digest(candidate, value)
    return matched


def github_signature_valid(secrets: Sequence[str], header: str | None, body: bytes) -> bool:
    """Check an ``X-Hub-Signature-256`` value against the raw body under any of ``secrets``.

    Empty secrets are ignored (an empty HMAC key is public knowledge), so an empty or all-empty
    list never validates anything. A missing or malformed header is simply invalid.
    """
    if header is None:
        return False
    candidate = hmac_sha256_candidate(header.strip(" \t"))
    keys = [s.encode("utf-8") for s in secrets if s]
    if candidate is None or not keys:
        return False
    return any_equal(candidate, [hmac_sha256(key, body) for key in keys])
