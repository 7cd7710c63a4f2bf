"""Run-time verification of webhook requests against a WebhookAuth, one check per scheme.

Failures raise :class:`~wfsched.AuthError` with a message that names the header at fault but
never carries a secret, a signature or a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wfsched import AuthError
from wfsched.triggers.webhook.auth.config import DEFAULT_HEADERS, WebhookAuth
from wfsched.triggers.webhook.auth.keys import (
    fail,
    prepare_jwt_keys,
    resolve_secrets,
    sw_secret_key,
)
from wfsched.triggers.webhook.auth.sign import (
    any_equal,
    hmac_sha256,
    hmac_sha256_candidate,
    standard_webhooks_digest,
)

if TYPE_CHECKING:
    from jwt.types import Options

# pyjwt (with cryptography) is imported by the jwt checks only: webhooks with other schemes,
# and every CLI command, start without it.

MAX_SIGNATURES = 10
JWT_LEEWAY = 30
_MAX_HEADER_CHARS = 16 * 1024
_MAX_SIGNATURE_HEADER_CHARS = 4096
_MAX_WEBHOOK_ID_CHARS = 256

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# Visible ASCII; a "," would mean the caller joined duplicated webhook-id headers.
_WEBHOOK_ID = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _jwt_failures() -> tuple[type[Exception], ...]:
    """What pyjwt and the crypto backend may raise on hostile tokens (pyjwt wraps most)."""
    import jwt

    return (jwt.PyJWTError, ValueError, TypeError, RecursionError, OverflowError)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The header's value without surrounding whitespace; absent or empty -> None."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip(" \t")
    if not value:
        return None
    if len(value) > _MAX_HEADER_CHARS:
        raise AuthError(f"{name} header is too long")
    return value


def _require(headers: Mapping[str, str], name: str) -> str:
    value = _header(headers, name)
    if value is None:
        raise AuthError(f"missing {name} header")
    return value


def _to_bytes(value: str) -> bytes:
    # Header values may hold any code point (even lone surrogates); never fail on encoding.
    return value.encode("utf-8", "surrogatepass")


def _credentials(value: str, scheme: str) -> str:
    """The credentials after an ``Authorization`` scheme name (case-insensitive)."""
    name, _, rest = value.partition(" ")
    rest = rest.lstrip(" ")
    if name.lower() != scheme.lower() or not rest:
        raise AuthError(f"authorization header must use the {scheme} scheme")
    return rest


class Verifier:
    """Checks requests against one :class:`WebhookAuth`; build it once per deployed trigger.

    The constructor resolves every secret reference (``SpecError`` naming the ``auth`` field
    when one is missing, empty or unusable) and precomputes keys; :meth:`verify` does no I/O.
    """

    def __init__(self, auth: WebhookAuth) -> None:
        self.auth = auth
        self._check: Callable[[Mapping[str, str], bytes, float], dict[str, Any]]
        # Token and password comparisons go through an HMAC under a per-process random key so
        # that compare_digest always sees equal-length inputs and the secret's length stays hidden.
        self._mac_key = os.urandom(32)
        kind = auth.type
        if kind == "none":
            self._check = self._check_none
        elif kind == "token":
            secrets = resolve_secrets(auth.secrets, "secret")
            self._token_macs = [self._mac(_to_bytes(s)) for s in secrets]
            self._check = self._check_token
        elif kind == "basic":
            username = resolve_secrets((auth.username or "",), "username")[0]
            if ":" in username:
                raise fail("username", "must not contain ':' (RFC 7617)")
            self._username = username
            self._username_mac = self._mac(_to_bytes(username))
            passwords = resolve_secrets(auth.passwords, "password")
            self._password_macs = [self._mac(_to_bytes(p)) for p in passwords]
            self._check = self._check_basic
        elif kind == "hmac":
            self._hmac_keys = [_to_bytes(s) for s in resolve_secrets(auth.secrets, "secret")]
            self._check = self._check_hmac
        elif kind == "standard-webhooks":
            self._sw_keys = [sw_secret_key(s) for s in resolve_secrets(auth.secrets, "secret")]
            self._check = self._check_standard_webhooks
        elif kind == "jwt":
            key_field = "secret" if auth.secrets else "public_key"
            values = resolve_secrets(auth.secrets or auth.public_keys, key_field)
            self._jwt_keys = prepare_jwt_keys(values, auth.algorithms, key_field)
            self._check = self._check_jwt
        else:
            raise fail("type", f"unknown auth type {kind!r}")

    def _mac(self, value: bytes) -> bytes:
        return hmac.new(self._mac_key, value, hashlib.sha256).digest()

    def verify(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> dict[str, Any]:
        """Authenticate one request; return auth info for the event payload.

        ``headers`` maps lower-case names to values (duplicates joined with ``","``); ``body`` is
        the raw request body. Returns ``{"user": …}`` for basic, ``{"claims": {…}}`` for jwt,
        ``{"webhook_id": …}`` for standard-webhooks and ``{}`` otherwise. Raises
        :class:`AuthError` naming the failing header or check.
        """
        return self._check(headers, body, time.time() if now is None else now)

    def _check_none(self, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
        return {}

    def _check_token(self, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
        name = self.auth.header or DEFAULT_HEADERS["token"]
        value = _require(headers, name)
        if name == "authorization":
            value = _credentials(value, "Bearer")
        if not any_equal(self._mac(_to_bytes(value)), self._token_macs):
            raise AuthError(f"{name} header does not carry a valid token")
        return {}

    def _check_basic(self, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
        encoded = _credentials(_require(headers, "authorization"), "Basic")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except ValueError:
            raise AuthError("authorization header has malformed Basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError("authorization header has malformed Basic credentials")
        user_ok = hmac.compare_digest(self._mac(_to_bytes(user)), self._username_mac)
        password_ok = any_equal(self._mac(_to_bytes(password)), self._password_macs)
        # Both checks always run: "&" rather than "and" keeps the username's validity untimed.
        if not (user_ok & password_ok):
            raise AuthError("authorization header has a wrong username or password")
        return {"user": self._username}

    def _check_hmac(self, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
        name = self.auth.header or DEFAULT_HEADERS["hmac"]
        candidate = hmac_sha256_candidate(_require(headers, name))
        if candidate is None:
            raise AuthError(f"{name} header is not of the form sha256=<64 hex digits>")
        if not any_equal(candidate, [hmac_sha256(key, body) for key in self._hmac_keys]):
            raise AuthError(f"{name} header does not match the body")
        return {}

    def _check_standard_webhooks(
        self, headers: Mapping[str, str], body: bytes, now: float
    ) -> dict[str, Any]:
        msg_id = _require(headers, "webhook-id")
        stamp = _require(headers, "webhook-timestamp")
        signature = _require(headers, "webhook-signature")
        if len(msg_id) > _MAX_WEBHOOK_ID_CHARS or not _WEBHOOK_ID.fullmatch(msg_id):
            raise AuthError("webhook-id header is malformed")
        if not _TIMESTAMP.fullmatch(stamp):
            raise AuthError("webhook-timestamp header is not an integer Unix time")
        tolerance = self.auth.tolerance
        if int(stamp) < now - tolerance:
            raise AuthError(f"webhook-timestamp is more than {tolerance} s in the past")
        if int(stamp) > now + tolerance:
            raise AuthError(f"webhook-timestamp is more than {tolerance} s in the future")
        if len(signature) > _MAX_SIGNATURE_HEADER_CHARS:
            raise AuthError("webhook-signature header is too long")
        entries = signature.split(None, MAX_SIGNATURES)
        if len(entries) > MAX_SIGNATURES:
            raise AuthError(f"webhook-signature header lists more than {MAX_SIGNATURES} signatures")
        candidates = []
        for entry in entries:
            version, sep, encoded = entry.partition(",")
            if not sep or not version:
                raise AuthError("webhook-signature header is malformed")
            if version != "v1":
                continue
            try:
                decoded = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise AuthError("webhook-signature header is malformed") from None
            if len(decoded) != hashlib.sha256().digest_size:
                raise AuthError("webhook-signature header is malformed")
            candidates.append(decoded)
        if not candidates:
            raise AuthError("webhook-signature header has no v1 signature")
        expected = [standard_webhooks_digest(key, msg_id, stamp, body) for key in self._sw_keys]
        matched = False
        for candidate in candidates:
            matched |= any_equal(candidate, expected)
        if not matched:
            raise AuthError("webhook-signature header does not match the message")
        return {"webhook_id": msg_id}

    def _check_jwt(self, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
        token = _credentials(_require(headers, "authorization"), "Bearer")
        if not _COMPACT_JWS.fullmatch(token):
            raise AuthError("authorization header does not carry a well-formed JWT")
        import jwt

        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except _jwt_failures():
            raise AuthError("authorization header does not carry a well-formed JWT") from None
        if not isinstance(alg, str) or not self._jwt_keys.get(alg):
            raise AuthError("authorization header: the token's algorithm is not accepted")
        claims = _decode_jwt(token, alg, self._jwt_keys[alg], self.auth)
        _check_jwt_times(claims, now)
        return {"claims": claims}


def _decode_jwt(token: str, alg: str, keys: Sequence[Any], auth: WebhookAuth) -> dict[str, Any]:
    """The claims of ``token`` signed with any of ``keys``, audience and issuer checked."""
    import jwt

    # Time claims are checked by _check_jwt_times so that "now" is injectable.
    options: Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(auth.audience) or None,
                issuer=list(auth.issuer) or None,
                options=options,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"authorization header: the token has no {exc.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError("authorization header: the token's audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("authorization header: the token's issuer is not accepted") from None
        # Any other failure is a bad token; pyjwt's message is not repeated because it can
        # quote token contents (e.g. the JSON decoder's error).
        except _jwt_failures():
            raise AuthError("authorization header: the token is invalid") from None
        return claims
    raise AuthError("authorization header: the token's signature is invalid")


def _claim_number(claims: Mapping[str, Any], name: str) -> int | float | None:
    value = claims.get(name)
    if value is None:
        return None
    # json.loads accepts NaN and Infinity, which would make every time comparison pass.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise AuthError(f"authorization header: the token's {name} claim is not a number")
    return value


def _check_jwt_times(claims: Mapping[str, Any], now: float) -> None:
    exp = _claim_number(claims, "exp")
    if exp is None:
        raise AuthError("authorization header: the token has no exp claim")
    if exp <= now - JWT_LEEWAY:
        raise AuthError("authorization header: the token has expired")
    nbf = _claim_number(claims, "nbf")
    if nbf is not None and nbf > now + JWT_LEEWAY:
        raise AuthError("authorization header: the token is not valid yet (nbf)")
    iat = _claim_number(claims, "iat")
    if iat is not None and iat > now + JWT_LEEWAY:
        raise AuthError("authorization header: the token was issued in the future (iat)")
