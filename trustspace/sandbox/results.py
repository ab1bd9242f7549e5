"""Reading a job's results back on the host: ``<out>/results.json`` and ``<out>/files/``, as
`trustspace.sandbox.api` writes them, parsed strictly (`read_results`).

The job is not trusted, so neither is its output folder: the JSON is read up to a size limit,
with duplicate keys, NaN and infinities refused; every output must have exactly its kind's
fields with values of the declared types; names are unique; a file output must be a regular
file (not a symlink) at ``files/<name>`` with the declared size and SM3 digest; and the folder
may hold nothing else. Any violation raises `ResultsInvalid` naming the output and the rule.
These are the format rules `trustspace.sandbox.release` applies too; release then decides what
of a valid result may leave.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from trustspace import strict_json
from trustspace.crypto import sm3_file

from .errors import ResultsInvalid

__all__ = [
    "FORMAT",
    "STATISTICS",
    "Aggregate",
    "File",
    "Output",
    "Results",
    "read_results",
]

FORMAT = "trustspace.results/1"
STATISTICS = frozenset({"count", "sum", "mean", "median", "std", "var", "min", "max", "mode"})
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_OUTPUTS = 1000
MAX_NAME = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FILE_PATH = re.compile(r"files/([A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Aggregate:
    name: str
    value: int | float
    count: int | None
    statistic: str | None = None
    column: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    statistic: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    counts: tuple[int, ...] | None


@dataclass(frozen=True)
class File:
    name: str
    path: Path  # on the host, inside the output folder
    bytes: int
    sm3: str  # hex


Output = Aggregate | Table | File


@dataclass(frozen=True)
class Results:
    outputs: tuple[Output, ...]

    def __getitem__(self, name: str) -> Output:
        for output in self.outputs:
            if output.name == name:
                return output
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.outputs]


def _fail(reason: str, output: str | None = None) -> NoReturn:
    raise ResultsInvalid(reason, output=output)



def _number(v: object) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and math.isfinite(v))


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _fields(obj: dict[str, Any], name: str, required: set[str], optional: set[str]) -> None:
    missing, extra = required - obj.keys(), obj.keys() - required - optional
    if missing or extra:
        _fail(f"fields: missing {sorted(missing)}, unknown {sorted(extra)}", name)


def _statistic(value: object, name: str) -> str:
    if not isinstance(value, str) or value not in STATISTICS:
        _fail(f"unknown statistic (known: {', '.join(sorted(STATISTICS))})", name)
    return value


def _aggregate(obj: dict[str, Any], name: str) -> Aggregate:
    _fields(obj, name, {"name", "kind", "value", "count"}, {"statistic", "column"})
    value, count = obj["value"], obj["count"]
    if not _number(value):
        _fail("value must be a finite number", name)
    if count is not None and not _count(count):
        _fail("count must be a non-negative integer or null", name)
    statistic = obj.get("statistic")
    column = obj.get("column")
    if column is not None and not isinstance(column, str):
        _fail("column must be a string", name)
    return Aggregate(name, value, count,
                     None if statistic is None else _statistic(statistic, name), column)


def _table(obj: dict[str, Any], name: str) -> Table:
    _fields(obj, name, {"name", "kind", "statistic", "columns", "rows"}, {"counts"})
    statistic = _statistic(obj["statistic"], name)
    columns, rows, counts = obj["columns"], obj["rows"], obj.get("counts")
    if (not isinstance(columns, list) or not columns
            or not all(isinstance(c, str) and 0 < len(c) <= MAX_NAME for c in columns)
            or len(set(columns)) != len(columns)):
        _fail("columns must be distinct non-empty strings", name)
    if not isinstance(rows, list):
        _fail("rows must be an array", name)
    parsed = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            _fail(f"row {i} must have {len(columns)} values", name)
        if not all(v is None or isinstance(v, str | bool) or _number(v) for v in row[:-1]):
            _fail(f"row {i}: keys must be strings, numbers, booleans or null", name)
        if not (_count(row[-1]) if statistic == "count" else _number(row[-1])):
            _fail(f"row {i}: the {statistic} must be a "
                  + ("non-negative integer" if statistic == "count" else "finite number"), name)
        parsed.append(tuple(row))
    if counts is not None and (not isinstance(counts, list) or len(counts) != len(rows)
                               or not all(_count(c) for c in counts)):
        _fail("counts must be null or one non-negative integer per row", name)
    return Table(name, statistic, tuple(columns), tuple(parsed),
                 None if counts is None else tuple(counts))


def _file(obj: dict[str, Any], name: str, out: Path) -> File:
    _fields(obj, name, {"name", "kind", "path", "bytes", "sm3"}, set())
    rel, size, digest = obj["path"], obj["bytes"], obj["sm3"]
    if not isinstance(rel, str) or not _FILE_PATH.fullmatch(rel):
        _fail("path must be files/<name> (letters, digits, '.', '_', '-')", name)
    if not _count(size) or not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        _fail("bytes must be a non-negative integer and sm3 64 lowercase hex digits", name)
    path = out / rel
    try:
        info = path.lstat()
    except FileNotFoundError:
        _fail(f"{rel} does not exist", name)
    if not stat.S_ISREG(info.st_mode):
        _fail(f"{rel} is not a regular file", name)
    if info.st_size != size:
        _fail(f"{rel} is {info.st_size} bytes, not the declared {size}", name)
    if sm3_file(path).hex() != digest:
        _fail(f"{rel} does not have the declared SM3 digest", name)
    return File(name, path, size, digest)


def _output(obj: object, index: int, out: Path) -> Output:
    if not isinstance(obj, dict):
        _fail(f"outputs[{index}] is not an object")
    name = obj.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or _CONTROL.search(name):
        _fail(f"outputs[{index}]: a name is 1..{MAX_NAME} characters without control "
              "characters")
    kind = obj.get("kind")
    if kind == "aggregate":
        return _aggregate(obj, name)
    if kind == "table":
        return _table(obj, name)
    if kind == "file":
        return _file(obj, name, out)
    _fail("unknown kind (known: aggregate, table, file)", name)


def _sizes(out: Path, max_bytes: int) -> set[str]:
    """Every entry under `out` (relative paths); refuses more than `max_bytes` in all, and
    anything but regular files and folders."""
    total = 0
    entries: set[str] = set()
    for top, dirs, files in os.walk(out):
        for name in dirs + files:
            path = Path(top, name)
            info = path.lstat()
            rel = path.relative_to(out).as_posix()
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                _fail(f"{rel} is not a regular file")
            total += info.st_size
            if total > max_bytes:
                _fail(f"the output folder holds more than {max_bytes} bytes")
            entries.add(rel)
    return entries


def read_results(out_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_outputs: int = MAX_OUTPUTS) -> Results:
    """Parse and check a job's output folder; raise `ResultsInvalid` on anything unexpected."""
    out = Path(out_dir)
    if not out.is_dir() or out.is_symlink():
        _fail(f"{out} is not a folder")
    entries = _sizes(out, max_bytes)
    if "results.json" not in entries:
        _fail("the job wrote no results.json")
    data = (out / "results.json").read_bytes()
    if len(data) > MAX_JSON_BYTES:
        _fail(f"results.json is {len(data)} bytes (at most {MAX_JSON_BYTES})")
    try:
        doc = strict_json.loads(data)
    except strict_json.JSONRefused as exc:
        _fail(f"results.json is not valid JSON: {exc}")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _fail(f"results.json must be an object of format {FORMAT}")
    if set(doc) != {"format", "outputs"}:
        _fail("results.json fields must be exactly format and outputs")
    raw = doc["outputs"]
    if not isinstance(raw, list) or len(raw) > max_outputs:
        _fail(f"outputs must be an array of at most {max_outputs}")
    outputs = tuple(_output(o, i, out) for i, o in enumerate(raw))
    seen: set[str] = set()
    for output in outputs:
        if output.name in seen:
            _fail("output names must be unique", output.name)
        seen.add(output.name)
    declared = {"results.json"} | {o.path.relative_to(out).as_posix()
                                   for o in outputs if isinstance(o, File)}
    extra = sorted(entries - declared)
    if extra:
        _fail(f"the output folder holds files no output declares: {', '.join(extra[:5])}")
    return Results(outputs)
