"""The job API: what a job's code calls inside the sandbox to read its inputs and write results.

    from trustspace.sandbox import api

    rows = api.read_rows("patients")                  # /data/patients.csv as dicts
    ages = [float(r["age"]) for r in rows]
    api.aggregate("mean_age", sum(ages) / len(ages), len(ages), statistic="mean", column="age")
    api.table("by_sex", ["sex", "n"], [["F", 40], ["M", 35]], statistic="count")
    api.file("model.bin", weights)

Inside the sandbox this module is /job/lib/trustspace/sandbox/api.py (the only piece of
trustspace there); it uses the standard library only (Parquet needs pyarrow, when the node's
Python has it). Outside the sandbox the same script runs unchanged when the environment points
the API elsewhere: ``TRUSTSPACE_JOB_PARAMS`` (a JSON file), ``TRUSTSPACE_JOB_DATA`` (a folder
of ``<name>.csv`` / ``<name>.parquet`` files), ``TRUSTSPACE_JOB_OUT`` (the output folder).

Every call rewrites ``<out>/results.json`` (atomically), in the format the node reads back
(`trustspace.sandbox.results`) and checks before anything is released
(`trustspace.sandbox.release`)::

    {"format": "trustspace.results/1", "outputs": [
      {"name": "n", "kind": "aggregate", "value": 1234.5, "count": 57,
       "statistic": "sum", "column": "income"},              # statistic, column: optional
      {"name": "by_sex", "kind": "table", "statistic": "count",
       "columns": ["sex", "n"], "rows": [["F", 40], ["M", 35]], "counts": null},
      {"name": "model.bin", "kind": "file", "path": "files/model.bin", "bytes": 4096,
       "sm3": "<64 hex digits>"}]}

A table's last column holds the statistic and the columns before it are the group keys;
``counts`` gives the number of records behind each row (required for statistics other than
``count``, where the node checks a minimum count per row). Output names are unique.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "STATISTICS",
    "aggregate",
    "datasets",
    "file",
    "params",
    "path",
    "read_rows",
    "table",
]

FORMAT = "trustspace.results/1"
STATISTICS = ("count", "sum", "mean", "median", "std", "var", "min", "max", "mode")
MAX_NAME = 200
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

_PARAMS = Path(os.environ.get("TRUSTSPACE_JOB_PARAMS", "/job/params.json"))
_DATA = Path(os.environ.get("TRUSTSPACE_JOB_DATA", "/data"))
_OUT = Path(os.environ.get("TRUSTSPACE_JOB_OUT", "/work/out"))

_outputs: list[dict[str, Any]] = []


def params() -> dict[str, Any]:
    """The job's parameters (the JSON object the consumer sent)."""
    try:
        value = json.loads(_PARAMS.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(value, dict):
        raise ValueError("the job's parameters are not a JSON object")
    return value


def datasets() -> list[str]:
    """The names of the datasets mounted for this job."""
    if not _DATA.is_dir():
        return []
    return sorted({p.name.split(".", 1)[0] for p in _DATA.iterdir() if p.is_file()})


def path(name: str) -> Path:
    """The read-only file holding dataset `name` (``/data/<name>.csv`` or ``.parquet``)."""
    matches = [p for p in _DATA.iterdir() if p.is_file() and p.name.split(".", 1)[0] == name] \
        if _DATA.is_dir() else []
    if len(matches) != 1:
        raise KeyError(f"no dataset {name!r} (there are: {', '.join(datasets()) or 'none'})")
    return matches[0]


def read_rows(name: str) -> list[dict[str, Any]]:
    """Every row of dataset `name`, as dicts keyed by column. CSV values are strings (convert
    them yourself); Parquet values have their column's type (needs pyarrow)."""
    source = path(name)
    if source.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = pq.read_table(source).to_pylist()
        return rows
    with source.open(newline="", encoding="utf-8") as f:
        return [dict(row) for row in csv.DictReader(f)]


# ---- outputs -----------------------------------------------------------------------------------

def _number(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value))


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _name(name: object) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or any(
            ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ValueError(f"an output name is 1..{MAX_NAME} characters without control "
                         "characters")
    if any(o["name"] == name for o in _outputs):
        raise ValueError(f"output {name!r} was already written")
    return name


def _statistic(statistic: object) -> str:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r} (known: {', '.join(STATISTICS)})")
    return str(statistic)


def _write() -> None:
    _OUT.mkdir(parents=True, exist_ok=True)
    doc = json.dumps({"format": FORMAT, "outputs": _outputs}, ensure_ascii=False,
                     allow_nan=False, separators=(",", ":"))
    tmp = _OUT / ".results.json.tmp"
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, _OUT / "results.json")


def aggregate(name: str, value: float, count: int | None, *, statistic: str | None = None,
              column: str | None = None) -> None:
    """One number computed over `count` records (say `statistic` and the input `column` it
    summarises, so the node can check it)."""
    if not _number(value):
        raise ValueError("an aggregate's value must be a finite number")
    if count is not None and not _count(count):
        raise ValueError("an aggregate's count must be a non-negative integer")
    output: dict[str, Any] = {"name": _name(name), "kind": "aggregate", "value": value,
                              "count": count}
    if statistic is not None:
        output["statistic"] = _statistic(statistic)
    if column is not None:
        if not isinstance(column, str):
            raise ValueError("an aggregate's column is a string")
        output["column"] = column
    _outputs.append(output)
    _write()


def table(name: str, columns: list[str], rows: list[list[Any]],
          counts: list[int] | None = None, statistic: str = "count") -> None:
    """A table: `columns` are the group keys followed by the statistic's column; each row
    holds key values (strings, numbers, booleans, None) then the statistic's value. `counts`,
    one per row, gives the records behind each row (implied by the value for ``count``)."""
    statistic = _statistic(statistic)
    if (not isinstance(columns, list) or not columns or len(set(columns)) != len(columns)
            or not all(isinstance(c, str) and 0 < len(c) <= MAX_NAME for c in columns)):
        raise ValueError("columns must be distinct non-empty strings")
    clean: list[list[Any]] = []
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} values for {len(columns)} columns")
        if not all(v is None or isinstance(v, str | bool) or _number(v) for v in row[:-1]):
            raise ValueError(f"row {i}: keys must be strings, numbers, booleans or None")
        if not (_count(row[-1]) if statistic == "count" else _number(row[-1])):
            raise ValueError(f"row {i}: the {statistic} must be a "
                             + ("non-negative integer" if statistic == "count"
                                else "finite number"))
        clean.append(row)
    if counts is not None:
        counts = list(counts)
        if len(counts) != len(clean) or not all(_count(c) for c in counts):
            raise ValueError("counts must hold one non-negative integer per row")
    _outputs.append({"name": _name(name), "kind": "table", "statistic": statistic,
                     "columns": list(columns), "rows": clean, "counts": counts})
    _write()


def file(name: str, data: bytes) -> None:
    """A file output (a model, a chart) written to ``files/<name>``; the node checks its size
    and SM3 digest, and what the agreement allows of files."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise ValueError("a file name is 1..128 letters, digits, '.', '_' or '-', not "
                         "starting with '.' or '-'")
    name = _name(name)
    data = bytes(data)
    files = _OUT / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / name).write_bytes(data)
    _outputs.append({"name": name, "kind": "file", "path": f"files/{name}",
                     "bytes": len(data), "sm3": hashlib.new("sm3", data).hexdigest()})
    _write()
