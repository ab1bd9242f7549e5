"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and strict base64url.

Every signed or hashed JSON value in trustspace goes through `canonical_json`, so the same value
always yields the same bytes on every node.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Set
from typing import Any

import rfc8785

from .errors import DocumentInvalid


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of `value`; raises ValueError for what I-JSON cannot carry exactly
    (NaN, infinities, integers beyond ±2^53, non-string keys)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise ValueError(f"value has no canonical JSON form: {exc}") from None


def b64u_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: object, field: str) -> bytes:
    """Strict inverse of `b64u_encode`: only the canonical encoding of some bytes is accepted,
    so no two strings decode to the same bytes."""
    if not isinstance(text, str):
        raise DocumentInvalid("malformed", f"{field} must be a base64url string")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DocumentInvalid("malformed", f"{field} is not base64url") from None
    if b64u_encode(data) != text:
        raise DocumentInvalid("malformed", f"{field} is not canonical base64url")
    return data


def load_json(data: bytes) -> object:
    """Parse JSON bytes; anything that is not JSON is a `malformed` DocumentInvalid."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DocumentInvalid("malformed", f"not JSON: {exc}") from None


def versioned_object(obj: object, what: str, fmt: str, fields: Set[str]) -> dict[str, Any]:
    """The checks every trustspace wire object starts with: a JSON object, of the format
    version this code knows, with exactly the expected fields (fail closed on extras)."""
    if not isinstance(obj, dict):
        raise DocumentInvalid("malformed", f"{what} is a JSON object")
    if obj.get("format") != fmt:
        raise DocumentInvalid("unsupported-format", f"format {obj.get('format')!r}")
    if set(obj) != fields:
        raise DocumentInvalid("malformed", f"fields must be exactly {sorted(fields)}")
    return obj
