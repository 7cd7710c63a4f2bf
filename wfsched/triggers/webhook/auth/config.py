"""The webhook ``auth`` table: its schema and its deploy-time validation into a WebhookAuth.

Nothing is resolved here: secret-like values stay references (``env:``/``file:``) so that a parsed
spec can be stored and shown; only literal keys and ``whsec_`` secrets are checked for fitness.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wfsched import SpecError, is_reference, reference_problem
from wfsched.triggers.webhook.auth.keys import fail, prepare_jwt_keys, sw_secret_key

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
RESOLVED_KEYS = ("secret", "username", "password", "public_key")
"""The ``auth`` keys whose values a Verifier resolves as ``env:``/``file:`` references."""

# The credential header of the types that let the sender choose it (lower-case).
DEFAULT_HEADERS = {"token": "authorization", "hmac": "x-signature-256"}
DEFAULT_TOLERANCE = 300
MAX_TOLERANCE = 3600
MAX_ROTATED_VALUES = 5
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")

_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_KEY_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES256K", "ES384", "ES512", "ES521", "EdDSA",
)  # fmt: skip
_JWT_ALGORITHMS = _HMAC_ALGORITHMS + _KEY_ALGORITHMS


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
        if self.type in DEFAULT_HEADERS and self.header:
            return frozenset({self.header})
        if self.type in ("basic", "jwt"):
            return frozenset({"authorization"})
        if self.type == "standard-webhooks":
            return frozenset({"webhook-signature"})
        return frozenset()


def parse_auth(table: Mapping[str, Any] | None) -> WebhookAuth:
    """Validate a webhook trigger's ``auth`` table (None means ``{type = "none"}``).

    Raises :class:`SpecError` whose ``field`` is ``auth.<key>`` for unknown keys (with a
    did-you-mean hint), wrong types, missing secrets and unusable algorithms. Literal keys and
    ``whsec_`` secrets are checked here too; references are checked when a
    :class:`~wfsched.triggers.webhook.auth.Verifier` is built.
    """
    if table is None:
        return WebhookAuth()
    kind = _auth_type(table)
    if kind == "none":
        return WebhookAuth()
    if kind in DEFAULT_HEADERS:
        secrets = _secret_refs(table, "secret", required=True)
        return WebhookAuth(
            type=kind, secrets=secrets, header=_header_name(table, DEFAULT_HEADERS[kind])
        )
    if kind == "basic":
        usernames = _strings(table, "username", max_items=1)
        if not usernames:
            raise fail("username", "is required")
        username = usernames[0]
        if not is_reference(username) and ":" in username:
            raise fail("username", "must not contain ':' (RFC 7617)")
        passwords = _secret_refs(table, "password", required=True)
        return WebhookAuth(type=kind, username=username, passwords=passwords)
    if kind == "standard-webhooks":
        secrets = _secret_refs(table, "secret", required=True)
        for ref in secrets:
            if not is_reference(ref):
                sw_secret_key(ref)
        return WebhookAuth(type=kind, secrets=secrets, tolerance=_tolerance(table))

    # jwt
    secrets = _secret_refs(table, "secret", required=False)
    public_keys = _secret_refs(table, "public_key", required=False)
    if secrets and public_keys:
        raise fail("public_key", "set either secret (HS*) or public_key, not both")
    if not secrets and not public_keys:
        raise fail("secret", "jwt needs a secret (HS*) or a public_key")
    key_field = "secret" if secrets else "public_key"
    algorithms = _jwt_algorithms(table, key_field)
    audience = _strings(table, "audience", max_items=16)
    issuer = _strings(table, "issuer", max_items=16)
    literals = [ref for ref in secrets or public_keys if not is_reference(ref)]
    prepare_jwt_keys(literals, algorithms, key_field)
    return WebhookAuth(
        type=kind,
        secrets=secrets,
        public_keys=public_keys,
        algorithms=algorithms,
        audience=audience,
        issuer=issuer,
    )


def _auth_type(table: Mapping[str, Any]) -> str:
    """The table's ``type``, once every key of the table is known for that type."""
    if not isinstance(table, Mapping):
        raise SpecError(f"must be a table, not {type(table).__name__}", field="auth")
    if "type" not in table:
        raise fail("type", f"is required (one of {', '.join(AUTH_TYPES)})")
    kind = table["type"]
    if not isinstance(kind, str):
        raise fail("type", f"must be a string, not {type(kind).__name__}")
    if kind not in _KEYS:
        hint = _suggest(kind, AUTH_TYPES)
        raise fail("type", f"unknown auth type {kind!r}{hint} (one of {', '.join(AUTH_TYPES)})")
    allowed = _KEYS[kind]
    for key in table:
        if not isinstance(key, str):
            raise SpecError(f"keys must be strings, not {type(key).__name__}", field="auth")
        if key not in allowed:
            hint = _suggest(key, sorted(allowed)) or _suggest(key, sorted(_ALL_KEYS))
            raise fail(
                key,
                f"unknown key for auth type {kind!r}{hint} (keys: {', '.join(sorted(allowed))})",
            )
    return kind


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
        raise fail(key, f"must be a string or a list of strings, not {type(value).__name__}")
    if not items:
        raise fail(key, "must list at least one value")
    if len(items) > max_items:
        raise fail(key, f"lists {len(items)} values; at most {max_items} are allowed")
    for item in items:
        if not isinstance(item, str):
            raise fail(key, f"must be a string or a list of strings, not {type(item).__name__}")
        if not item:
            raise fail(key, "must not be empty")
    return tuple(items)


def _secret_refs(table: Mapping[str, Any], key: str, *, required: bool) -> tuple[str, ...]:
    refs = _strings(table, key, max_items=MAX_ROTATED_VALUES)
    if required and not refs:
        raise fail(key, "is required")
    for ref in refs:
        problem = reference_problem(ref)
        if problem:
            raise fail(key, problem)
    return refs


def _header_name(table: Mapping[str, Any], default: str) -> str:
    value = table.get("header", default)
    if not isinstance(value, str):
        raise fail("header", f"must be a string, not {type(value).__name__}")
    if not _HEADER_NAME.fullmatch(value):
        raise fail("header", "must be an HTTP header name (letters, digits, '-', up to 64)")
    return value.lower()


def _tolerance(table: Mapping[str, Any]) -> int:
    value = table.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail("tolerance", f"must be an integer number of seconds, not {type(value).__name__}")
    if not 1 <= value <= MAX_TOLERANCE:
        raise fail("tolerance", f"must be between 1 and {MAX_TOLERANCE} seconds")
    return value


def _jwt_algorithms(table: Mapping[str, Any], key_field: str) -> tuple[str, ...]:
    """The ``algorithms`` usable with a ``secret`` (HS*) or a ``public_key`` (the others)."""
    allowed = _HMAC_ALGORITHMS if key_field == "secret" else _KEY_ALGORITHMS
    names = _strings(table, "algorithms", max_items=len(_JWT_ALGORITHMS))
    if not names:
        return ("HS256",) if key_field == "secret" else ("RS256",)
    for name in names:
        if name.lower() == "none":
            raise fail("algorithms", "the 'none' algorithm is refused: tokens must be signed")
        if name not in _JWT_ALGORITHMS:
            raise fail("algorithms", f"unknown algorithm {name!r}{_suggest(name, _JWT_ALGORITHMS)}")
        if name not in allowed:
            raise fail(
                "algorithms",
                f"{name} cannot be used with {key_field}; allowed: {', '.join(allowed)}",
            )
    return tuple(dict.fromkeys(names))
