"""Secrets and keys of webhook auth: the ``auth`` secrets resolved, key material loaded.

References (``env:``/``file:``) are resolved by :func:`wfsched.resolve_secret`. Errors are
:class:`~wfsched.SpecError` on the ``auth.<key>`` field that never carry a secret value, only
the reference that names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wfsched import SpecError, is_reference, resolve_secret
from wfsched.triggers.webhook.auth.sign import standard_webhooks_key

if TYPE_CHECKING:
    from jwt.algorithms import Algorithm

# pyjwt and cryptography are imported where JWT keys are prepared, not with the module.


def fail(key: str, message: str) -> SpecError:
    """A :class:`SpecError` on the ``auth.<key>`` field."""
    return SpecError(message, field=f"auth.{key}")


def resolve_secrets(refs: Sequence[str], key: str) -> list[str]:
    """Resolve every reference of the ``auth.<key>`` field; each must give a non-empty value."""
    values = []
    for ref in refs:
        value = resolve_secret(ref, field=f"auth.{key}")
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
