"""Output release: what of a job's output may leave the provider's node.

The job's code is the consumer's and is not trusted; what it writes is checked here, by the node,
against the agreement's output rules before anything is sealed to the consumer
(docs/decisions/0005-output-release.md says why the checks are the ones below).

    rules = ReleaseRules.from_decision(decision, Level.GENERAL)   # policy + classification
    decision = check_release(results_json_bytes, out_dir, rules, input_rows)
    decision.released, decision.files   # the bytes that may leave, or
    decision.refusal                     # Refusal(reason, output, row, detail)

The job writes ``out/results.json`` (`RESULTS_FORMAT`) and files under ``out/files/``::

    {"format": "trustspace.results/1", "outputs": [
      {"name": "n", "kind": "aggregate", "value": 1234.5, "count": 57,
       "statistic": "sum", "column": "income"},          # statistic, column: optional
      {"name": "by_age", "kind": "table", "statistic": "count",
       "columns": ["sex", "age", "n"], "rows": [["F", 30, 12], ...], "counts": null},
      {"name": "model", "kind": "file", "path": "files/model.bin", "bytes": 4096,
       "sm3": "<hex>"}]}

A table's last column holds the statistic; the columns before it are the group keys. ``counts``
gives the records behind each row (for a ``count`` table the values are the counts, and
``counts``, if present, must equal them). Unknown fields, kinds and statistics are refused.

The checks, in order (the names are those listed in `ReleaseDecision.checks`):

``format``        results.json is the known format; every value of the declared type.
``kinds``         each output's kind is in `ReleaseRules.allowed_kinds`; its statistic in
                  `ReleaseRules.statistics`.
``files``         a file output is a regular file at ``files/<name>`` (no symlink, no
                  traversal) whose size and SM3 digest are the declared ones.
``min-count``     every released number stands for at least ``min_count`` records (SACRO's
                  threshold rule): an aggregate's ``count``, each table row's count. A table
                  without counts (other than a count table) is refused.
``counts``        (with the input rows) declared counts are checked against the data: a count
                  may not exceed the input rows that have the row's key values (keys in columns
                  of the same name); where it equals them the row is an *exact group* and its
                  value is recomputed (count, sum, mean, median, min, max) and must match.
``k-anonymity``   (with the input rows) the key values of a table row that occur in the input
                  (column by column, under any column name) must be shared by no input row or
                  by at least ``min_count``; for text files, the non-numeric cells of a line.
``dominance``     sum and mean cells, where the node knows the contributions (an exact group
                  over an input column): SACRO's n-k rule (the ``n`` largest contributions are
                  less than ``k`` of the total) and p-ratio rule (what is left after the two
                  largest is at least ``p`` of the largest). Negative contributions are refused.
``no-input-rows`` (with the input rows) no table row and no line of a text file contains every
                  value of an input row (at least two values), as a multiset of values; and no
                  row's key values (a line's non-numeric cells) single out one input row --
                  its quasi-identifier combination -- whatever ``min_count`` is.
``masking``       (when required) phone numbers, resident ID numbers and e-mail addresses in
                  every released string are masked (`mask_text`); values of the name columns
                  become ``***``; a file that is not UTF-8 text cannot be masked and is refused.
``dp``            (when ``dp_epsilon`` is set) Laplace noise on every released value and count.
``size``          the canonical release plus the files' bytes is at most ``max_bytes``.

What the node cannot check from the output alone, and says so in `ReleaseDecision.unverified`
rather than pretending: counts of groups whose keys are not input columns (derived keys such as
age bands, or renamed columns) are the code's word; dominance of a cell whose contributions it
cannot recompute (derived keys, a filtered group, a value column that is not an input column, an
aggregate without ``statistic``/``column``); anything inside a binary file (a model can memorise
rows). ``Dominance.refuse_unverifiable`` turns those dominance gaps into refusals.

Refusal details carry names, positions and counts, never a data value, since refusals end up in
receipts the consumer sees.
"""

from __future__ import annotations

import csv
import enum
import io
import math
import os
import random
import re
import stat
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, NoReturn, TypeGuard

from trustspace import strict_json
from trustspace.contracts import Decision
from trustspace.crypto import canonical_json, sm3
from trustspace.registry.classification import RULES, Level, mask_value
from trustspace.registry.datasource import ColumnType

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MIN_COUNT",
    "DEFAULT_STATISTICS",
    "RELEASE_FORMAT",
    "RESULTS_FORMAT",
    "Dominance",
    "OutputKind",
    "Reason",
    "Refusal",
    "ReleaseDecision",
    "ReleaseRefused",
    "ReleaseRules",
    "ReleasedFile",
    "Statistic",
    "check_release",
    "logs_for_consumer",
    "mask_text",
]

RESULTS_FORMAT: Final = "trustspace.results/1"  # what the job writes
RELEASE_FORMAT: Final = "trustspace.release/1"  # what leaves the node

# SACRO's ACRO default risk appetite (acro 1.0.2, acro/default.yaml): safe_threshold 10,
# safe_nk_n 2, safe_nk_k 0.90, safe_pratio_p 0.10.
DEFAULT_MIN_COUNT: Final = 10
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024  # ours: when the policy sets no ts:maxResultBytes
_MAX_NAME = 200
_MAX_OUTPUTS = 1000


class OutputKind(enum.StrEnum):
    AGGREGATE = "aggregate"
    TABLE = "table"
    FILE = "file"


class Statistic(enum.StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MEDIAN = "median"
    STD = "std"
    VAR = "var"
    MIN = "min"
    MAX = "max"
    MODE = "mode"


# Released unless the provider says otherwise. Minima, maxima and modes are one record's value
# (SACRO's statbarn "Endpoints" and "Mode"); the provider may allow them explicitly.
DEFAULT_STATISTICS: Final = frozenset({Statistic.COUNT, Statistic.SUM, Statistic.MEAN,
                                       Statistic.MEDIAN, Statistic.STD, Statistic.VAR})
_DOMINANCE_STATS: Final = frozenset({Statistic.SUM, Statistic.MEAN})  # SACRO: LinearAggregations
_RECOMPUTABLE: Final = frozenset({Statistic.COUNT, Statistic.SUM, Statistic.MEAN,
                                  Statistic.MEDIAN, Statistic.MIN, Statistic.MAX})
_DP_STATS: Final = frozenset({Statistic.COUNT, Statistic.SUM, Statistic.MEAN})


class Reason(enum.StrEnum):
    """Why a release is refused (machine-readable; `Refusal.detail` explains)."""

    FORMAT = "format"
    KIND_NOT_ALLOWED = "kind-not-allowed"
    STATISTIC_NOT_ALLOWED = "statistic-not-allowed"
    FILE_INVALID = "file-invalid"
    TOO_LARGE = "too-large"
    COUNTS_MISSING = "counts-missing"
    COUNT_BELOW_K = "count-below-k"
    COUNT_MISMATCH = "count-mismatch"
    VALUE_MISMATCH = "value-mismatch"
    KEYS_BELOW_K = "keys-below-k"
    INPUT_ROW = "input-row"
    DOMINANCE_NK = "dominance-nk"
    DOMINANCE_P_RATIO = "dominance-p-ratio"
    DOMINANCE_NEGATIVE = "dominance-negative"
    DOMINANCE_UNVERIFIABLE = "dominance-unverifiable"
    UNMASKABLE_FILE = "unmaskable-file"
    DP_NEEDS_COUNT = "dp-needs-count"
    DP_UNSUPPORTED = "dp-unsupported"
    DP_NO_BOUNDS = "dp-no-bounds"
    DP_BOUNDS_VIOLATED = "dp-bounds-violated"


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Dominance:
    """SACRO's dominance rules for magnitude (sum, mean) cells, with ACRO's defaults.

    n-k rule: a cell fails when its ``nk_n`` largest contributions make up ``nk_k`` or more of
    its total. p-ratio rule: a cell fails when what remains after its two largest contributions
    is less than ``p_ratio`` of the largest (the second largest contributor could estimate the
    largest to within p%). Dominance is undefined with negative contributions (ACRO asks for a
    human review; with no reviewer here, the cell is refused)."""

    nk_n: int = 2
    nk_k: float = 0.90
    p_ratio: float = 0.10
    refuse_unverifiable: bool = False

    def __post_init__(self) -> None:
        if self.nk_n < 1 or not 0 < self.nk_k <= 1 or not self.p_ratio >= 0:
            raise ValueError("dominance: nk_n >= 1, 0 < nk_k <= 1, p_ratio >= 0")

    def check(self, contributions: Sequence[float]) -> tuple[Reason, ...]:
        """The rules a cell with these contributions fails (empty: it passes)."""
        if any(c < 0 for c in contributions):
            return (Reason.DOMINANCE_NEGATIVE,)
        ordered = sorted(contributions, reverse=True)
        total = math.fsum(ordered)
        failed: list[Reason] = []
        if total > 0 and math.fsum(ordered[: self.nk_n]) / total >= self.nk_k:
            failed.append(Reason.DOMINANCE_NK)
        top1 = ordered[0] if ordered else 0.0
        if top1 > 0:
            rest = total - top1 - (ordered[1] if len(ordered) > 1 else 0.0)
            if rest / top1 < self.p_ratio:
                failed.append(Reason.DOMINANCE_P_RATIO)
        return tuple(failed)


DEFAULT_KINDS: Final = frozenset({OutputKind.AGGREGATE, OutputKind.TABLE})


@dataclass(frozen=True, kw_only=True)
class ReleaseRules:
    """What a release must satisfy. Build it with `from_decision` from the agreement's policy
    decision and the product's classification level, or directly in tests.

    ``dp_bounds`` maps a column name to the range ``(low, high)`` of its record values: the
    sensitivity of a noisy sum or mean over that column comes from it (see `check_release`)."""

    min_count: int = DEFAULT_MIN_COUNT
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_kinds: frozenset[OutputKind] = DEFAULT_KINDS
    statistics: frozenset[Statistic] = DEFAULT_STATISTICS
    dominance: Dominance = field(default_factory=Dominance)
    mask_identifiers: bool = False
    name_columns: frozenset[str] = frozenset()
    dp_epsilon: float | None = None
    dp_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError("min_count must be at least 1")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self.dp_epsilon is not None and not (math.isfinite(self.dp_epsilon)
                                                and self.dp_epsilon > 0):
            raise ValueError("dp_epsilon must be a positive finite number")
        for column, (low, high) in self.dp_bounds.items():
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"dp_bounds[{column!r}] must be finite with low <= high")

    @classmethod
    def from_decision(cls, decision: Decision, level: Level, *,
                      allowed_kinds: Iterable[OutputKind] = DEFAULT_KINDS,
                      statistics: Iterable[Statistic] = DEFAULT_STATISTICS,
                      dominance: Dominance | None = None,
                      mask_identifiers: bool = False,
                      name_columns: Iterable[str] = (),
                      dp_epsilon: float | None = None,
                      dp_bounds: Mapping[str, tuple[float, float]] | None = None
                      ) -> ReleaseRules:
        """``min_count`` is the policy's ``ts:minAggregation``, else `DEFAULT_MIN_COUNT`; above
        general data the policy may raise it but not lower it below the default. ``max_bytes``
        is ``ts:maxResultBytes``, else `DEFAULT_MAX_BYTES`. Identifiers are always masked for a
        level whose preview is masked (classification rule ``masked-preview``), and on request
        below it."""
        if not decision.permitted:
            raise ValueError("a denied decision releases nothing")
        level = Level(level)
        sensitive = RULES[level].preview_masked
        k = decision.min_aggregation or DEFAULT_MIN_COUNT
        if sensitive:
            k = max(k, DEFAULT_MIN_COUNT)
        return cls(min_count=k, max_bytes=decision.max_result_bytes or DEFAULT_MAX_BYTES,
                   allowed_kinds=frozenset(OutputKind(x) for x in allowed_kinds),
                   statistics=frozenset(Statistic(s) for s in statistics),
                   dominance=dominance or Dominance(),
                   mask_identifiers=mask_identifiers or sensitive,
                   name_columns=frozenset(name_columns), dp_epsilon=dp_epsilon,
                   dp_bounds=dict(dp_bounds or {}))


# --- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """``reason``, the offending ``output`` (None for the release as a whole) and ``row`` (an
    index into the table's ``rows`` or the file's lines, from 0), and a ``detail`` for people."""

    reason: Reason
    output: str | None
    detail: str
    row: int | None = None

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"reason": str(self.reason), "output": self.output, "row": self.row,
                "detail": self.detail}


class ReleaseRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        super().__init__(str(refusal))


@dataclass(frozen=True)
class ReleasedFile:
    """A file output as released (masked if required): the release names it by digest."""

    name: str
    content: bytes
    sm3: str


@dataclass(frozen=True)
class ReleaseDecision:
    """Released: ``released`` (canonical JSON, `RELEASE_FORMAT`) and ``files``; ``checks`` the
    checks that ran and passed, ``unverified`` what could not be checked. Refused: ``refusal``."""

    released: bytes | None
    files: tuple[ReleasedFile, ...]
    checks: tuple[str, ...]
    unverified: tuple[str, ...]
    refusal: Refusal | None

    @property
    def permitted(self) -> bool:
        return self.refusal is None

    def require(self) -> bytes:
        """The released bytes; raises `ReleaseRefused` for a refusal."""
        if self.refusal is not None or self.released is None:
            raise ReleaseRefused(self.refusal or Refusal(Reason.FORMAT, None, "nothing released"))
        return self.released

    def to_json(self) -> dict[str, Any]:
        """A plain JSON object for receipts and logs (no released content)."""
        return {"decision": "release" if self.permitted else "refuse",
                "refusal": self.refusal.to_json() if self.refusal else None,
                "checks": list(self.checks), "unverified": list(self.unverified),
                "bytes": (len(self.released) if self.released is not None else None),
                "files": [{"name": f.name, "sm3": f.sm3, "bytes": len(f.content)}
                          for f in self.files]}


class _Refuse(Exception):
    def __init__(self, reason: Reason, output: str | None, detail: str,
                 row: int | None = None) -> None:
        self.refusal = Refusal(reason, output, detail, row)
        super().__init__(str(self.refusal))


def _refuse(reason: Reason, output: str | None, detail: str, row: int | None = None) -> NoReturn:
    raise _Refuse(reason, output, detail, row)


# --- masking (数据脱敏) ------------------------------------------------------------------------

# Resident identity number, GB 11643-1999: 6-digit address code, birth date YYYYMMDD, 3-digit
# sequence, check character (ISO 7064 MOD 11-2; 0-9 or X). Recognised by its structure and a
# real birth date; the check character is not required, so a mistyped number is masked too.
# The 15-digit first-generation form (YYMMDD, no check character) likewise.
_DATE8 = r"(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_DATE6 = r"\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
_ID18 = re.compile(rf"(?<![0-9A-Za-z])([1-9]\d{{5}})({_DATE8})(\d{{3}})([0-9Xx])(?![0-9A-Za-z])")
_ID15 = re.compile(rf"(?<![0-9A-Za-z])([1-9]\d{{5}})({_DATE6})(\d{{3}})(?![0-9A-Za-z])")
# Mainland mobile numbers: 1[3-9]x, 11 digits, optionally +86/0086/86 and separators 3-4-4.
_PHONE = re.compile(r"(?<!\d)((?:\+?86|0086)[ -]?)?(1[3-9]\d)([ -]?)(\d{4})([ -]?)(\d{4})(?!\d)")
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9])[A-Za-z0-9._%+-]*"
                    r"(@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")


def _real_date(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def _mask_id18(m: re.Match[str]) -> str:
    if not _real_date(m.group(2)):
        return m.group(0)
    whole = m.group(0)
    return whole[0] + "*" * 16 + whole[-1]


def _mask_id15(m: re.Match[str]) -> str:
    if not _real_date("19" + m.group(2)):
        return m.group(0)
    whole = m.group(0)
    return whole[0] + "*" * 13 + whole[-1]


def mask_text(text: str) -> str:
    """``text`` with identifiers masked: e-mail ``zhang.san@example.com`` -> ``z***@example.com``;
    resident ID numbers keep their first and last character (``1****************X``); mobile
    numbers keep the carrier prefix and the last four digits (``138****5678``)."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***{m.group(2)}", text)
    text = _ID18.sub(_mask_id18, text)
    text = _ID15.sub(_mask_id15, text)
    return _PHONE.sub(lambda m: (m.group(1) or "") + m.group(2) + m.group(3) + "****"
                      + m.group(5) + m.group(6), text)


# --- logs ------------------------------------------------------------------------------------


def logs_for_consumer(stdout: bytes, stderr: bytes, allowed: bool, *,
                      max_bytes: int = 64 * 1024, mask_identifiers: bool = True) -> bytes | None:
    """What of the job's stdout/stderr the consumer may see: nothing (None) unless the policy
    allows it; then canonical JSON ``{"stdout", "stderr"}``, each decoded as UTF-8 (invalid bytes
    replaced), cut to ``max_bytes`` and masked (`mask_text`) unless told otherwise. The logs are
    not checked for input rows: allowing them is the provider's decision to trust the code."""
    if not allowed:
        return None

    def clean(data: bytes) -> str:
        text = data[:max_bytes].decode("utf-8", errors="replace")
        if len(data) > max_bytes:
            text += f"\n[... {len(data) - max_bytes} bytes cut]"
        return mask_text(text) if mask_identifiers else text

    return canonical_json({"stdout": clean(stdout), "stderr": clean(stderr)})


# --- the results format ----------------------------------------------------------------------

_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_FILE_PATH = re.compile(r"files/([A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class _Aggregate:
    name: str
    value: float | int
    count: int | None
    statistic: Statistic | None
    column: str | None


@dataclass(frozen=True)
class _Table:
    name: str
    statistic: Statistic
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    counts: tuple[int, ...] | None

    def count(self, i: int) -> int | None:
        if self.statistic is Statistic.COUNT:
            return int(self.rows[i][-1])
        return self.counts[i] if self.counts is not None else None


@dataclass(frozen=True)
class _File:
    name: str
    path: str
    size: int
    sm3: str


_Output = _Aggregate | _Table | _File



def _is_number(v: object) -> TypeGuard[int | float]:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and math.isfinite(v))


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _fields(obj: Mapping[str, Any], name: str, required: set[str], optional: set[str]) -> None:
    missing = required - obj.keys()
    extra = obj.keys() - required - optional
    if missing or extra:
        _refuse(Reason.FORMAT, name, f"output fields: missing {sorted(missing)}, "
                                     f"unknown {sorted(extra)}")


def _statistic(value: object, name: str) -> Statistic:
    try:
        return Statistic(str(value))
    except ValueError:
        _refuse(Reason.FORMAT, name, "unknown statistic (known: "
                                     f"{', '.join(s.value for s in Statistic)})")


def _parse_output(obj: object, index: int) -> _Output:
    if not isinstance(obj, dict):
        _refuse(Reason.FORMAT, None, f"outputs[{index}] is not an object")
    name = obj.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME or _NAME_CHARS.search(name):
        _refuse(Reason.FORMAT, None, f"outputs[{index}]: name must be 1..{_MAX_NAME} "
                                     "characters without control characters")
    kind = obj.get("kind")
    if kind == OutputKind.AGGREGATE:
        _fields(obj, name, {"name", "kind", "value", "count"}, {"statistic", "column"})
        value, count = obj["value"], obj["count"]
        if not _is_number(value) or not (count is None or _is_count(count)):
            _refuse(Reason.FORMAT, name, "aggregate value must be a finite number and count a "
                                         "non-negative integer or null")
        stat = obj.get("statistic")
        column = obj.get("column")
        if column is not None and not isinstance(column, str):
            _refuse(Reason.FORMAT, name, "aggregate column must be a string")
        return _Aggregate(name, value, count, None if stat is None else _statistic(stat, name),
                          column)
    if kind == OutputKind.TABLE:
        _fields(obj, name, {"name", "kind", "statistic", "columns", "rows"}, {"counts"})
        stat = _statistic(obj["statistic"], name)
        columns, rows, counts = obj["columns"], obj["rows"], obj.get("counts")
        if (not isinstance(columns, list) or not columns
                or not all(isinstance(c, str) and 0 < len(c) <= _MAX_NAME for c in columns)
                or len(set(columns)) != len(columns)):
            _refuse(Reason.FORMAT, name, "columns must be distinct non-empty strings")
        if not isinstance(rows, list):
            _refuse(Reason.FORMAT, name, "rows must be an array")
        parsed: list[tuple[Any, ...]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                _refuse(Reason.FORMAT, name, f"row {i} must have {len(columns)} values", i)
            if not all(v is None or isinstance(v, str | bool) or _is_number(v) for v in row[:-1]):
                _refuse(Reason.FORMAT, name, f"row {i}: keys must be strings, numbers, "
                                             "booleans or null", i)
            ok = _is_count(row[-1]) if stat is Statistic.COUNT else _is_number(row[-1])
            if not ok:
                _refuse(Reason.FORMAT, name, f"row {i}: the {stat} must be a "
                        + ("non-negative integer" if stat is Statistic.COUNT
                           else "finite number"), i)
            parsed.append(tuple(row))
        if counts is not None and (not isinstance(counts, list) or len(counts) != len(rows)
                                   or not all(_is_count(c) for c in counts)):
            _refuse(Reason.FORMAT, name, "counts must be null or one non-negative integer a row")
        return _Table(name, stat, tuple(columns), tuple(parsed),
                      None if counts is None else tuple(counts))
    if kind == OutputKind.FILE:
        _fields(obj, name, {"name", "kind", "path", "bytes", "sm3"}, set())
        path, size, digest = obj["path"], obj["bytes"], obj["sm3"]
        if not isinstance(path, str) or not _FILE_PATH.fullmatch(path):
            _refuse(Reason.FILE_INVALID, name, "path must be files/<name> (letters, digits, "
                                               "'.', '_', '-'; not starting with '.')")
        if not _is_count(size) or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            _refuse(Reason.FORMAT, name, "bytes must be a non-negative integer and sm3 64 "
                                         "lowercase hex digits")
        return _File(name, path, size, digest)
    _refuse(Reason.FORMAT, name, "unknown kind (known: aggregate, table, file)")


def _parse(results: Mapping[str, Any] | bytes, limit: int) -> list[_Output]:
    if isinstance(results, bytes | bytearray):
        if len(results) > limit:
            _refuse(Reason.TOO_LARGE, None, f"results.json is {len(results)} bytes "
                                            f"(at most {limit} are read)")
        try:
            doc = strict_json.loads(results)
        except strict_json.JSONRefused as exc:
            _refuse(Reason.FORMAT, None, f"results.json is not JSON: {exc}")
    else:
        doc = results
    if not isinstance(doc, Mapping) or doc.get("format") != RESULTS_FORMAT:
        _refuse(Reason.FORMAT, None, f"results must be an object of format {RESULTS_FORMAT}")
    if set(doc) != {"format", "outputs"}:
        _refuse(Reason.FORMAT, None, "results fields must be exactly format, outputs")
    outputs = doc["outputs"]
    if not isinstance(outputs, list) or len(outputs) > _MAX_OUTPUTS:
        _refuse(Reason.FORMAT, None, f"outputs must be an array of at most {_MAX_OUTPUTS}")
    parsed = [_parse_output(o, i) for i, o in enumerate(outputs)]
    names = Counter(o.name for o in parsed)
    twice = sorted(n for n, c in names.items() if c > 1)
    if twice:
        _refuse(Reason.FORMAT, twice[0], "output names must be unique")
    return parsed


# --- the input rows --------------------------------------------------------------------------

# A value as compared between output and input: numbers by value (35 == 35.0 == "35"), strings
# stripped, so a CSV cell matches the typed input value it came from.
_Norm = tuple[str, Any]
_NULL: Final[_Norm] = ("null", None)
_NUMBER_START = frozenset("0123456789+-.")
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_NUMERIC_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _number(v: float | int) -> _Norm:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        return ("n", int(v))
    return ("n", v)


def _norm(v: Any) -> _Norm:
    t = type(v)
    if t is str:
        s = v.strip()
        if s[:1] in _NUMBER_START and _NUMERIC_TEXT.fullmatch(s):
            f = float(s)
            if math.isfinite(f):
                return _number(int(s) if _INTEGER_TEXT.fullmatch(s) else f)
        return ("s", s)
    if v is None:
        return _NULL
    if t is bool:
        return ("b", v)
    if t is int or t is float:
        return _number(v) if math.isfinite(v) else ("s", repr(v))
    if isinstance(v, bool):
        return ("b", bool(v))
    if isinstance(v, int | float):
        return _norm(int(v) if isinstance(v, int) else float(v))
    if isinstance(v, str):
        return _norm(str(v))
    if isinstance(v, datetime | date):
        return ("s", v.isoformat())
    return _norm(str(v))  # e.g. Decimal, numpy scalars: by their text


class _Input:
    """The input rows, indexed for the checks: per column, value -> row ids (a set, made when
    first needed); each row filed under its rarest value (rule ``input-row`` needs every value
    of the row, so the rarest one is a cheap first filter)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.n = len(rows)
        self.columns: list[str] = []
        self.raw: list[Mapping[str, Any]] = list(rows)
        self.rows: list[dict[str, _Norm]] = []
        self.index: dict[str, dict[_Norm, list[int]]] = {}
        self._sets: dict[tuple[str, _Norm], set[int]] = {}
        kinds: dict[str, set[bool]] = {}
        frequency: Counter[_Norm] = Counter()
        for i, row in enumerate(rows):
            normed = {column: _norm(value) for column, value in row.items()}
            self.rows.append(normed)
            for column, v in normed.items():
                index = self.index.get(column)
                if index is None:
                    self.columns.append(column)
                    index = self.index[column] = {}
                    kinds[column] = set()
                postings = index.get(v)
                if postings is None:
                    index[v] = [i]
                else:
                    postings.append(i)
        for column, index in self.index.items():
            for v, postings in index.items():
                if v != _NULL:
                    frequency[v] += len(postings)
                    kinds[column].add(_is_number(self.raw[postings[0]].get(column)))
        self.numeric = {c for c, k in kinds.items() if k == {True}}
        self.anchored: dict[_Norm, list[int]] = {}
        for i, normed in enumerate(self.rows):
            present = [v for v in normed.values() if v != _NULL]
            if len(present) >= 2:
                anchor = min(present, key=lambda v: (frequency[v], v))
                self.anchored.setdefault(anchor, []).append(i)
        self.all_values: set[_Norm] = set(frequency)

    def reproduced(self, cells: Counter[_Norm]) -> bool:
        """Whether ``cells`` contains every non-null value of some input row (at least two)."""
        for v in cells:
            for i in self.anchored.get(v, ()):
                bag = Counter(x for x in self.rows[i].values() if x != _NULL)
                if all(cells[x] >= c for x, c in bag.items()):
                    return True
        return False

    def _set(self, column: str, v: _Norm) -> set[int]:
        found = self._sets.get((column, v))
        if found is None:
            found = self._sets[(column, v)] = set(self.index.get(column, {}).get(v, ()))
        return found

    def matching(self, keys: Sequence[tuple[Sequence[str], _Norm]]) -> list[int]:
        """Ids of the rows that, for every (columns, value), have the value in one of the
        columns. No keys: every row. Starts from the key with the fewest rows and looks the
        others up for those rows only."""
        if not keys:
            return list(range(self.n))
        sets = []
        for columns, v in keys:
            found = [self._set(c, v) for c in columns]
            sets.append(found[0] if len(found) == 1 else set().union(*found))
        sets.sort(key=len)
        first, rest = sets[0], sets[1:]
        return sorted(i for i in first if all(i in s for s in rest))

    def column_values(self, column: str, ids: Iterable[int]) -> list[float]:
        values: list[float] = []
        for i in ids:
            v = self.raw[i].get(column)
            if _is_number(v):
                values.append(float(v))
        return values


# --- the checks ------------------------------------------------------------------------------


def _recompute(stat: Statistic, values: Sequence[float]) -> float | None:
    if not values:
        return None
    if stat is Statistic.SUM:
        return math.fsum(values)
    if stat is Statistic.MEAN:
        return math.fsum(values) / len(values)
    if stat is Statistic.MEDIAN:
        return float(statistics.median(values))
    if stat is Statistic.MIN:
        return min(values)
    if stat is Statistic.MAX:
        return max(values)
    return None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@dataclass
class _RowFacts:
    """What the node established about one table row."""

    # an exact group (every key an input column, the count that of the input rows with the
    # keys) whose value the node recomputed and found equal
    verified: bool = False
    contributions: list[float] | None = None


class _Checker:
    def __init__(self, rules: ReleaseRules, data: _Input | None, out_dir: Path,
                 rng: random.Random) -> None:
        self.rules = rules
        self.data = data
        self.out_dir = out_dir
        self.rng = rng
        self.checks: list[str] = []
        self.unverified: list[str] = []
        self.contents: dict[str, bytes] = {}

    @property
    def k(self) -> int:
        return self.rules.min_count

    # kinds, statistics, dp prerequisites

    def kinds(self, outputs: Sequence[_Output]) -> None:
        for o in outputs:
            kind = (OutputKind.AGGREGATE if isinstance(o, _Aggregate) else
                    OutputKind.TABLE if isinstance(o, _Table) else OutputKind.FILE)
            if kind not in self.rules.allowed_kinds:
                _refuse(Reason.KIND_NOT_ALLOWED, o.name, f"{kind} outputs are not released "
                        f"(allowed: {', '.join(sorted(self.rules.allowed_kinds))})")
            stat = o.statistic if isinstance(o, _Aggregate | _Table) else None
            if stat is not None and stat not in self.rules.statistics:
                _refuse(Reason.STATISTIC_NOT_ALLOWED, o.name, f"statistic {stat} is not "
                        f"released (allowed: {', '.join(sorted(self.rules.statistics))})")
        self.checks.append("kinds")

    def dp_prerequisites(self, outputs: Sequence[_Output]) -> None:
        for o in outputs:
            if isinstance(o, _File):
                _refuse(Reason.DP_UNSUPPORTED, o.name, "no noise can be added to a file")
            if o.statistic not in _DP_STATS:
                _refuse(Reason.DP_UNSUPPORTED, o.name, "a differentially private release "
                        "needs a count, sum or mean (an aggregate must name its statistic)")
            if isinstance(o, _Aggregate) and o.count is None:
                _refuse(Reason.DP_NEEDS_COUNT, o.name, "a differentially private aggregate "
                                                       "needs its count")
            if isinstance(o, _Table) and o.statistic is not Statistic.COUNT and o.counts is None:
                _refuse(Reason.DP_NEEDS_COUNT, o.name, "a differentially private table needs "
                                                       "its counts")
            if o.statistic in _DOMINANCE_STATS:
                column = self._dp_column(o)
                if column not in self.rules.dp_bounds:
                    _refuse(Reason.DP_NO_BOUNDS, o.name, "no value bounds for the column of "
                            "this output: its sensitivity is unknown")
                low, high = self.rules.dp_bounds[column]
                if self.data is not None and column in self.data.columns:
                    every = self.data.column_values(column, range(self.data.n))
                    if any(not low <= v <= high for v in every):
                        _refuse(Reason.DP_BOUNDS_VIOLATED, o.name, "input values of the "
                                "column lie outside its declared bounds")
            if isinstance(o, _Table):
                keys = Counter(tuple(_norm(v) for v in row[:-1]) for row in o.rows)
                if any(c > 1 for c in keys.values()):
                    _refuse(Reason.DP_UNSUPPORTED, o.name, "rows repeat the same keys: noise "
                            "per row needs disjoint groups")

    @staticmethod
    def _dp_column(o: _Aggregate | _Table) -> str:
        if isinstance(o, _Table):
            return o.columns[-1]
        return o.column or o.name

    # files

    def files(self, outputs: Sequence[_Output]) -> None:
        files = [o for o in outputs if isinstance(o, _File)]
        if not files:
            return
        for f in files:
            self.contents[f.name] = self._read(f)
        self.checks.append("files")

    def _read(self, f: _File) -> bytes:
        if f.size > self.rules.max_bytes:
            _refuse(Reason.TOO_LARGE, f.name, f"file of {f.size} bytes (at most "
                                              f"{self.rules.max_bytes})")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        directory = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            dir_fd = os.open(self.out_dir / "files", directory)
        except OSError:
            _refuse(Reason.FILE_INVALID, f.name, "out/files is not a directory")
        try:
            try:
                fd = os.open(f.path.removeprefix("files/"), flags | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError:
                _refuse(Reason.FILE_INVALID, f.name, "the file is missing or a symbolic link")
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                _refuse(Reason.FILE_INVALID, f.name, "not a regular file")
            with os.fdopen(fd, "rb") as stream:
                if info.st_size != f.size:
                    _refuse(Reason.FILE_INVALID, f.name, f"is {info.st_size} bytes, declared "
                                                         f"{f.size}")
                content = stream.read(f.size + 1)
        finally:
            os.close(dir_fd)
        if len(content) != f.size or sm3(content).hex() != f.sm3:
            _refuse(Reason.FILE_INVALID, f.name, "content does not match its declared size "
                                                 "and SM3 digest")
        return content

    # min-count

    def min_count(self, outputs: Sequence[_Output]) -> None:
        for o in outputs:
            if isinstance(o, _Aggregate):
                if o.count is None:
                    _refuse(Reason.COUNTS_MISSING, o.name, "aggregate without a count")
                if o.statistic is Statistic.COUNT and o.value != o.count:
                    _refuse(Reason.COUNT_MISMATCH, o.name, "a count aggregate's value differs "
                                                           "from its count")
                if o.count < self.k:
                    _refuse(Reason.COUNT_BELOW_K, o.name, f"aggregate {o.name} has {o.count} "
                            f"records (< {self.k})")
            elif isinstance(o, _Table):
                if o.statistic is Statistic.COUNT:
                    if o.counts is not None:
                        for i, row in enumerate(o.rows):
                            if o.counts[i] != row[-1]:
                                _refuse(Reason.COUNT_MISMATCH, o.name, f"table {o.name} row {i}:"
                                        " counts differ from the count values", i)
                elif o.counts is None:
                    _refuse(Reason.COUNTS_MISSING, o.name, f"table {o.name} of {o.statistic} "
                            "has no counts: the records behind each row are unknown")
                for i in range(len(o.rows)):
                    n = o.count(i)
                    assert n is not None  # noqa: S101 -- ensured just above
                    if n < self.k:
                        _refuse(Reason.COUNT_BELOW_K, o.name, f"table {o.name} row {i} has "
                                f"{n} records (< {self.k})", i)
        self.checks.append("min-count")

    # against the input rows

    def against_input(self, outputs: Sequence[_Output]) -> None:
        data = self.data
        if data is None:
            self.unverified.append("counts, k-anonymity, dominance, no-input-rows: "
                                   "the input rows were not given")
            return
        for o in outputs:
            if isinstance(o, _Aggregate):
                self._aggregate(o, data)
            elif isinstance(o, _Table):
                self._table(o, data)
            else:
                self._file(o, data)
        self.checks.extend(["counts", "k-anonymity", "dominance", "no-input-rows"])

    def _aggregate(self, o: _Aggregate, data: _Input) -> None:
        assert o.count is not None  # noqa: S101 -- min_count ran first
        if o.count > data.n:
            _refuse(Reason.COUNT_MISMATCH, o.name, f"aggregate {o.name} declares {o.count} "
                    f"records; the input has {data.n}")
        stat, column = o.statistic, o.column
        if stat is None or column is None or column not in data.numeric:
            if stat is None or stat in _DOMINANCE_STATS:
                self._unverifiable(o.name, "dominance", "an aggregate without statistic and "
                                   "input column: its contributions are unknown")
            return
        values = data.column_values(column, range(data.n))
        if o.count not in (data.n, len(values)):
            if stat in _DOMINANCE_STATS:
                self._unverifiable(o.name, "dominance", "aggregate over a subset of the rows")
            return
        expected = _recompute(stat, values)
        if stat is not Statistic.COUNT and expected is not None and not _close(expected,
                                                                               o.value):
            _refuse(Reason.VALUE_MISMATCH, o.name, f"aggregate {o.name}: the {stat} of "
                    f"{column} over all rows is not the value declared")
        if stat in _DOMINANCE_STATS:
            self._dominance(o.name, values, None)

    def _table(self, t: _Table, data: _Input) -> None:
        keys = t.columns[:-1]
        mapping: list[tuple[list[str], bool] | None] = []
        for j, column in enumerate(keys):
            present = {_norm(row[j]) for row in t.rows if row[j] is not None}
            if column in data.index and present <= data.index[column].keys():
                mapping.append(([column], True))
                continue
            candidates = [c for c in data.columns if present and present <= data.index[c].keys()]
            mapping.append((candidates, False) if candidates else None)
        all_named = all(m is not None and m[1] for m in mapping)
        value_column = t.columns[-1]
        undominated: list[int] = []
        for i, row in enumerate(t.rows):
            facts = self._row(t, i, row, mapping, all_named, value_column, data)
            if t.statistic in _DOMINANCE_STATS:
                if facts.contributions is None:
                    undominated.append(i)
                else:
                    self._dominance(t.name, facts.contributions, i)
            # A verified row is an honest aggregate of at least k records: nothing to look for.
            cells = Counter(_norm(v) for v in row if v is not None)
            if not facts.verified and data.reproduced(cells):
                _refuse(Reason.INPUT_ROW, t.name, f"table {t.name} row {i} contains every "
                        "value of an input row", i)
        if undominated:
            why = ("its keys are not all input columns" if not all_named else
                   f"its value column {value_column!r} is not a numeric input column"
                   if value_column not in data.numeric else "its groups are filtered")
            self._unverifiable(t.name, "dominance", f"{len(undominated)} of {len(t.rows)} "
                               f"rows: {why}")

    def _row(self, t: _Table, i: int, row: tuple[Any, ...],
             mapping: Sequence[tuple[list[str], bool] | None], all_named: bool,
             value_column: str, data: _Input) -> _RowFacts:
        facts = _RowFacts()
        declared = t.count(i)
        assert declared is not None  # noqa: S101 -- min_count ran first
        named = [(m[0], _norm(row[j])) for j, m in enumerate(mapping) if m and m[1]]
        by_value = [(m[0], _norm(row[j])) for j, m in enumerate(mapping)
                    if m and not m[1] and row[j] is not None]
        group = data.matching(named) if named or all_named else None
        if group is not None and declared > len(group):
            _refuse(Reason.COUNT_MISMATCH, t.name, f"table {t.name} row {i} declares "
                    f"{declared} records; {len(group)} input rows have its key values", i)
        if named or by_value:
            shared = (len(group) if group is not None and not by_value
                      else len(data.matching(named + by_value)))
            if shared == 1:
                _refuse(Reason.INPUT_ROW, t.name, f"table {t.name} row {i}: its key values "
                        "single out one input row", i)
            if 0 < shared < self.k:
                _refuse(Reason.KEYS_BELOW_K, t.name, f"table {t.name} row {i}: its key values "
                        f"are shared by {shared} input rows (< {self.k})", i)
        if not all_named or group is None:
            return facts
        values = (data.column_values(value_column, group) if value_column in data.numeric
                  else None)
        if declared != len(group) and (values is None or declared != len(values)):
            return facts  # a filtered group: the node does not know which rows
        if t.statistic is Statistic.COUNT:
            facts.verified = True
            return facts
        if values is None:
            return facts
        expected = _recompute(t.statistic, values)
        if expected is not None and t.statistic in _RECOMPUTABLE:
            if not _close(expected, row[-1]):
                _refuse(Reason.VALUE_MISMATCH, t.name, f"table {t.name} row {i}: the "
                        f"{t.statistic} of {value_column} over its group is not the value "
                        "declared", i)
            facts.verified = True
        facts.contributions = values
        return facts

    def _dominance(self, name: str, contributions: Sequence[float], row: int | None) -> None:
        failed = self.rules.dominance.check(contributions)
        if not failed:
            return
        where = f"table {name} row {row}" if row is not None else f"aggregate {name}"
        d = self.rules.dominance
        detail = {
            Reason.DOMINANCE_NK: f"the {d.nk_n} largest contributions are >= {d.nk_k:.0%} of "
                                 "the total",
            Reason.DOMINANCE_P_RATIO: f"after the two largest contributions less than "
                                      f"{d.p_ratio:.0%} of the largest remains",
            Reason.DOMINANCE_NEGATIVE: "negative contributions: dominance is undefined",
        }[failed[0]]
        _refuse(failed[0], name, f"{where}: {detail}", row)

    def _unverifiable(self, name: str, check: str, why: str) -> None:
        if check == "dominance" and self.rules.dominance.refuse_unverifiable:
            _refuse(Reason.DOMINANCE_UNVERIFIABLE, name, f"{name}: {why}")
        self.unverified.append(f"{check}: {name}: {why}")

    def _file(self, f: _File, data: _Input) -> None:
        try:
            text = self.contents[f.name].decode("utf-8")
        except UnicodeDecodeError:
            self.unverified.append(f"no-input-rows: {f.name}: a binary file")
            return
        lines = text.splitlines()
        first = next((line for line in lines if line.strip()), "")
        delimiter = max(",\t;|", key=first.count)
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        for i, cells in enumerate(reader):
            normed = [_norm(c) for c in cells if c.strip()]
            if data.reproduced(Counter(normed)):
                _refuse(Reason.INPUT_ROW, f.name, f"file {f.name} line {i} contains every value "
                        "of an input row", i)
            words = [v for v in normed if v[0] == "s" and v in data.all_values]
            if words:
                shared = len(data.matching([(data.columns, v) for v in set(words)]))
                if shared == 1:
                    _refuse(Reason.INPUT_ROW, f.name, f"file {f.name} line {i}: its values "
                            "single out one input row", i)
                if 0 < shared < self.k:
                    _refuse(Reason.KEYS_BELOW_K, f.name, f"file {f.name} line {i}: its values "
                            f"are shared by {shared} input rows (< {self.k})", i)

    # masking, noise, the release

    def masked_file(self, f: _File) -> bytes:
        content = self.contents[f.name]
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            _refuse(Reason.UNMASKABLE_FILE, f.name, "identifiers must be masked and this file "
                                                    "is not UTF-8 text")
        return mask_text(text).encode("utf-8")

    def _mask_key(self, column: str, v: Any) -> Any:
        if v is None:
            return None
        if column in self.rules.name_columns:
            return mask_value(ColumnType.STRING, str(v))
        if isinstance(v, str):
            return mask_text(v)
        if isinstance(v, int) and not isinstance(v, bool):
            masked = mask_text(str(v))
            return masked if masked != str(v) else v
        return v


def _laplace(rng: random.Random, scale: float) -> float:
    """Laplace(0, scale): the difference of two exponentials of mean ``scale``."""
    return scale * (rng.expovariate(1.0) - rng.expovariate(1.0))


def _snap(x: float, scale: float) -> float:
    """Round a noisy value to a power-of-two grid about scale/1024, dropping the low-order bits
    of the floating-point noise (Mironov 2012 shows they can leak; this is a mitigation, not the
    snapping mechanism's proof)."""
    step = 2.0 ** (math.floor(math.log2(scale)) - 10)
    return round(x / step) * step


class _Noise:
    """Laplace mechanism (Dwork et al. 2006). Neighbouring datasets differ by one record added
    or removed. The budget ``epsilon`` covers the whole release: it is split equally among its
    outputs (sequential composition); a table's rows are disjoint groups (distinct keys), so
    each row uses the table's whole share (parallel composition). Per output with share e:

    - count: sensitivity 1; value + Lap(1/e), rounded, at least 0.
    - sum over a column with values in [L, U]: sensitivity B = max(|L|, |U|); half the share
      on the sum (Lap(2B/e)) and half on its count (Lap(2/e)).
    - mean: released as the noisy sum over the noisy count (each with half the share, as for
      a sum; sum = mean x count), clamped to [L, U] -- post-processing, no further cost.
    """

    def __init__(self, rules: ReleaseRules, outputs: int, rng: random.Random) -> None:
        assert rules.dp_epsilon is not None  # noqa: S101
        self.rules = rules
        self.share = rules.dp_epsilon / max(outputs, 1)
        self.rng = rng

    def count(self, n: int) -> tuple[int, float]:
        scale = 1.0 / self.share
        return max(0, round(n + _laplace(self.rng, scale))), scale

    def magnitude(self, stat: Statistic, value: float, n: int, column: str
                  ) -> tuple[float, int, dict[str, float]]:
        low, high = self.rules.dp_bounds[column]
        bound = max(abs(low), abs(high), 1e-12)
        value_scale, count_scale = 2.0 * bound / self.share, 2.0 / self.share
        total = value * n if stat is Statistic.MEAN else value
        noisy_total = total + _laplace(self.rng, value_scale)
        noisy_n = n + _laplace(self.rng, count_scale)
        if stat is Statistic.MEAN:
            released = min(max(noisy_total / max(noisy_n, 1.0), low), high)
        else:
            released = noisy_total
        return (_snap(released, value_scale), max(0, round(noisy_n)),
                {"epsilon": self.share, "sumScale": value_scale, "countScale": count_scale})


def _build(checker: _Checker, outputs: Sequence[_Output]) -> tuple[list[dict[str, Any]],
                                                                  list[ReleasedFile]]:
    rules = checker.rules
    noise = (_Noise(rules, len(outputs), checker.rng) if rules.dp_epsilon is not None else None)
    mask = rules.mask_identifiers
    text: Callable[[str], str] = mask_text if mask else str
    released: list[dict[str, Any]] = []
    files: list[ReleasedFile] = []
    for o in outputs:
        if isinstance(o, _File):
            content = checker.masked_file(o) if mask else checker.contents[o.name]
            digest = sm3(content).hex()
            files.append(ReleasedFile(text(o.name), content, digest))
            released.append({"name": text(o.name), "kind": "file", "path": text(o.path),
                             "bytes": len(content), "sm3": digest})
        elif isinstance(o, _Aggregate):
            item: dict[str, Any] = {"name": text(o.name), "kind": "aggregate",
                                    "value": o.value, "count": o.count}
            if o.statistic is not None:
                item["statistic"] = str(o.statistic)
            if o.column is not None:
                item["column"] = text(o.column)
            if noise is not None:
                assert o.count is not None and o.statistic is not None  # noqa: S101
                if o.statistic is Statistic.COUNT:
                    item["value"], scale = noise.count(o.count)
                    item["count"] = item["value"]
                    item["dp"] = {"epsilon": noise.share, "countScale": scale}
                else:
                    item["value"], item["count"], item["dp"] = noise.magnitude(
                        o.statistic, float(o.value), o.count, checker._dp_column(o))
            released.append(item)
        else:
            rows: list[list[Any]] = []
            counts: list[int] | None = None if o.counts is None else []
            dp: dict[str, float] | None = None
            for i, row in enumerate(o.rows):
                keys = [checker._mask_key(c, v) if mask else v
                        for c, v in zip(o.columns[:-1], row[:-1], strict=True)]
                value, n = row[-1], o.count(i)
                if noise is not None:
                    assert n is not None  # noqa: S101
                    if o.statistic is Statistic.COUNT:
                        value, scale = noise.count(n)
                        n = value
                        dp = {"epsilon": noise.share, "countScale": scale}
                    else:
                        value, n, dp = noise.magnitude(o.statistic, float(value), n,
                                                       o.columns[-1])
                rows.append([*keys, value])
                if counts is not None:
                    assert n is not None  # noqa: S101
                    counts.append(n)
            table: dict[str, Any] = {"name": text(o.name), "kind": "table",
                                     "statistic": str(o.statistic),
                                     "columns": [text(c) for c in o.columns], "rows": rows,
                                     "counts": counts}
            if dp is not None:
                table["dp"] = dp
            released.append(table)
    return released, files


def check_release(results: Mapping[str, Any] | bytes, out_dir: str | Path, rules: ReleaseRules,
                  input_rows: Sequence[Mapping[str, Any]] | None = None, *,
                  rng: random.Random | None = None) -> ReleaseDecision:
    """Check a job's results (the parsed or raw ``results.json``; files are read from
    ``out_dir/files``) against ``rules`` and the product's ``input_rows`` (the rows the job
    read; without them the checks that need them are listed as unverified). Returns what may
    leave, or the first refusal. ``rng`` is for tests; noise comes from the system's CSPRNG
    (`random.SystemRandom`, as `secrets` uses) otherwise."""
    rng = rng or random.SystemRandom()
    data = _Input(input_rows) if input_rows is not None else None
    checker = _Checker(rules, data, Path(out_dir), rng)
    try:
        outputs = _parse(results, 4 * rules.max_bytes + 65536)
        checker.checks.append("format")
        checker.kinds(outputs)
        if rules.dp_epsilon is not None:
            checker.dp_prerequisites(outputs)
        checker.files(outputs)
        checker.min_count(outputs)
        checker.against_input(outputs)
        released, files = _build(checker, outputs)
        if rules.mask_identifiers:
            checker.checks.append("masking")
        if rules.dp_epsilon is not None:
            checker.checks.append("dp")
        checks = [*checker.checks, "size"]
        body = canonical_json({
            "format": RELEASE_FORMAT, "outputs": released, "checks": checks,
            "masked": rules.mask_identifiers,
            "dp": (None if rules.dp_epsilon is None else
                   {"epsilon": rules.dp_epsilon, "mechanism": "laplace",
                    "neighbours": "add-or-remove-one-record"}),
        })
        size = len(body) + sum(len(f.content) for f in files)
        if size > rules.max_bytes:
            _refuse(Reason.TOO_LARGE, None, f"the release is {size} bytes (at most "
                                            f"{rules.max_bytes})")
    except _Refuse as refused:
        return ReleaseDecision(None, (), tuple(checker.checks), tuple(checker.unverified),
                               refused.refusal)
    return ReleaseDecision(body, tuple(files), tuple(checks), tuple(checker.unverified), None)
