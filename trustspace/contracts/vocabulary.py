"""The words a trustspace ODRL policy may use, the values they take, and what each operator means:
the one place that says so. `trustspace.contracts.policy` compiles policies with it.

Spelling. ODRL terms are accepted bare, as the Dataspace Protocol's JSON-LD context compacts them
(``"use"``, ``"purpose"``, ``"eq"``, ``"or"``), or with the ``odrl:`` prefix (``"odrl:purpose"``);
trustspace's own terms only with ``ts:`` (the namespace `TS_NAMESPACE` of
`trustspace.registry.dsp`). Every other word is unknown, and unknown is refused, never ignored.

Actions: ``use`` (the only action of DSP 2025-1's ODRL profile). Duty actions: ``ts:deleteResults``.

Left operands: what each is evaluated on, its right operand, its operators ("term operators"
are defined below), and what the caller gets back when it holds:

=======================  ===============================  =====================  ================
left operand             value evaluated                  right operand          operators
=======================  ===============================  =====================  ================
``assignee``             the requesting participant (its  a participant id, or   term operators;
                         id, and its roles)               ``role:<r>``, r in     ``isA`` needs a
                                                          `ROLES`                role
``purpose``              the request's purpose            a term of the          term operators
                                                          provider's vocabulary
``dateTime``             ``now`` (an input, not a clock)  dateTime               eq neq lt lteq
                                                                                 gt gteq
``count``                uses so far + 1 (the uses        integer >= 0           lt lteq
                         including this one); a use limit
``ts:computeMode``       the request's compute mode       sandbox, federated,    term operators
                                                          homomorphic            (isA is eq)
``ts:minAggregation``    the request's aggregation k      integer >= 1           gteq gt
                         when known; an output rule
``ts:maxResultBytes``    the request's result size when   integer >= 0           lteq lt
                         known; an output rule
``ts:codeApproval``      nothing: an approval-required    ``"required"``         eq
                         flag for the caller
``ts:deleteResultsBy``   ``now`` must be before the       dateTime               eq lteq
                         deadline; a duty for the caller
=======================  ===============================  =====================  ================

Value domains (a right operand is a JSON string, as contract-schema.json wants, an
``{"@value": ..., "@type"?: ...}`` object, or, read leniently, a JSON integer; ``{"@id": ...}`` is
accepted for terms):

- integers: ``-?(0|[1-9][0-9]*)`` in a string, or a JSON integer (never a boolean or a float);
  an ``@type`` must be an XSD integer type.
- dateTimes: RFC 3339 §5.6 ``date-time`` with its offset (``Z`` or ``±HH:MM``; a time without one
  is ambiguous and refused); seconds may be left out (``2023-12-31T06:00Z``, as the DSP examples
  write it: ``:00``), fractions go to microseconds at most, leap seconds are refused. An ``@type``
  must be ``xsd:dateTime`` or ``xsd:dateTimeStamp``. Comparison is on the instant.
- terms (purposes, compute modes, participant ids, roles): non-empty strings compared exactly,
  case and all. Strings have no order: ``lt``/``gt`` on a term are refused.

Operators, ODRL 2.2 Vocabulary §"Operators" read for one value ``v`` of the left operand. For a
term, ``v matches x`` is equality, except for the assignee, which matches a participant id that is
its own and ``role:<r>`` when it holds role ``r`` (one participant with several identities); ``v
isA x`` is "v is an instance of x": for a purpose, ``v`` is ``x`` or a narrower term of ``x``
(``research/clinical`` is narrower than ``research``: terms are ``/``-paths), for an assignee it
holds role ``x``, for a compute mode it is ``eq``.

============  ====================================================================================
operator      holds when
============  ====================================================================================
eq            numbers, dateTimes: ``v == x``; terms: ``v`` matches ``x`` ("equals")
neq           not ``eq``
lt lteq       ``v < x``, ``v <= x`` (numbers and dateTimes only)
gt gteq       ``v > x``, ``v >= x`` (numbers and dateTimes only)
isA           ``v`` is an instance of ``x`` (above)
isAnyOf       ``v`` matches at least one element of the set ``X`` ("is any of")
isPartOf      the same for a single value: ``v`` is contained in ``X`` ("is contained by")
isNoneOf      ``v`` matches no element of ``X`` ("is none of")
isAllOf       ``v`` matches every element of ``X`` ("is all of"); useful for the assignee's roles
hasPart       the same for a single value: ``v`` contains every element of ``X`` ("contains")
============  ====================================================================================

A set ``X`` is a non-empty JSON array; the single-value operators take a single value (``eq`` on
an array is refused: write ``isAnyOf``). ``term-lteq`` (in the DSP schema, not in ODRL 2.2) is
not supported.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, TypeVar

from trustspace.registry.credentials import ROLES

__all__ = [
    "DELETE_RESULTS",
    "ODRL_PREFIX",
    "PROFILES",
    "ROLES",
    "ROLE_PREFIX",
    "SET_OPERATORS",
    "TERM_OPERATORS",
    "TS_PREFIX",
    "TS_PROFILE",
    "USE",
    "LeftOperand",
    "LiteralInvalid",
    "Logical",
    "Operator",
    "action_is_use",
    "left_operand",
    "logical",
    "operator",
    "ordered_holds",
    "parse_datetime",
    "parse_integer",
    "parse_term",
    "purpose_is_a",
    "term_holds",
    "valid_purpose",
]

ODRL_PREFIX: Final = "odrl:"
TS_PREFIX: Final = "ts:"
ROLE_PREFIX: Final = "role:"
USE: Final = "use"
DELETE_RESULTS: Final = "ts:deleteResults"  # the one duty action
# The ODRL profile of trustspace's ts: terms; a policy naming any other profile is refused,
# since a profile may change what any term means.
TS_PROFILE: Final = "https://trustspace.dev/ns/v1/odrl-profile"
PROFILES: Final = frozenset({TS_PROFILE})


class Operator(enum.StrEnum):
    EQ = "eq"
    NEQ = "neq"
    LT = "lt"
    LTEQ = "lteq"
    GT = "gt"
    GTEQ = "gteq"
    IS_A = "isA"
    HAS_PART = "hasPart"
    IS_PART_OF = "isPartOf"
    IS_ALL_OF = "isAllOf"
    IS_ANY_OF = "isAnyOf"
    IS_NONE_OF = "isNoneOf"


SET_OPERATORS: Final = frozenset({Operator.IS_ANY_OF, Operator.IS_PART_OF, Operator.IS_NONE_OF,
                                  Operator.IS_ALL_OF, Operator.HAS_PART})
TERM_OPERATORS: Final = SET_OPERATORS | {Operator.EQ, Operator.NEQ, Operator.IS_A}


class LeftOperand(enum.StrEnum):
    ASSIGNEE = "assignee"
    PURPOSE = "purpose"
    DATE_TIME = "dateTime"
    COUNT = "count"
    COMPUTE_MODE = "ts:computeMode"
    MIN_AGGREGATION = "ts:minAggregation"
    MAX_RESULT_BYTES = "ts:maxResultBytes"
    CODE_APPROVAL = "ts:codeApproval"
    DELETE_RESULTS_BY = "ts:deleteResultsBy"


class Logical(enum.StrEnum):
    """ODRL 2.2 Information Model §2.5.2, the logical constraint operands."""

    AND = "and"
    AND_SEQUENCE = "andSequence"
    OR = "or"
    XONE = "xone"


E = TypeVar("E", bound=enum.StrEnum)


def _term(word: object, terms: type[E]) -> E | None:
    """The member of ``terms`` spelled ``word``: ODRL words bare or ``odrl:``-prefixed, ours
    (already ``ts:``-prefixed in the enum) exactly. None if unknown."""
    if not isinstance(word, str):
        return None
    if word.startswith(ODRL_PREFIX):
        word = word[len(ODRL_PREFIX):]
        if word.startswith(TS_PREFIX):
            return None
    for member in terms:
        if member.value == word:
            return member
    return None


def left_operand(word: object) -> LeftOperand | None:
    return _term(word, LeftOperand)


def operator(word: object) -> Operator | None:
    return _term(word, Operator)


def logical(word: object) -> Logical | None:
    return _term(word, Logical)


def action_is_use(word: object) -> bool:
    return word in (USE, ODRL_PREFIX + USE)


# --- operator semantics (table in the module docstring) --------------------------------------

C = TypeVar("C", int, datetime)


def ordered_holds(op: Operator, left: C, right: C) -> bool:
    """eq neq lt lteq gt gteq on two numbers or two timezone-aware dateTimes."""
    if op is Operator.EQ:
        return left == right
    if op is Operator.NEQ:
        return left != right
    if op is Operator.LT:
        return left < right
    if op is Operator.LTEQ:
        return left <= right
    if op is Operator.GT:
        return left > right
    if op is Operator.GTEQ:
        return left >= right
    raise ValueError(f"{op} is not an ordering operator")  # compile_policy never builds this


def term_holds(op: Operator, matches: Callable[[str], bool], is_a: Callable[[str], bool],
               elements: Sequence[str]) -> bool:
    """A term operator for one value, given how it matches (and is an instance of) a term.
    ``elements`` holds the right operand: one term for eq/neq/isA, the set otherwise."""
    if op is Operator.EQ:
        return matches(elements[0])
    if op is Operator.NEQ:
        return not matches(elements[0])
    if op is Operator.IS_A:
        return is_a(elements[0])
    if op in (Operator.IS_ANY_OF, Operator.IS_PART_OF):
        return any(matches(x) for x in elements)
    if op is Operator.IS_NONE_OF:
        return not any(matches(x) for x in elements)
    if op in (Operator.IS_ALL_OF, Operator.HAS_PART):
        return all(matches(x) for x in elements)
    raise ValueError(f"{op} is not a term operator")  # compile_policy never builds this


_PURPOSE: Final = re.compile(r"[^/\s]+(?:/[^/\s]+)*")


def valid_purpose(term: object) -> bool:
    """A purpose term: non-empty ``/``-separated segments without whitespace."""
    return isinstance(term, str) and _PURPOSE.fullmatch(term) is not None


def purpose_is_a(value: str, term: str) -> bool:
    """``value`` is ``term`` or a narrower term (``research/clinical`` isA ``research``)."""
    return value == term or value.startswith(term + "/")


# --- literals --------------------------------------------------------------------------------

XSD: Final = "http://www.w3.org/2001/XMLSchema#"
_INTEGER_TYPES: Final = frozenset({"integer", "nonNegativeInteger", "positiveInteger", "long",
                                   "int", "unsignedLong", "unsignedInt"})
_DATETIME_TYPES: Final = frozenset({"dateTime", "dateTimeStamp"})
_STRING_TYPES: Final = frozenset({"string"})
_INTEGER: Final = re.compile(r"-?(0|[1-9][0-9]*)")
# RFC 3339 §5.6 date-time; seconds optional (see the module docstring); 'T' and 'Z' may be
# lower case (RFC 3339 §5.6, NOTE).
_DATETIME: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


class LiteralInvalid(ValueError):
    """A right operand is not a value of the domain its left operand needs."""


def _typed(value: object, types: frozenset[str], domain: str) -> object:
    """The bare JSON value of a literal: ``value`` itself, or an ``@value`` object whose
    ``@type`` (when given) is one of ``types`` (``xsd:`` compact or full IRIs)."""
    if not isinstance(value, Mapping):
        return value
    if set(value) - {"@value", "@type"} or "@value" not in value:
        raise LiteralInvalid(f"a typed literal is {{'@value': ..., '@type'?: ...}}, got {value!r}")
    if "@type" in value:
        kind = value["@type"]
        name = kind[4:] if isinstance(kind, str) and kind.startswith("xsd:") else \
            kind[len(XSD):] if isinstance(kind, str) and kind.startswith(XSD) else None
        if name not in types:
            raise LiteralInvalid(f"@type {kind!r} is not {domain}")
    return value["@value"]


def parse_integer(value: object) -> int:
    raw = _typed(value, _INTEGER_TYPES, "an integer type")
    if isinstance(raw, bool):
        raise LiteralInvalid(f"{raw!r} is a boolean, not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and _INTEGER.fullmatch(raw):
        return int(raw)
    raise LiteralInvalid(f"{raw!r} is not an integer")


def parse_datetime(value: object) -> datetime:
    raw = _typed(value, _DATETIME_TYPES, "xsd:dateTime")
    match = _DATETIME.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise LiteralInvalid(f"{raw!r} is not an RFC 3339 dateTime with a time zone offset "
                             "(YYYY-MM-DDTHH:MM[:SS[.ffffff]](Z|+HH:MM|-HH:MM))")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu is None and (int(off_h) > 23 or int(off_m) > 59):
        raise LiteralInvalid(f"{raw!r} has an offset out of range")
    offset = UTC if zulu else timezone(
        (1 if sign == "+" else -1) * timedelta(hours=int(off_h), minutes=int(off_m)))
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute),
                        int(second or 0), int((fraction or "0").ljust(6, "0")), tzinfo=offset)
    except ValueError as exc:
        raise LiteralInvalid(f"{raw!r} is not a valid dateTime: {exc}") from None


def parse_term(value: object) -> str:
    """A term: a non-empty string, an ``{"@id": ...}`` reference or an xsd:string literal."""
    if isinstance(value, Mapping) and set(value) == {"@id"}:
        value = value["@id"]
    raw = _typed(value, _STRING_TYPES, "xsd:string")
    if isinstance(raw, str) and raw:
        return raw
    raise LiteralInvalid(f"{raw!r} is not a non-empty string")
