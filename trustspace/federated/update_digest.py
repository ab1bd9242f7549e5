"""The SM3 digest of what a ClientApp's reply carries: the update a provider's receipt names.

It runs in two places: inside the ClientApp sandbox (copied beside `_clientapp_entry.py`,
which imports nothing of trustspace: so this module imports only the standard library), and
wherever someone holding the reply wants to check a receipt against it (the consumer's
ServerApp sees the same records). Both see the same record objects, so both compute the same
digest: ``"sm3:" + hex(SM3(encoding))`` where the encoding is, for each record in the reply's
content by sorted name, the name, the record's kind and then

- for an ArrayRecord, each array in order: its key, dtype, shape, stype and serialised bytes;
- for a MetricRecord or ConfigRecord, its items as sorted, compact JSON;

every field length-prefixed (8 bytes, big-endian) so no two contents share an encoding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

__all__ = ["content_digest"]


def _field(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return len(raw).to_bytes(8, "big") + raw


def _parts(content: Any) -> Iterator[bytes]:
    for name in sorted(content.keys()):
        record = content[name]
        kind = type(record).__name__
        yield _field(name)
        yield _field(kind)
        if kind == "ArrayRecord":
            for key, array in record.items():
                yield _field(key)
                yield _field(str(array.dtype))
                yield _field(json.dumps(list(array.shape)))
                yield _field(str(array.stype))
                yield _field(bytes(array.data))
        else:
            yield _field(json.dumps(dict(record), sort_keys=True, separators=(",", ":"),
                                    default=repr))


def content_digest(content: Any) -> str:
    """``sm3:<hex>`` of a Flower RecordDict (a message's content); see the module docstring."""
    h = hashlib.new("sm3")
    for part in _parts(content):
        h.update(part)
    return "sm3:" + h.hexdigest()
