"""A data product's source, as the provider's node reads it: the column types, the three kinds of
source (CSV file, Parquet file, SQL table), and `scan_source`, which checks a source against the
declared columns and computes the SM3 digest a product version records.

The raw data never leaves this module: a scan returns a digest, a row count and a size.

Column types
------------
A small closed set, `ColumnType`: ``string``, ``integer``, ``number``, ``boolean``, ``date``,
``datetime``. A source matches the declared columns when it has exactly the declared names in
the declared order (compared exactly, case included) and, where the source carries types, each
type is compatible:

=========  =============================================  ====================================
declared   Parquet (Arrow) type                           SQL type (SQLAlchemy reflection)
=========  =============================================  ====================================
string     string, large_string, string_view,             String and its kinds (VARCHAR, TEXT,
           dictionary of those                            CHAR), not ENUM
integer    any signed or unsigned integer                 Integer and its kinds
number     integer, floating point, decimal               Integer, Numeric, Float, Double
boolean    bool                                           Boolean
date       date32, date64                                 Date
datetime   timestamp (any unit, with or without zone)     DateTime, TIMESTAMP
=========  =============================================  ====================================

CSV has no types: its header must list the declared names, in order, and every record must have
as many fields as the header (values are not parsed; a field may hold up to 128 KiB, the limit
of Python's csv module). A Parquet file is checked through its footer (schema, row count); its
pages are not decoded.

Digests
-------
Files (CSV, Parquet): ``"sm3:" + hex(SM3(the file's bytes))``, read once in bounded chunks, so
``openssl dgst -sm3 FILE`` gives the same value.

SQL tables: ``"sm3:" + hex(SM3(L1 ‖ L2 ‖ ... ‖ Ln))`` where each ``Li`` is one row as a JSON Lines
line: ``JCS(row) ‖ 0x0A``, with JCS the RFC 8785 canonical JSON of the object
``{column name: value}`` over the declared columns, and the rows taken in the order of
``ORDER BY c1, c2, ..., cn`` (the declared columns in declared order, each ascending, NULLS
FIRST, string columns compared by code point: ``COLLATE "C"`` on PostgreSQL, ``COLLATE BINARY``
on SQLite, so neither the database's locale nor a column's own collation changes the order). An
empty table digests to SM3 of the empty string. The value of each cell, by declared type:

- any type: SQL NULL is ``null``;
- string: the string;
- integer: a JSON number when ``|v| <= 2**53 - 1``, else its decimal string (I-JSON, RFC 7493);
- number: integers as above; binary floats as JSON numbers (RFC 8785 §3.2.2.3 formatting), NaN
  and infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; exact decimals (the
  driver returns `decimal.Decimal`, e.g. PostgreSQL ``numeric``) as their plain decimal string
  with trailing zeros removed (``12.50`` -> ``"12.5"``, ``1E+2`` -> ``"100"``);
- boolean: ``true``/``false`` (SQLite's stored 0/1 included);
- date: ``"YYYY-MM-DD"``;
- datetime: ISO 8601 ``"YYYY-MM-DDTHH:MM:SS[.ffffff]"``, fractional part only when non-zero; a
  value with a time zone is first converted to UTC and ends in ``"Z"``. SQLite's stored text
  (e.g. ``"2024-05-01 08:30:00.000000"``) is parsed first, so it digests like PostgreSQL.

Rows that tie under the ORDER BY (equal in every column) have the same encoding, so the digest
does not depend on how the database orders ties: it is a function of the table's contents
alone, changes when any value changes, and can be recomputed independently by exporting the
table as canonical JSON Lines in that order and hashing the file. String, integer, boolean, date,
datetime and float columns give the same digest on SQLite and PostgreSQL for the same values.
The whole scan reads one row at a time (server-side cursor), in one read-only transaction.
"""

from __future__ import annotations

import csv
import enum
import io
import math
import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from ..crypto import SM3, canonical_json

__all__ = [
    "Column",
    "ColumnType",
    "CsvSource",
    "ParquetSource",
    "Source",
    "SourceError",
    "SourceInfo",
    "SOURCE_KINDS",
    "SqlSource",
    "scan_source",
]

_CHUNK = 1 << 20
_SQL_BATCH = 1000
_MAX_SAFE_INTEGER = 2**53 - 1  # RFC 7493 §2.2
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Byte-order (code point) collation per SQL backend; see "Digests" above.
_BINARY_COLLATION = {"postgresql": "C", "sqlite": "BINARY"}
_SQL_DRIVERS = {"sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"}

_T = TypeVar("_T")
_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


class ColumnType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"


def _error(reason: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(reason, "{message}", {"message": message})


def _name(value: str, what: str) -> str:
    if not value or len(value) > 128 or _CONTROL.search(value):
        raise _error("malformed", f"{what} must be 1..128 characters without control characters")
    return value


class Column(BaseModel):
    """One declared column: a name (1..128 characters, no control characters) and a type."""

    model_config = _STRICT

    name: str
    type: ColumnType

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value, "a column name")

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> object:
        if isinstance(value, str) and value not in ColumnType.__members__.values():
            raise _error("unknown-column-type",
                         f"unknown column type {value!r}; known: {', '.join(ColumnType)}")
        return value


def _absolute(path: Path) -> Path:
    if not path.is_absolute() or "\x00" in str(path):
        raise _error("malformed", "the path must be absolute")
    return path


class CsvSource(BaseModel):
    """A CSV file (RFC 4180: comma-separated, double-quoted, UTF-8 with an optional BOM) whose
    first record is the header."""

    model_config = _STRICT

    kind: Literal["csv"]
    path: Path

    _absolute_path = field_validator("path")(_absolute)


class ParquetSource(BaseModel):
    """A Parquet file."""

    model_config = _STRICT

    kind: Literal["parquet"]
    path: Path

    _absolute_path = field_validator("path")(_absolute)


class SqlSource(BaseModel):
    """A table in the default schema of a SQLite (``sqlite:////absolute/path.db``, opened read-only)
    or PostgreSQL (``postgresql[+psycopg]://...``) database.

    The URL may carry a password: it is kept out of `repr` and of every error message, but it is
    part of the spec, which is confidential to the provider's node.
    """

    model_config = _STRICT

    kind: Literal["sql"]
    url: str = Field(repr=False)
    table: str

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except (sa.exc.ArgumentError, ValueError):
            raise _error("malformed", "not a database URL") from None
        if url.drivername not in _SQL_DRIVERS:
            raise _error("malformed", f"unsupported database {url.drivername!r}; supported: "
                                      + ", ".join(sorted(_SQL_DRIVERS)))
        if url.get_backend_name() == "sqlite" and (
            not url.database or not Path(url.database).is_absolute() or url.query
        ):
            raise _error("malformed",
                         "a SQLite URL must name an absolute file path: sqlite:////path.db")
        return value

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        return _name(value, "a table name")


Source = Annotated[CsvSource | ParquetSource | SqlSource, Field(discriminator="kind")]
SOURCE_KINDS = frozenset({"csv", "parquet", "sql"})


@dataclass(frozen=True)
class SourceInfo:
    """What a scan of a source establishes: ``digest`` is ``"sm3:<hex>"`` (see the module
    docstring), ``rows`` the number of data rows, ``size_bytes`` the file size (None for SQL)."""

    digest: str
    rows: int
    size_bytes: int | None


class SourceError(Exception):
    """A source is missing, unreadable or does not match the declared columns.

    ``reason`` is ``source-missing``, ``source-unreadable`` or ``schema-mismatch``; ``detail``
    says what was found (never the data itself beyond a column name or a row number).
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def scan_source(source: CsvSource | ParquetSource | SqlSource,
                columns: Sequence[Column]) -> SourceInfo:
    """Check that `source` is readable and matches `columns`, and compute its digest and row
    count. Raises `SourceError`."""
    if isinstance(source, CsvSource):
        return _scan_csv(source.path, columns)
    if isinstance(source, ParquetSource):
        return _scan_parquet(source.path, columns)
    return _scan_sql(source, columns)


def _names_mismatch(declared: Sequence[str], found: Sequence[str]) -> str | None:
    if list(declared) == list(found):
        return None
    missing = [n for n in declared if n not in found]
    extra = [n for n in found if n not in declared]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"undeclared {extra}")
        return "columns differ: " + ", ".join(parts)
    if len(found) != len(set(found)):
        return f"the source repeats a column name: {list(found)}"
    return f"columns are in another order: declared {list(declared)}, found {list(found)}"


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115 - the callers close it
    except FileNotFoundError:
        raise SourceError("source-missing", f"{path} does not exist") from None
    except OSError as exc:
        raise SourceError("source-unreadable", f"{path}: {exc.strerror or exc}") from None


# ---- files ---------------------------------------------------------------------------------

class _HashingReader(io.RawIOBase):
    """A raw stream that hashes every byte read through it, so one pass over a file both
    parses and digests it (the digest is of exactly the bytes parsed)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sm3 = SM3()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._raw.read(len(buffer))
        n = len(chunk)
        buffer[:n] = chunk
        self.sm3.update(chunk)
        self.size += n
        return n


def _scan_csv(path: Path, columns: Sequence[Column]) -> SourceInfo:
    with _open(path) as raw:
        hashing = _HashingReader(raw)
        text = io.TextIOWrapper(io.BufferedReader(hashing, _CHUNK), encoding="utf-8-sig",
                                newline="")
        try:
            rows = _count_records(path, text, [c.name for c in columns])
        finally:
            text.close()
    return SourceInfo("sm3:" + hashing.sm3.hexdigest(), rows, hashing.size)


def _count_records(path: Path, text: io.TextIOWrapper, declared: list[str]) -> int:
    """Check the header and the width of every record; return the number of records."""
    reader = csv.reader(text, strict=True)
    rows = 0
    try:
        header = next(reader, None)
        if header is None:
            raise SourceError("source-unreadable", f"{path} is empty: no header")
        problem = _names_mismatch(declared, header)
        if problem:
            raise SourceError("schema-mismatch", f"CSV header: {problem}")
        for record in reader:
            if not record and len(declared) == 1:
                record = [""]  # an empty line is an empty value of the only column
            if len(record) != len(declared):
                raise SourceError(
                    "schema-mismatch",
                    f"CSV line {reader.line_num}: {len(record)} fields, "
                    f"the header has {len(declared)}",
                )
            rows += 1
    except UnicodeDecodeError as exc:
        raise SourceError("source-unreadable",
                          f"{path} is not UTF-8 text: {exc.reason}") from None
    except csv.Error as exc:
        raise SourceError("source-unreadable",
                          f"{path}: CSV line {reader.line_num}: {exc}") from None
    except OSError as exc:
        raise SourceError("source-unreadable", f"{path}: {exc.strerror or exc}") from None
    return rows


def _arrow_compatible(declared: ColumnType, arrow_type: pa.DataType) -> bool:
    t = pa.types
    if t.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
        if declared is not ColumnType.STRING:
            return False
    checks: dict[ColumnType, Callable[[pa.DataType], bool]] = {
        ColumnType.STRING: lambda a: bool(t.is_string(a) or t.is_large_string(a)
                                          or t.is_string_view(a)),
        ColumnType.INTEGER: lambda a: bool(t.is_integer(a)),
        ColumnType.NUMBER: lambda a: bool(t.is_integer(a) or t.is_floating(a)
                                          or t.is_decimal(a)),
        ColumnType.BOOLEAN: lambda a: bool(t.is_boolean(a)),
        ColumnType.DATE: lambda a: bool(t.is_date(a)),
        ColumnType.DATETIME: lambda a: bool(t.is_timestamp(a)),
    }
    return checks[declared](arrow_type)


def _scan_parquet(path: Path, columns: Sequence[Column]) -> SourceInfo:
    with _open(path) as raw:
        try:
            parquet = pq.ParquetFile(raw)
            schema = parquet.schema_arrow
            rows = parquet.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise SourceError("source-unreadable", f"{path} is not a readable Parquet file: "
                              + str(exc).splitlines()[0]) from None
        problem = _names_mismatch([c.name for c in columns], schema.names)
        if problem:
            raise SourceError("schema-mismatch", f"Parquet schema: {problem}")
        for column, field in zip(columns, schema, strict=True):
            if not _arrow_compatible(column.type, field.type):
                raise SourceError(
                    "schema-mismatch",
                    f"Parquet column {column.name!r} is {field.type}, not compatible with "
                    f"{column.type}",
                )
        try:
            raw.seek(0)
            hashing = _HashingReader(raw)
            while hashing.read(_CHUNK):
                pass
        except OSError as exc:
            raise SourceError("source-unreadable", f"{path}: {exc.strerror or exc}") from None
    return SourceInfo("sm3:" + hashing.sm3.hexdigest(), rows, hashing.size)


# ---- SQL tables ----------------------------------------------------------------------------

def _sql_compatible(declared: ColumnType, sql_type: sa.types.TypeEngine[Any]) -> bool:
    st = sa.types
    if declared is ColumnType.STRING:
        return isinstance(sql_type, st.String) and not isinstance(sql_type, st.Enum)
    if declared is ColumnType.INTEGER:
        return isinstance(sql_type, st.Integer)
    if declared is ColumnType.NUMBER:
        return isinstance(sql_type, st.Integer | st.Numeric | st.Float)
    if declared is ColumnType.BOOLEAN:
        return isinstance(sql_type, st.Boolean)
    if declared is ColumnType.DATE:
        return isinstance(sql_type, st.Date)
    return isinstance(sql_type, st.DateTime)


class _NotOfType(Exception):
    pass


def _integer(value: int) -> int | str:
    return value if abs(value) <= _MAX_SAFE_INTEGER else str(value)


def _decimal(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _datetime(value: datetime) -> str:
    suffix = ""
    if value.tzinfo is not None and value.utcoffset() is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
        suffix = "Z"
    return value.isoformat() + suffix


def _cell(declared: ColumnType, value: object) -> Any:
    """The canonical JSON value of one SQL cell (see "Digests" in the module docstring)."""
    if value is None:
        return None
    if declared is ColumnType.STRING and isinstance(value, str):
        return value
    if declared in (ColumnType.INTEGER, ColumnType.NUMBER) and isinstance(value, int) \
            and not isinstance(value, bool):
        return _integer(value)
    if declared is ColumnType.NUMBER and isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if declared is ColumnType.NUMBER and isinstance(value, Decimal):
        return _decimal(value)
    if declared is ColumnType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    if declared is ColumnType.DATE:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, str) and _DATE.fullmatch(value):
            return _parse(date.fromisoformat, value).isoformat()
    if declared is ColumnType.DATETIME:
        if isinstance(value, datetime):
            return _datetime(value)
        if isinstance(value, str) and _DATE.match(value):
            return _datetime(_parse(datetime.fromisoformat, value))
    raise _NotOfType(f"a {type(value).__name__} is not a {declared} value")


def _parse(parse: Callable[[str], _T], text: str) -> _T:
    try:
        return parse(text)
    except ValueError:
        raise _NotOfType(f"{text!r} is not an ISO 8601 value") from None


_NO_DATABASE = re.compile(r'FATAL:\s+database ".*" does not exist')


def _sql_failure(exc: sa.exc.SQLAlchemyError, where: str) -> SourceError:
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip()
    # invalid_catalog_name: with SQLSTATE once connected, only in libpq's message before.
    if getattr(orig, "sqlstate", None) == "3D000" or _NO_DATABASE.search(message):
        return SourceError("source-missing", f"{where}: the database does not exist")
    first_line = message.splitlines()[0] if message else type(exc).__name__
    return SourceError("source-unreadable", f"{where}: {first_line}")


def _engine(url: URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        database = str(url.database)
        if not Path(database).is_file():
            raise SourceError("source-missing", f"{database} does not exist")
        # Read-only: never create or change the provider's database.
        uri = "file:" + urllib.parse.quote(database) + "?mode=ro"
        return sa.create_engine("sqlite+pysqlite://", poolclass=NullPool,
                                creator=lambda: sqlite3.connect(uri, uri=True))
    return sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})


def _scan_sql(source: SqlSource, columns: Sequence[Column]) -> SourceInfo:
    url = make_url(source.url)
    where = f"{url.render_as_string(hide_password=True)} table {source.table!r}"
    backend = url.get_backend_name()
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                conn = conn.execution_options(postgresql_readonly=True,
                                              isolation_level="REPEATABLE READ")
            found = sa.inspect(conn).get_columns(source.table)
            _check_sql_columns(columns, found)
            sm3, rows = _digest_rows(conn, source.table, columns, _BINARY_COLLATION[backend])
    except sa.exc.NoSuchTableError:
        raise SourceError("source-missing", f"{where}: no such table") from None
    except sa.exc.SQLAlchemyError as exc:
        raise _sql_failure(exc, where) from None
    except _NotOfType as exc:
        raise SourceError("schema-mismatch", f"{where}: {exc}") from None
    finally:
        engine.dispose()
    return SourceInfo("sm3:" + sm3.hexdigest(), rows, None)


def _check_sql_columns(columns: Sequence[Column], found: Sequence[Any]) -> None:
    problem = _names_mismatch([c.name for c in columns], [f["name"] for f in found])
    if problem:
        raise SourceError("schema-mismatch", f"SQL table: {problem}")
    for column, info in zip(columns, found, strict=True):
        if not _sql_compatible(column.type, info["type"]):
            raise SourceError(
                "schema-mismatch",
                f"SQL column {column.name!r} is {info['type']!r}, not compatible with "
                f"{column.type}",
            )


def _digest_rows(conn: sa.Connection, table: str, columns: Sequence[Column],
                 collation: str) -> tuple[SM3, int]:
    cols: list[sa.ColumnClause[Any]] = [sa.column(c.name) for c in columns]
    order = [
        (col.collate(collation) if c.type is ColumnType.STRING else col).asc().nulls_first()
        for col, c in zip(cols, columns, strict=True)
    ]
    query = sa.select(*cols).select_from(sa.table(table)).order_by(*order)
    sm3 = SM3()
    rows = 0
    for row in conn.execution_options(yield_per=_SQL_BATCH).execute(query):
        obj: dict[str, Any] = {}
        for column, value in zip(columns, row, strict=True):
            try:
                obj[column.name] = _cell(column.type, value)
            except _NotOfType as exc:
                raise _NotOfType(f"row {rows + 1} (in digest order), column "
                                 f"{column.name!r}: {exc}") from None
        sm3.update(canonical_json(obj) + b"\n")
        rows += 1
    return sm3, rows

