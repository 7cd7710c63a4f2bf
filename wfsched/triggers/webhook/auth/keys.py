"""Secrets and keys of webhook auth: resolving ``env:``/``file:`` references, loading key material.

Errors are :class:`~wfsched.SpecError` (on the ``auth.<key>`` field once a key is known) that
never carry a secret value, only the reference that names it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wfsched import SpecError
from wfsched.triggers.webhook.auth.sign import standard_webhooks_key

if TYPE_CHECKING:
    from jwt.algorithms import Algorithm

# pyjwt and cryptography are imported where JWT keys are prepared, not with the module.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SECRET_FILE_BYTES = 1024 * 1024


def fail(key: str, message: str) -> SpecError:
    """A :class:`SpecError` on the ``auth.<key>`` field."""
    return SpecError(message, field=f"auth.{key}")


# --- references ----------------------------------------------------------------------------


def is_reference(value: str) -> bool:
    return value.startswith(("env:", "file:"))


def reference_problem(ref: str) -> str | None:
    """Why ``ref`` can never resolve (a malformed reference), or None."""
    if ref.startswith("env:") and not _ENV_NAME.fullmatch(ref[4:]):
        return f"{ref!r} does not name an environment variable"
    if ref == "file:":
        return f"{ref!r} does not name a file"
    return None


def resolve_secret(value: str) -> str:
    """Resolve a secret reference: ``env:NAME``, ``file:PATH``, or a literal returned as is.

    ``file:`` contents are read as UTF-8 and lose one trailing newline; ``~`` is expanded.
    Raises :class:`SpecError` naming the reference (never a secret value) when the variable is
    unset or the file cannot be read.
    """
    problem = reference_problem(value)
    if problem:
        raise SpecError(f"secret reference {problem}")
    if value.startswith("env:"):
        name = value[4:]
        try:
            return os.environ[name]
        except KeyError:
            raise SpecError(
                f"secret reference {value!r}: environment variable {name} is not set"
            ) from None
    if value.startswith("file:"):
        return _read_secret_file(value)
    return value


def _read_secret_file(ref: str) -> str:
    try:
        with open(os.path.expanduser(ref[5:]), "rb") as fh:
            data = fh.read(_MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError(f"secret reference {ref!r}: cannot read the file: {reason}") from None
    if len(data) > _MAX_SECRET_FILE_BYTES:
        raise SpecError(f"secret reference {ref!r}: the file is larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"secret reference {ref!r}: the file is not UTF-8 text") from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def resolve_secrets(refs: Sequence[str], key: str) -> list[str]:
    """Resolve every reference of the ``auth.<key>`` field; each must give a non-empty value."""
    values = []
    for ref in refs:
        try:
            value = resolve_secret(ref)
        except SpecError as exc:
            raise exc.located(prefix=f"auth.{key}") from None
        if not value:
            # An empty secret would make every signature forgeable: fail closed.
            where = f" ({ref!r})" if is_reference(ref) else ""
            raise fail(key, f"resolves to an empty value{where}")
        values.append(value)
    if not values:
        raise fail(key, "is required")
    return values


# --- key material --------------------------------------------------------------------------


def sw_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks ``secret``; :class:`SpecError` on ``auth.secret``."""
    try:
        return standard_webhooks_key(secret)
    except ValueError as exc:
        raise fail("secret", str(exc)) from None


def _load_key_material(value: str) -> str | Any:
    """Certificates are reduced to their public key; everything else goes to pyjwt as text."""
    if "-----BEGIN CERTIFICATE-----" in value:
        from cryptography import x509

        return x509.load_pem_x509_certificate(value.encode("utf-8")).public_key()
    return value


def _prepare_key(algorithm: Algorithm, value: str) -> Any | None:
    """The key as ``algorithm`` uses it, or None when it does not fit that algorithm."""
    import jwt
    from cryptography.exceptions import UnsupportedAlgorithm

    # pyjwt and cryptography report an unusable key with several exception types, by format.
    try:
        return algorithm.prepare_key(_load_key_material(value))
    except (jwt.PyJWTError, ValueError, TypeError, UnsupportedAlgorithm):
        return None


def prepare_jwt_keys(
    values: Sequence[str], algorithms: Sequence[str], key_field: str
) -> dict[str, list[Any]]:
    """Map each algorithm to the keys usable with it; every key must fit at least one."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    private_key_types = (
        RSAPrivateKey,
        EllipticCurvePrivateKey,
        Ed25519PrivateKey,
        Ed448PrivateKey,
    )
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
            if isinstance(key, private_key_types):
                raise fail(key_field, f"{which} is a private key; give the public key")
            if algorithm.check_key_length(key):
                weak.append(alg)
                continue
            prepared[alg].append(key)
            fits = True
        if fits:
            continue
        if weak and key_field == "secret":
            raise fail(
                key_field,
                f"{which} is shorter than {', '.join(weak)} requires (RFC 7518 §3.2: at least "
                "as many bytes as the hash output, e.g. 32 for HS256)",
            )
        if weak:
            raise fail(
                key_field, f"{which} is too small for {', '.join(weak)} (RSA needs 2048 bits)"
            )
        expected = "an HMAC secret" if key_field == "secret" else "a PEM public key"
        raise fail(key_field, f"{which} is not {expected} usable with {', '.join(algorithms)}")
    return prepared
