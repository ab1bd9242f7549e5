"""Parse JSON that an untrusted party wrote: no duplicate keys, no NaN/Infinity, bounded nesting.

Why the nesting bound is ours and not the recursion limit's: the C scanner of `json` recurses once
per bracket and only stops at `sys.getrecursionlimit()`. Some libraries raise that limit (py_ecc,
which web3 imports, sets 100 000), and then a file of 100 000 `[` overflows the C stack and kills
the whole process with SIGSEGV instead of raising. So the depth is counted before parsing.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, NoReturn

MAX_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JSONRefused(ValueError):
    """The text is not JSON, or is JSON we do not accept (the message says which)."""


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting of `data`, brackets inside strings not counted."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise JSONRefused(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> NoReturn:
    raise JSONRefused(f"{name} is not a JSON number")


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data`; raise `JSONRefused` on invalid JSON, duplicate keys, NaN/Infinity or nesting
    deeper than `max_depth`."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    opening = raw.count(b"[") + raw.count(b"{")  # an upper bound that costs nothing
    if opening > max_depth and nesting_depth(raw) > max_depth:
        raise JSONRefused(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except JSONRefused:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JSONRefused(str(exc)) from exc
