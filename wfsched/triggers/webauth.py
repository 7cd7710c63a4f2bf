"""Authentication of inbound webhook requests: config validation and request verification.

Used by the built-in ``webhook`` trigger (the SPEC ``auth`` table) and the ``github`` trigger
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
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import Algorithm
from jwt.types import Options

from wfsched.errors import AuthError, SpecError

__all__ = [
    "AUTH_TYPES",
    "DEFAULT_TOLERANCE",
    "JWT_LEEWAY",
    "MAX_ROTATED_VALUES",
    "MAX_SIGNATURES",
    "MAX_TOLERANCE",
    "Verifier",
    "WebhookAuth",
    "github_signature_valid",
    "parse_auth",
    "resolve_secret",
    "sign_hmac_sha256_hex",
    "sign_standard_webhooks",
]

AUTH_TYPES: tuple[str, ...] = ("none", "token", "basic", "hmac", "standard-webhooks", "jwt")

_KEYS: dict[str, frozenset[str]] = {
    "none": frozenset({"type"}),
    "token": frozenset({"type", "secret", "header"}),
    "basic": frozenset({"type", "username", "password"}),
    "hmac": frozenset({"type", "secret", "header"}),
    "standard-webhooks": frozenset({"type", "secret", "tolerance"}),
    "jwt": frozenset({"type", "secret", "public_key", "algorithms", "audience", "issuer"}),
}
_ALL_KEYS = frozenset().union(*_KEYS.values())

DEFAULT_TOLERANCE = 300
MAX_TOLERANCE = 3600
MAX_ROTATED_VALUES = 5
MAX_SIGNATURES = 10
JWT_LEEWAY = 30
_MAX_HEADER_CHARS = 16 * 1024
_MAX_SIGNATURE_HEADER_CHARS = 4096
_MAX_WEBHOOK_ID_CHARS = 256
_MAX_SECRET_FILE_BYTES = 1024 * 1024

_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_KEY_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES256K", "ES384", "ES512", "ES521", "EdDSA",
)  # fmt: skip
_JWT_ALGORITHMS = _HMAC_ALGORITHMS + _KEY_ALGORITHMS
_PRIVATE_KEY_TYPES = (RSAPrivateKey, EllipticCurvePrivateKey, Ed25519PrivateKey, Ed448PrivateKey)

_SW_SECRET_PREFIX = "whsec_"
_SW_ASYMMETRIC_PREFIXES = ("whsk_", "whpk_")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# Visible ASCII; a "," would mean the caller joined duplicated webhook-id headers.
_WEBHOOK_ID = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# What pyjwt and the crypto backend may raise on hostile tokens (pyjwt wraps most of it).
_JWT_FAILURES = (jwt.PyJWTError, ValueError, TypeError, RecursionError, OverflowError)


# --- secrets -------------------------------------------------------------------------------


def resolve_secret(value: str) -> str:
    """Resolve a secret reference: ``env:NAME``, ``file:PATH``, or a literal returned as is.

    ``file:`` contents are read as UTF-8 and lose one trailing newline; ``~`` is expanded.
    Raises :class:`SpecError` naming the reference (never a secret value) when the variable is
    unset or the file cannot be read.
    """
    if value.startswith("env:"):
        name = value[4:]
        if not _ENV_NAME.fullmatch(name):
            raise SpecError(f"secret reference {value!r} does not name an environment variable")
        try:
            return os.environ[name]
        except KeyError:
            raise SpecError(
                f"secret reference {value!r}: environment variable {name} is not set"
            ) from None
    if value.startswith("file:"):
        path = value[5:]
        if not path:
            raise SpecError(f"secret reference {value!r} does not name a file")
        try:
            with open(os.path.expanduser(path), "rb") as fh:
                data = fh.read(_MAX_SECRET_FILE_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SpecError(f"secret reference {value!r}: cannot read the file: {reason}") from None
        if len(data) > _MAX_SECRET_FILE_BYTES:
            raise SpecError(f"secret reference {value!r}: the file is larger than 1 MiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecError(f"secret reference {value!r}: the file is not UTF-8 text") from None
        if text.endswith("\r\n"):
            return text[:-2]
        if text.endswith("\n"):
            return text[:-1]
        return text
    return value


def _is_reference(value: str) -> bool:
    return value.startswith(("env:", "file:"))


# --- signing helpers -----------------------------------------------------------------------


def sign_hmac_sha256_hex(secret: str, body: bytes) -> str:
    """Return ``sha256=<hex>``, the HMAC-SHA256 of ``body`` that GitHub and ``hmac`` send."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the Standard Webhooks ``v1,<base64>`` signature of ``{msg_id}.{timestamp}.{body}``.

    ``secret`` is read as the verifier reads it: ``whsec_<base64>``, else its UTF-8 bytes.
    """
    key = _standard_webhooks_key(secret)
    return "v1," + base64.b64encode(_sw_digest(key, msg_id, str(timestamp), body)).decode("ascii")


def _standard_webhooks_key(secret: str) -> bytes:
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


def _sw_digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def _hmac_hex_candidate(value: str) -> bytes | None:
    """Return the lower-case hex digest of a ``sha256=<hex>`` value, or None if malformed."""
    if len(value) != 71 or value[:7].lower() != "sha256=":
        return None
    hex_part = value[7:]
    if not _HEX_SHA256.fullmatch(hex_part):
        return None
    return hex_part.lower().encode("ascii")


def _any_equal(candidate: bytes, expected: Sequence[bytes]) -> bool:
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
    candidate = _hmac_hex_candidate(header.strip(" \t"))
    keys = [s.encode("utf-8") for s in secrets if s]
    if candidate is None or not keys:
        return False
    expected = [hmac.new(k, body, hashlib.sha256).hexdigest().encode("ascii") for k in keys]
    return _any_equal(candidate, expected)


# --- config --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    """A validated ``auth`` table. Secret-like values stay unresolved references.

    ``header`` is the lower-case credential header name for ``token`` and ``hmac`` (None for the
    other types). Secret-like fields are kept out of ``repr`` because a literal secret is allowed.
    """

    type: str = "none"
    secrets: tuple[str, ...] = field(default=(), repr=False)
    header: str | None = None
    username: str | None = None
    passwords: tuple[str, ...] = field(default=(), repr=False)
    algorithms: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()
    issuer: tuple[str, ...] = ()
    public_keys: tuple[str, ...] = field(default=(), repr=False)
    tolerance: int = DEFAULT_TOLERANCE

    def auth_headers(self) -> frozenset[str]:
        """Lower-case names of the headers that carry credentials (to drop from payloads)."""
        if self.type in ("token", "hmac") and self.header:
            return frozenset({self.header})
        if self.type in ("basic", "jwt"):
            return frozenset({"authorization"})
        if self.type == "standard-webhooks":
            return frozenset({"webhook-signature"})
        return frozenset()


def _fail(key: str, message: str) -> SpecError:
    return SpecError(message, field=f"auth.{key}")


def _suggest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _strings(table: Mapping[str, Any], key: str, *, max_items: int) -> tuple[str, ...]:
    """A string or a list of strings, none empty; absent -> ()."""
    if key not in table:
        return ()
    value = table[key]
    if isinstance(value, str):
        items: Sequence[Any] = (value,)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise _fail(key, f"must be a string or a list of strings, not {type(value).__name__}")
    if not items:
        raise _fail(key, "must list at least one value")
    if len(items) > max_items:
        raise _fail(key, f"lists {len(items)} values; at most {max_items} are allowed")
    for item in items:
        if not isinstance(item, str):
            raise _fail(key, f"must be a string or a list of strings, not {type(item).__name__}")
        if not item:
            raise _fail(key, "must not be empty")
    return tuple(items)


def _secret_refs(table: Mapping[str, Any], key: str, *, required: bool) -> tuple[str, ...]:
    refs = _strings(table, key, max_items=MAX_ROTATED_VALUES)
    if required and not refs:
        raise _fail(key, "is required")
    for ref in refs:
        if ref.startswith("env:") and not _ENV_NAME.fullmatch(ref[4:]):
            raise _fail(key, f"{ref!r} does not name an environment variable")
        if ref.startswith("file:") and not ref[5:]:
            raise _fail(key, "'file:' does not name a file")
    return refs


def _header_name(table: Mapping[str, Any], default: str) -> str:
    value = table.get("header", default)
    if not isinstance(value, str):
        raise _fail("header", f"must be a string, not {type(value).__name__}")
    if not _HEADER_NAME.fullmatch(value):
        raise _fail("header", "must be an HTTP header name (letters, digits, '-', up to 64)")
    return value.lower()


def _tolerance(table: Mapping[str, Any]) -> int:
    value = table.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            "tolerance", f"must be an integer number of seconds, not {type(value).__name__}"
        )
    if not 1 <= value <= MAX_TOLERANCE:
        raise _fail("tolerance", f"must be between 1 and {MAX_TOLERANCE} seconds")
    return value


def _jwt_algorithms(table: Mapping[str, Any], *, with_secret: bool) -> tuple[str, ...]:
    key_field = "secret" if with_secret else "public_key"
    allowed = _HMAC_ALGORITHMS if with_secret else _KEY_ALGORITHMS
    names = _strings(table, "algorithms", max_items=len(_JWT_ALGORITHMS))
    if not names:
        return ("HS256",) if with_secret else ("RS256",)
    for name in names:
        if name.lower() == "none":
            raise _fail("algorithms", "the 'none' algorithm is refused: tokens must be signed")
        if name not in _JWT_ALGORITHMS:
            raise _fail(
                "algorithms", f"unknown algorithm {name!r}{_suggest(name, _JWT_ALGORITHMS)}"
            )
        if name not in allowed:
            raise _fail(
                "algorithms",
                f"{name} cannot be used with {key_field}; allowed: {', '.join(allowed)}",
            )
    return tuple(dict.fromkeys(names))


def parse_auth(table: Mapping[str, Any] | None) -> WebhookAuth:
    """Validate a webhook trigger's ``auth`` table (None means ``{type = "none"}``).

    Raises :class:`SpecError` whose ``field`` is ``auth.<key>`` for unknown keys (with a
    did-you-mean hint), wrong types, missing secrets and unusable algorithms. Literal keys and
    ``whsec_`` secrets are checked here too; references are checked when a :class:`Verifier` is
    built.
    """
    if table is None:
        return WebhookAuth()
    if not isinstance(table, Mapping):
        raise SpecError(f"must be a table, not {type(table).__name__}", field="auth")
    if "type" not in table:
        raise _fail("type", f"is required (one of {', '.join(AUTH_TYPES)})")
    kind = table["type"]
    if not isinstance(kind, str):
        raise _fail("type", f"must be a string, not {type(kind).__name__}")
    if kind not in _KEYS:
        hint = _suggest(kind, AUTH_TYPES)
        raise _fail("type", f"unknown auth type {kind!r}{hint} (one of {', '.join(AUTH_TYPES)})")
    allowed = _KEYS[kind]
    for key in table:
        if not isinstance(key, str):
            raise SpecError(f"keys must be strings, not {type(key).__name__}", field="auth")
        if key not in allowed:
            hint = _suggest(key, sorted(allowed)) or _suggest(key, sorted(_ALL_KEYS))
            raise _fail(
                key,
                f"unknown key for auth type {kind!r}{hint} (keys: {', '.join(sorted(allowed))})",
            )

    if kind == "none":
        return WebhookAuth()
    if kind == "token":
        secrets = _secret_refs(table, "secret", required=True)
        return WebhookAuth(type=kind, secrets=secrets, header=_header_name(table, "Authorization"))
    if kind == "hmac":
        secrets = _secret_refs(table, "secret", required=True)
        return WebhookAuth(
            type=kind, secrets=secrets, header=_header_name(table, "X-Signature-256")
        )
    if kind == "basic":
        usernames = _strings(table, "username", max_items=1)
        if not usernames:
            raise _fail("username", "is required")
        username = usernames[0]
        if not _is_reference(username) and ":" in username:
            raise _fail("username", "must not contain ':' (RFC 7617)")
        passwords = _secret_refs(table, "password", required=True)
        return WebhookAuth(type=kind, username=username, passwords=passwords)
    if kind == "standard-webhooks":
        secrets = _secret_refs(table, "secret", required=True)
        for ref in secrets:
            if not _is_reference(ref):
                _check_sw_secret(ref, "secret")
        return WebhookAuth(type=kind, secrets=secrets, tolerance=_tolerance(table))

    # jwt
    secrets = _secret_refs(table, "secret", required=False)
    public_keys = _secret_refs(table, "public_key", required=False)
    if secrets and public_keys:
        raise _fail("public_key", "set either secret (HS*) or public_key, not both")
    if not secrets and not public_keys:
        raise _fail("secret", "jwt needs a secret (HS*) or a public_key")
    algorithms = _jwt_algorithms(table, with_secret=bool(secrets))
    audience = _strings(table, "audience", max_items=16)
    issuer = _strings(table, "issuer", max_items=16)
    key_field = "secret" if secrets else "public_key"
    literals = [ref for ref in secrets or public_keys if not _is_reference(ref)]
    _prepare_jwt_keys(literals, algorithms, key_field)
    return WebhookAuth(
        type=kind,
        secrets=secrets,
        public_keys=public_keys,
        algorithms=algorithms,
        audience=audience,
        issuer=issuer,
    )


def _check_sw_secret(secret: str, key: str) -> bytes:
    try:
        return _standard_webhooks_key(secret)
    except ValueError as exc:
        raise _fail(key, str(exc)) from None


def _load_key_material(value: str) -> str | Any:
    """Certificates are reduced to their public key; everything else goes to pyjwt as text."""
    if "-----BEGIN CERTIFICATE-----" in value:
        return x509.load_pem_x509_certificate(value.encode("utf-8")).public_key()
    return value


def _prepare_key(algorithm: Algorithm, value: str) -> Any | None:
    """The key as ``algorithm`` uses it, or None when it does not fit that algorithm."""
    # pyjwt and cryptography report an unusable key with several exception types, by format.
    try:
        return algorithm.prepare_key(_load_key_material(value))
    except (jwt.PyJWTError, ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _prepare_jwt_keys(
    values: Sequence[str], algorithms: Sequence[str], key_field: str
) -> dict[str, list[Any]]:
    """Map each algorithm to the keys usable with it; every key must fit at least one."""
    prepared: dict[str, list[Any]] = {alg: [] for alg in algorithms}
    for position, value in enumerate(values, start=1):
        which = f"{key_field} #{position}" if len(values) > 1 else key_field
        weak: list[str] = []
        fits = False
        for alg in algorithms:
            algorithm = jwt.get_algorithm_by_name(alg)
            key = _prepare_key(algorithm, value)
            if key is None:
                continue
            if isinstance(key, _PRIVATE_KEY_TYPES):
                raise _fail(key_field, f"{which} is a private key; give the public key")
            if algorithm.check_key_length(key):
                weak.append(alg)
                continue
            prepared[alg].append(key)
            fits = True
        if fits:
            continue
        if weak and key_field == "secret":
            raise _fail(
                key_field,
                f"{which} is shorter than {', '.join(weak)} requires (RFC 7518 §3.2: at least "
                "as many bytes as the hash output, e.g. 32 for HS256)",
            )
        if weak:
            raise _fail(
                key_field, f"{which} is too small for {', '.join(weak)} (RSA needs 2048 bits)"
            )
        expected = "an HMAC secret" if key_field == "secret" else "a PEM public key"
        raise _fail(key_field, f"{which} is not {expected} usable with {', '.join(algorithms)}")
    return prepared


# --- verification --------------------------------------------------------------------------


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
            self._token_macs = [self._mac(_to_bytes(s)) for s in self._resolve(auth.secrets)]
            self._check = self._check_token
        elif kind == "basic":
            username = self._resolve((auth.username or "",), key="username")[0]
            if ":" in username:
                raise _fail("username", "must not contain ':' (RFC 7617)")
            self._username = username
            self._username_mac = self._mac(_to_bytes(username))
            passwords = self._resolve(auth.passwords, key="password")
            self._password_macs = [self._mac(_to_bytes(p)) for p in passwords]
            self._check = self._check_basic
        elif kind == "hmac":
            self._hmac_keys = [_to_bytes(s) for s in self._resolve(auth.secrets)]
            self._check = self._check_hmac
        elif kind == "standard-webhooks":
            self._sw_keys = [_check_sw_secret(s, "secret") for s in self._resolve(auth.secrets)]
            self._check = self._check_standard_webhooks
        elif kind == "jwt":
            key_field = "secret" if auth.secrets else "public_key"
            values = self._resolve(auth.secrets or auth.public_keys, key=key_field)
            self._jwt_keys = _prepare_jwt_keys(values, auth.algorithms, key_field)
            self._check = self._check_jwt
        else:
            raise _fail("type", f"unknown auth type {kind!r}")

    def _resolve(self, refs: Sequence[str], *, key: str = "secret") -> list[str]:
        values = []
        for ref in refs:
            try:
                value = resolve_secret(ref)
            except SpecError as exc:
                raise exc.located(prefix=f"auth.{key}") from None
            if not value:
                # An empty secret would make every signature forgeable: fail closed.
                where = f" ({ref!r})" if _is_reference(ref) else ""
                raise _fail(key, f"resolves to an empty value{where}")
            values.append(value)
        if not values:
            raise _fail(key, "is required")
        return values

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
        name = self.auth.header or "authorization"
        value = _require(headers, name)
        if name == "authorization":
            value = _credentials(value, "Bearer")
        if not _any_equal(self._mac(_to_bytes(value)), self._token_macs):
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
        password_ok = _any_equal(self._mac(_to_bytes(password)), self._password_macs)
        # Both checks always run: "&" rather than "and" keeps the username's validity untimed.
        if not (user_ok & password_ok):
            raise AuthError("authorization header has a wrong username or password")
        return {"user": self._username}

    def _check_hmac(self, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
        name = self.auth.header or "x-signature-256"
        candidate = _hmac_hex_candidate(_require(headers, name))
        if candidate is None:
            raise AuthError(f"{name} header is not of the form sha256=<64 hex digits>")
        expected = [
            hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
            for key in self._hmac_keys
        ]
        if not _any_equal(candidate, expected):
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
        expected = [_sw_digest(key, msg_id, stamp, body) for key in self._sw_keys]
        matched = False
        for candidate in candidates:
            matched |= _any_equal(candidate, expected)
        if not matched:
            raise AuthError("webhook-signature header does not match the message")
        return {"webhook_id": msg_id}

    def _check_jwt(self, headers: Mapping[str, str], body: bytes, now: float) -> dict[str, Any]:
        token = _credentials(_require(headers, "authorization"), "Bearer")
        if not _COMPACT_JWS.fullmatch(token):
            raise AuthError("authorization header does not carry a well-formed JWT")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except _JWT_FAILURES:
            raise AuthError("authorization header does not carry a well-formed JWT") from None
        keys = self._jwt_keys.get(alg) if isinstance(alg, str) else None
        if not keys or not isinstance(alg, str):
            raise AuthError("authorization header: the token's algorithm is not accepted")
        claims = self._decode_jwt(token, alg, keys)
        self._check_jwt_times(claims, now)
        return {"claims": claims}

    def _decode_jwt(self, token: str, alg: str, keys: Sequence[Any]) -> dict[str, Any]:
        auth = self.auth
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
                raise AuthError(
                    f"authorization header: the token has no {exc.claim} claim"
                ) from None
            except jwt.InvalidAudienceError:
                raise AuthError(
                    "authorization header: the token's audience is not accepted"
                ) from None
            except jwt.InvalidIssuerError:
                raise AuthError(
                    "authorization header: the token's issuer is not accepted"
                ) from None
            # Any other failure is a bad token; pyjwt's message is not repeated because it can
            # quote token contents (e.g. the JSON decoder's error).
            except _JWT_FAILURES:
                raise AuthError("authorization header: the token is invalid") from None
            return claims
        raise AuthError("authorization header: the token's signature is invalid")

    @staticmethod
    def _check_jwt_times(claims: Mapping[str, Any], now: float) -> None:
        def number(name: str) -> int | float | None:
            value = claims.get(name)
            if value is None:
                return None
            # json.loads accepts NaN and Infinity, which would make every comparison below pass.
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (isinstance(value, float) and not math.isfinite(value))
            ):
                raise AuthError(f"authorization header: the token's {name} claim is not a number")
            return value

        exp = number("exp")
        if exp is None:
            raise AuthError("authorization header: the token has no exp claim")
        if exp <= now - JWT_LEEWAY:
            raise AuthError("authorization header: the token has expired")
        nbf = number("nbf")
        if nbf is not None and nbf > now + JWT_LEEWAY:
            raise AuthError("authorization header: the token is not valid yet (nbf)")
        iat = number("iat")
        if iat is not None and iat > now + JWT_LEEWAY:
            raise AuthError("authorization header: the token was issued in the future (iat)")
