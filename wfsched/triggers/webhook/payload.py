"""Turning an inbound webhook request into the event payload.

The payload is ``{"method", "path", "query", "headers", "body", "body_encoding"}``:

* ``body`` is the parsed JSON when the request says it is JSON (``application/json``,
  ``text/json``, ``application/*+json``) or, without a Content-Type, when it is a JSON object
  or array; ``body_encoding`` is then ``"json"``. A body that claims to be JSON but is not is
  refused (400), so a sender learns about its bug instead of the workflow receiving a string.
* A body whose Content-Type declares a charset is text (``"text"``), and must be that: a
  charset that is unknown, or that does not decode the body strictly to text every store can
  hold (no NUL, no lone surrogate), is refused (400 ``invalid_body``). UTF-7 is refused
  outright: Python's decoder turns ``+2AA-`` into a lone surrogate, the same text has many
  spellings, and browsers dropped it for its security history.
* Any other body is text when it is UTF-8 without a NUL character; otherwise it is kept
  exactly, base64-encoded (``"base64"``). Binary deliveries are never refused and never altered.
* An empty body is ``null`` with ``body_encoding`` ``null``.

Everything in a payload must be storable by every store backend, and read back as sent:
PostgreSQL's jsonb refuses ``\\u0000`` and lone surrogates, strict JSON has no NaN/Infinity,
and a number beyond the IEEE-754 double range (``1e400``) would be read as infinity and
written back as ``null``. Such JSON is refused with 400 here (by :func:`wfsched.parse_json`),
before the request joins a group commit it would otherwise fail for every request sharing it.
Integers of any size are kept exact.
"""

from __future__ import annotations

import base64
import codecs
from collections.abc import Iterable, Mapping
from typing import Any

from wfsched import BadBody, parse_json

# Headers that carry credentials whatever the trigger's auth type: never copied into events.
ALWAYS_DROPPED = frozenset({"authorization", "proxy-authorization", "cookie"})
# Codecs that decode strictly to well-formed text: nothing left to check but NUL.
_WELL_FORMED = frozenset(
    {"utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"}
)
_REFUSED_CODECS = frozenset({"utf-7"})


_MEDIA_TYPES: dict[str, tuple[str, str | None]] = {}
"""Content-Type values seen, parsed; a sender sends the same one every time."""
_MEDIA_TYPES_KEPT = 256


def media_type(content_type: str | None) -> tuple[str, str | None]:
    """Return the lower-case media type and the charset parameter (or None)."""
    if not content_type:
        return "", None
    parsed = _MEDIA_TYPES.get(content_type)
    if parsed is None:
        parsed = _parse_media_type(content_type)
        if len(_MEDIA_TYPES) < _MEDIA_TYPES_KEPT:  # bounded: the header is the sender's
            _MEDIA_TYPES[content_type] = parsed
    return parsed


def _parse_media_type(content_type: str) -> tuple[str, str | None]:
    kind, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return kind.strip().lower(), charset


def is_json_type(kind: str) -> bool:
    """True for ``application/json``, ``text/json`` and ``application/<x>+json``."""
    return kind in ("application/json", "text/json") or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def decode_body(body: bytes, content_type: str | None) -> tuple[Any, str | None]:
    """Return ``(body, body_encoding)`` for the payload; BadBody for broken JSON."""
    if not body:
        return None, None
    kind, charset = media_type(content_type)
    if is_json_type(kind):
        return parse_json(body), "json"
    if not kind and body.lstrip()[:1] in (b"{", b"["):
        try:
            return parse_json(body), "json"
        except BadBody:
            pass
    if charset is not None:
        return decode_text(body, charset), "text"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return base64.b64encode(body).decode("ascii"), "base64"
    return text, "text"


def decode_text(body: bytes, charset: str) -> str:
    """Decode a body in its declared ``charset`` strictly; BadBody (``invalid_body``) if not."""
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        raise BadBody(f"the Content-Type charset {charset!r} is unknown", "invalid_body") from None
    if codec in _REFUSED_CODECS:
        raise BadBody(f"the Content-Type charset {charset!r} is not accepted", "invalid_body")
    try:
        text = body.decode(codec)
    except LookupError:  # a codec that is not a text encoding, e.g. "base64"
        raise BadBody(f"the Content-Type charset {charset!r} is unknown", "invalid_body") from None
    except UnicodeDecodeError as exc:
        raise BadBody(
            f"the body is not valid {charset} (byte {exc.start}: {exc.reason})", "invalid_body"
        ) from None
    if "\x00" in text:
        raise BadBody("the body contains a NUL character, which cannot be stored", "invalid_body")
    if codec not in _WELL_FORMED:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadBody(
                f"the body decodes ({charset}) to an unpaired surrogate, which cannot be stored",
                "invalid_body",
            ) from None
    return text


def visible_headers(headers: Mapping[str, str], dropped: frozenset[str]) -> dict[str, str]:
    """Copy the request headers without ``dropped`` (which should include ALWAYS_DROPPED)."""
    return {k: v for k, v in headers.items() if k not in dropped}


def has_nul(values: Iterable[str]) -> bool:
    """True when any value holds a NUL character (a percent-encoded ``%00`` in a query).

    Values reach us decoded as latin-1 (headers) or UTF-8 with replacement (query strings),
    so NUL is the one character in them a store cannot hold."""
    return "\x00" in "".join(values)
