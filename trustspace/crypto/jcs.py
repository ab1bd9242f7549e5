"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and strict base64url.

Every signed or hashed JSON value in trustspace goes through `canonical_json`, so the same value
always yields the same bytes on every node.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Set
from typing import Any

import orjson
import rfc8785

from .errors import DocumentInvalid

_MAX_EXACT = 2**53 - 1
_NOT_PLAIN = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")  # surrogates, astral


def _plain(value: Any) -> bool:
    """Whether a plain JSON writer with sorted keys writes exactly RFC 8785's bytes for
    `value`: only dict, list, str, int, bool and None (not subclasses); no floats (ECMAScript
    number formatting); integers within ±(2^53 - 1); keys that sort the same by code point as
    by UTF-16 unit (no astral characters); no lone surrogates.

    The hot loop of every signature and digest, so strings and numbers are checked where they
    are met rather than pushed on the stack."""
    stack = [value]
    pop, push, search = stack.pop, stack.append, _NOT_PLAIN.search
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            for key, item in v.items():
                if type(key) is not str or (not key.isascii() and search(key)):
                    return False
                t = type(item)
                if t is str:
                    if not item.isascii() and search(item):
                        return False
                elif t is dict or t is list:
                    push(item)
                elif t is int:
                    if not -_MAX_EXACT <= item <= _MAX_EXACT:
                        return False
                elif item is not None and t is not bool:
                    return False
        elif t is list:
            for item in v:
                t = type(item)
                if t is str:
                    if not item.isascii() and search(item):
                        return False
                elif t is dict or t is list:
                    push(item)
                elif t is int:
                    if not -_MAX_EXACT <= item <= _MAX_EXACT:
                        return False
                elif item is not None and t is not bool:
                    return False
        elif t is str:
            if not v.isascii() and search(v):
                return False
        elif t is int:
            if not -_MAX_EXACT <= v <= _MAX_EXACT:
                return False
        elif v is not None and t is not bool:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of `value`; raises ValueError for what I-JSON cannot carry exactly
    (NaN, infinities, integers beyond ±2^53, non-string keys).

    Most of what we sign (ids, digests, times, small integers) takes a fast path through
    `orjson` with sorted keys, which writes the same bytes for such values (checked against the
    `rfc8785` package by property tests); anything else goes through `rfc8785`. See
    docs/decisions/0006-canonical-json-writer.md."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # nested deeper than orjson goes (255 levels)
            return json.dumps(value, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
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
