"""Data product specs (trustspace.registry.products): validation and its error reasons, source
scans and their SM3 digests, and the GB/T 43697-2024 level rules.

Digests are checked against an independent computation: `openssl dgst -sm3` over the file for
CSV and Parquet; for SQL tables, the rows sorted in Python, written as JSON Lines with the
standard library's `json` and hashed by `openssl dgst -sm3`. The SQL tests run on SQLite and
on PostgreSQL (a fresh database on 127.0.0.1:5432, dropped afterwards).
"""

from __future__ import annotations

import csv
import json
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from trustspace.registry.classification import DOMAINS, mask_value
from trustspace.registry.products import (
    REASONS,
    ColumnType,
    ComputeMode,
    Level,
    ProductInvalid,
    ProductSpec,
    check_classification,
    check_publishable,
    effective_policy,
    inspect_source,
    public_preview,
)

OPENSSL = "/usr/bin/openssl"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"

# The test table: the string column first, so the order of rows depends on how strings and
# NULLs sort (code point order, NULLS FIRST), not only on a unique key.
COLUMNS = [
    {"name": "name", "type": "string"},
    {"name": "id", "type": "integer"},
    {"name": "score", "type": "number"},
    {"name": "active", "type": "boolean"},
    {"name": "born", "type": "date"},
    {"name": "seen", "type": "datetime"},
]
ROWS: list[tuple[Any, ...]] = [
    ("b", 3, 2.5, True, date(1990, 1, 2), datetime(2024, 5, 1, 8, 30)),
    ("B", 1, None, False, date(1985, 12, 31), datetime(2024, 5, 1, 8, 30, 0, 123000)),
    ("a", 2, -1.25, None, None, None),
    ("é", 4, 10.75, True, date(2000, 2, 29), datetime(2023, 1, 1)),
    ("Z", 5, 0.1, False, date(2001, 1, 1), datetime(2022, 6, 30, 23, 59, 59)),
    (None, 6, 3.5, True, date(2001, 1, 1), datetime(2022, 6, 30)),
    ("b", 2, 7.25, False, date(1970, 1, 1), datetime(1999, 12, 31, 23, 59)),
    ("b", 2, -7.25, False, date(1970, 1, 1), datetime(1999, 12, 31, 23, 59)),
    ("日本", -(2**40), 1e21, True, date(2024, 2, 29), datetime(2024, 2, 29, 12)),
]
PREVIEW: list[dict[str, Any]] = [
    {"name": "Alice", "id": 1, "score": 2.5, "active": True, "born": "1990-05-17",
     "seen": "2024-05-17T08:30:00+08:00"},
    {"name": None, "id": None, "score": 3, "active": None, "born": None,
     "seen": "2024-05-17T08:30:00.5Z"},
]


def spec_json(source: dict[str, Any], /, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": "urn:ts:product:test-people",
        "title": "Test people",
        "description": "Synthetic people for tests.",
        "keywords": ["people", "测试"],
        "category": "health/门诊记录",
        "level": "general",
        "columns": COLUMNS,
        "preview": PREVIEW,
        "source": source,
        "modes": ["sandbox", "federated"],
        "offers": [{"@id": "urn:ts:offer:1",
                    "permission": [{"action": "use", "constraint": []}]}],
    }
    spec.update(changes)
    return spec


CSV_SOURCE = {"kind": "csv", "path": "/nonexistent/people.csv"}


def refused(obj: Any) -> ProductInvalid:
    with pytest.raises(ProductInvalid) as info:
        ProductSpec.from_json(obj)
    error = info.value
    assert error.reason in REASONS
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return error


def openssl_sm3(path: Path) -> str:
    out = subprocess.run([OPENSSL, "dgst", "-sm3", "-r", str(path)], capture_output=True,
                         check=True, timeout=30).stdout.decode()
    return "sm3:" + out.split()[0]


def text(value: Any) -> str:
    """A value as this test writes it into a CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.isoformat() if isinstance(value, date) else str(value)


def write_csv(path: Path, rows: list[tuple[Any, ...]], header: list[str] | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header or [c["name"] for c in COLUMNS])
        writer.writerows([text(v) for v in row] for row in rows)
    return path


ARROW_SCHEMA = pa.schema([
    ("name", pa.string()), ("id", pa.int64()), ("score", pa.float64()), ("active", pa.bool_()),
    ("born", pa.date32()), ("seen", pa.timestamp("us")),
])


def write_parquet(path: Path, rows: list[tuple[Any, ...]],
                  schema: pa.Schema = ARROW_SCHEMA) -> Path:
    table = pa.table([list(col) for col in zip(*rows, strict=True)], schema=schema)
    pq.write_table(table, path)
    return path


# ---- CSV -----------------------------------------------------------------------------------

def test_csv_digest_rows_and_size(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "people.csv", ROWS)
    spec = ProductSpec.from_json(spec_json({"kind": "csv", "path": str(path)}))
    info = inspect_source(spec)
    assert info.digest == openssl_sm3(path)
    assert info.rows == len(ROWS)
    assert info.size_bytes == path.stat().st_size


def test_csv_digest_changes_when_one_value_changes(tmp_path: Path) -> None:
    first = write_csv(tmp_path / "a.csv", ROWS)
    changed = [ROWS[0], (*ROWS[1][:2], 0.5, *ROWS[1][3:]), *ROWS[2:]]
    second = write_csv(tmp_path / "b.csv", changed)
    digests = {inspect_source(ProductSpec.from_json(spec_json({"kind": "csv", "path": str(p)})))
               .digest for p in (first, second)}
    assert len(digests) == 2


def test_csv_quoted_newlines_bom_and_one_column(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes(b'\xef\xbb\xbfnote\r\n"two\r\nlines"\r\n\r\nplain\r\n')
    spec = ProductSpec.from_json(spec_json(
        {"kind": "csv", "path": str(path)}, columns=[{"name": "note", "type": "string"}],
        preview=[]))
    info = inspect_source(spec)
    assert (info.rows, info.digest) == (3, openssl_sm3(path))  # the empty line is a null note


@pytest.mark.parametrize("header", [
    ["name", "id", "score", "active", "born", "when"],  # renamed
    ["id", "name", "score", "active", "born", "seen"],  # reordered
    ["name", "id", "score", "active", "born"],  # missing
    ["name", "id", "score", "active", "born", "seen", "extra"],  # undeclared
    ["Name", "id", "score", "active", "born", "seen"],  # case differs
])
def test_csv_header_must_match(tmp_path: Path, header: list[str]) -> None:
    path = write_csv(tmp_path / "people.csv", [], header)
    error = _inspect_refused({"kind": "csv", "path": str(path)})
    assert (error.reason, error.field) == ("schema-mismatch", "/source")


def test_csv_ragged_record(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("name,id,score,active,born,seen\nx,1,2,true,,\ny,2\n", encoding="utf-8")
    error = _inspect_refused({"kind": "csv", "path": str(path)})
    assert error.reason == "schema-mismatch" and "line 3" in error.detail


@pytest.mark.parametrize("content", [
    b"",  # no header
    b"name,id,score,active,born,seen\n\xff\xfe,1,,,,\n",  # not UTF-8
    b'name,id,score,active,born,seen\n"a"b,1,,,,\n',  # bad quoting
])
def test_csv_unreadable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    assert _inspect_refused({"kind": "csv", "path": str(path)}).reason == "source-unreadable"


def _inspect_refused(source: dict[str, Any], **changes: Any) -> ProductInvalid:
    spec = ProductSpec.from_json(spec_json(source, **changes))
    with pytest.raises(ProductInvalid) as info:
        inspect_source(spec)
    assert info.value.field == "/source"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    return info.value


@pytest.mark.parametrize("kind", ["csv", "parquet", "directory"])
def test_file_source_missing_or_not_a_file(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        error = _inspect_refused({"kind": "csv", "path": str(tmp_path)})
        assert error.reason == "source-unreadable"
    else:
        error = _inspect_refused({"kind": kind, "path": str(tmp_path / f"none.{kind}")})
        assert error.reason == "source-missing"


# ---- Parquet -------------------------------------------------------------------------------

def test_parquet_digest_and_rows(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "people.parquet", ROWS)
    info = inspect_source(ProductSpec.from_json(spec_json({"kind": "parquet",
                                                           "path": str(path)})))
    assert info.digest == openssl_sm3(path)
    assert (info.rows, info.size_bytes) == (len(ROWS), path.stat().st_size)


def test_parquet_digest_changes_when_one_value_changes(tmp_path: Path) -> None:
    changed = [*ROWS[:-1], (*ROWS[-1][:1], ROWS[-1][1] + 1, *ROWS[-1][2:])]
    digests = {
        inspect_source(ProductSpec.from_json(
            spec_json({"kind": "parquet", "path": str(write_parquet(tmp_path / name, rows))})
        )).digest
        for name, rows in (("a.parquet", ROWS), ("b.parquet", changed))
    }
    assert len(digests) == 2


COMPATIBLE = [
    ("string", pa.large_string(), ["x", None]),
    ("string", pa.dictionary(pa.int8(), pa.string()), ["x", "y"]),
    ("integer", pa.int8(), [1, None]),
    ("integer", pa.uint64(), [1, 2]),
    ("number", pa.int32(), [1, 2]),
    ("number", pa.float32(), [1.5, None]),
    ("number", pa.decimal128(10, 2), [Decimal("1.25"), None]),
    ("boolean", pa.bool_(), [True, None]),
    ("date", pa.date64(), [date(2024, 1, 1), None]),
    ("datetime", pa.timestamp("ms", tz="Asia/Shanghai"), [datetime(2024, 1, 1, tzinfo=UTC)]),
]
INCOMPATIBLE = [
    ("integer", pa.string(), ["1"]),
    ("integer", pa.float64(), [1.0]),
    ("string", pa.binary(), [b"x"]),
    ("boolean", pa.int8(), [1]),
    ("date", pa.timestamp("s"), [datetime(2024, 1, 1)]),
    ("datetime", pa.date32(), [date(2024, 1, 1)]),
    ("string", pa.list_(pa.string()), [["x"]]),
]


@pytest.mark.parametrize(("declared", "arrow_type", "values"), COMPATIBLE + INCOMPATIBLE)
def test_parquet_type_compatibility(tmp_path: Path, declared: str, arrow_type: pa.DataType,
                                    values: list[Any]) -> None:
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"v": pa.array(values, type=arrow_type)}), path)
    spec = ProductSpec.from_json(spec_json({"kind": "parquet", "path": str(path)},
                                           columns=[{"name": "v", "type": declared}], preview=[]))
    if (declared, arrow_type, values) in COMPATIBLE:
        assert inspect_source(spec).rows == len(values)
    else:
        with pytest.raises(ProductInvalid) as info:
            inspect_source(spec)
        assert info.value.reason == "schema-mismatch" and "'v'" in info.value.detail


def test_parquet_names_must_match(tmp_path: Path) -> None:
    schema = pa.schema([("name", pa.string()), ("ID", pa.int64()), *list(ARROW_SCHEMA)[2:]])
    path = write_parquet(tmp_path / "p.parquet", ROWS, schema)
    assert _inspect_refused({"kind": "parquet", "path": str(path)}).reason == "schema-mismatch"


def test_parquet_unreadable(tmp_path: Path) -> None:
    good = write_parquet(tmp_path / "good.parquet", ROWS).read_bytes()
    for name, content in (("garbage", b"not parquet at all"), ("truncated", good[:-100])):
        path = tmp_path / name
        path.write_bytes(content)
        assert _inspect_refused({"kind": "parquet", "path": str(path)}).reason \
            == "source-unreadable"


# ---- SQL tables ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped at the end."""
    name = "ts_test_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data.db'}"
    return PG_URL.format(db=request.getfixturevalue("pg_database"))


def create_table(url: str, rows: list[tuple[Any, ...]], score: Any = None) -> str:
    """A new table with COLUMNS and `rows`, inserted in the order given. The string column gets
    a collation that does not sort by code point, which the digest's ORDER BY must override."""
    table_name = "people_" + secrets.token_hex(4)
    engine = sa.create_engine(url)
    collation = "en-US-x-icu" if engine.dialect.name == "postgresql" else "NOCASE"
    table = sa.Table(
        table_name, sa.MetaData(),
        sa.Column("name", sa.Text(collation=collation)),
        sa.Column("id", sa.BigInteger),
        sa.Column("score", score if score is not None else sa.Double),
        sa.Column("active", sa.Boolean),
        sa.Column("born", sa.Date),
        sa.Column("seen", sa.DateTime),
    )
    with engine.begin() as conn:
        table.create(conn)
        if rows:
            conn.execute(table.insert(), [dict(zip(table.c.keys(), r, strict=True))
                                          for r in rows])
    engine.dispose()
    return table_name


def expected_sql_digest(tmp_path: Path, rows: list[tuple[Any, ...]]) -> str:
    """The documented SQL digest, computed without trustspace: sort, write JSON Lines, openssl."""
    def key(row: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
        return tuple((v is not None, v if v is not None else 0) for v in row)

    def value(v: Any) -> Any:
        return v.isoformat() if isinstance(v, date) else v

    path = tmp_path / f"export-{secrets.token_hex(4)}.jsonl"
    with open(path, "w", encoding="utf-8", newline="") as f:
        for row in sorted(rows, key=key):
            obj = {c["name"]: value(v) for c, v in zip(COLUMNS, row, strict=True)}
            f.write(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                    + "\n")
    return openssl_sm3(path)


def sql_spec(url: str, table: str, **changes: Any) -> ProductSpec:
    return ProductSpec.from_json(spec_json({"kind": "sql", "url": url, "table": table},
                                           **changes))


def test_sql_digest_is_the_documented_one(sql_url: str, tmp_path: Path) -> None:
    info = inspect_source(sql_spec(sql_url, create_table(sql_url, ROWS)))
    assert info.digest == expected_sql_digest(tmp_path, ROWS)  # same on SQLite and PostgreSQL
    assert (info.rows, info.size_bytes) == (len(ROWS), None)


def test_sql_digest_ignores_insertion_order_and_sees_one_change(sql_url: str) -> None:
    forward = inspect_source(sql_spec(sql_url, create_table(sql_url, ROWS))).digest
    backward = inspect_source(sql_spec(sql_url, create_table(sql_url, ROWS[::-1]))).digest
    changed_rows = [*ROWS[:3], (*ROWS[3][:5], ROWS[3][5] + timedelta(seconds=1)), *ROWS[4:]]
    changed = inspect_source(sql_spec(sql_url, create_table(sql_url, changed_rows))).digest
    assert forward == backward != changed


def test_sql_empty_table(sql_url: str) -> None:
    info = inspect_source(sql_spec(sql_url, create_table(sql_url, [])))
    assert (info.rows, info.digest) == (0, "sm3:" + _sm3_of_nothing())


def _sm3_of_nothing() -> str:
    out = subprocess.run([OPENSSL, "dgst", "-sm3", "-r"], input=b"", capture_output=True,
                         check=True, timeout=30).stdout.decode()
    return out.split()[0]


def test_sql_missing_table(sql_url: str) -> None:
    create_table(sql_url, [])  # the database exists, with another table
    error = _sql_refused(sql_url, "no_such_table")
    assert error.reason == "source-missing" and "no such table" in error.detail


@pytest.mark.parametrize(("change", "what"), [
    ({"columns": [{**COLUMNS[0], "name": "nom"}, *COLUMNS[1:]]}, "missing ['nom']"),
    ({"columns": [*COLUMNS[:1], {"name": "id", "type": "string"}, *COLUMNS[2:]]}, "'id'"),
    ({"columns": [*COLUMNS[:2], {"name": "score", "type": "integer"}, *COLUMNS[3:]]}, "'score'"),
    ({"columns": [*COLUMNS[:5], {"name": "seen", "type": "date"}]}, "'seen'"),
    ({"columns": COLUMNS[:5]}, "undeclared ['seen']"),
])
def test_sql_columns_must_match(sql_url: str, change: dict[str, Any], what: str) -> None:
    error = _sql_refused(sql_url, create_table(sql_url, []), preview=[], **change)
    assert error.reason == "schema-mismatch" and what in error.detail


def _sql_refused(url: str, table: str, **changes: Any) -> ProductInvalid:
    with pytest.raises(ProductInvalid) as info:
        inspect_source(sql_spec(url, table, **changes))
    assert info.value.field == "/source"
    return info.value


def test_sqlite_missing_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    assert _sql_refused(f"sqlite:///{path}", "people").reason == "source-missing"
    assert not path.exists()


def test_sqlite_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file" * 100)
    assert _sql_refused(f"sqlite:///{path}", "people").reason == "source-unreadable"


def test_sqlite_value_of_another_type(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data.db'}"
    table = create_table(url, ROWS[:1])
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # An INTEGER column of SQLite stores what cannot be converted as text.
        conn.execute(sa.table(table, sa.column("id")).update().values(id="seven"))
    engine.dispose()
    error = _sql_refused(url, table)
    assert error.reason == "schema-mismatch" and "'id'" in error.detail


def test_postgresql_missing_database_hides_the_password(pg_database: str) -> None:
    url = "postgresql+psycopg://postgres:s3cret@127.0.0.1:5432/ts_test_absent_database"
    error = _sql_refused(url, "people")
    assert error.reason == "source-missing"
    assert "s3cret" not in str(error) and "s3cret" not in repr(sql_spec(url, "people"))


def test_postgresql_numeric_and_time_zones(pg_database: str, tmp_path: Path) -> None:
    """Exact decimals digest as normalised strings (12.50 == 12.5); timestamptz as UTC, so the
    session's time zone does not matter."""
    url = PG_URL.format(db=pg_database)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE money_a (amount numeric(10, 2), at timestamptz)")
        conn.exec_driver_sql("CREATE TABLE money_b (amount numeric, at timestamptz)")
        values = [("12.50", "2024-05-01 08:30:00+08"), ("100", "2024-05-01 00:00:00.25Z"),
                  (None, None), ("-0.01", None)]
        for table in ("money_a", "money_b"):
            conn.execute(sa.table(table, sa.column("amount"), sa.column("at")).insert(),
                         [{"amount": a, "at": t} for a, t in values])
    columns = [{"name": "amount", "type": "number"}, {"name": "at", "type": "datetime"}]
    digests = {inspect_source(sql_spec(url, table, columns=columns, preview=[])).digest
               for table in ("money_a", "money_b")}
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER DATABASE {pg_database} SET timezone TO 'America/Lima'")
    try:
        digests.add(inspect_source(sql_spec(url, "money_a", columns=columns,
                                            preview=[])).digest)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {pg_database} RESET timezone")
        engine.dispose()
    lines = [{"amount": None, "at": None}, {"amount": "-0.01", "at": None},
             {"amount": "12.5", "at": "2024-05-01T00:30:00Z"},
             {"amount": "100", "at": "2024-05-01T00:00:00.250000Z"}]
    export = tmp_path / "money.jsonl"
    export.write_text("".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"
                              for line in lines), encoding="utf-8")
    assert digests == {openssl_sm3(export)}


# ---- validation and its reasons ------------------------------------------------------------

def test_round_trip_and_normal_form() -> None:
    spec = ProductSpec.from_json(spec_json(CSV_SOURCE, modes=["homomorphic", "sandbox"]))
    assert spec.modes == (ComputeMode.SANDBOX, ComputeMode.HOMOMORPHIC)
    assert ProductSpec.from_json(spec.to_json()) == spec
    assert ProductSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert spec.columns[2].type is ColumnType.NUMBER and spec.level is Level.GENERAL


@pytest.mark.parametrize("product_id", [
    "a", "grid-load-2", "urn:ts:product:grid-load", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
    "urn:example:a/b%2Fc",
])
def test_valid_ids(product_id: str) -> None:
    assert ProductSpec.from_json(spec_json(CSV_SOURCE, id=product_id)).id == product_id


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"id": "Grid"}, "/id"),
    ({"id": "grid--load"}, "/id"),
    ({"id": "-grid"}, "/id"),
    ({"id": "a" * 65}, "/id"),
    ({"id": "urn:x:short-nid"}, "/id"),
    ({"id": "URN:ts:a"}, "/id"),
    ({"id": "urn:ts:a?b"}, "/id"),
    ({"id": "urn:ts:" + "a" * 200}, "/id"),
    ({"id": 7}, "/id"),
    ({"title": ""}, "/title"),
    ({"title": "   "}, "/title"),
    ({"title": "x" * 201}, "/title"),
    ({"title": "two\nlines"}, "/title"),
    ({"description": "x" * 5001}, "/description"),
    ({"keywords": ["k"] * 2}, "/keywords/1"),
    ({"keywords": [f"k{i}" for i in range(33)]}, "/keywords"),
    ({"keywords": ["x" * 65]}, "/keywords/0"),
    ({"keywords": "people"}, "/keywords"),
    ({"category": "health/"}, "/category"),
    ({"level": "secret"}, "/level"),
    ({"level": "General"}, "/level"),
    ({"columns": []}, "/columns"),
    ({"columns": [{"name": f"c{i}", "type": "string"} for i in range(501)],
      "preview": []}, "/columns"),
    ({"columns": [{"name": "", "type": "string"}], "preview": []}, "/columns/0/name"),
    ({"columns": [{"name": "x", "type": "string", "nullable": True}], "preview": []},
     "/columns/0/nullable"),
    ({"preview": [PREVIEW[0]] * 21}, "/preview"),
    ({"preview": ["row"]}, "/preview/0"),
    ({"source": {"kind": "xml", "path": "/x"}}, "/source"),
    ({"source": {"kind": "csv", "path": "relative.csv"}}, "/source/path"),
    ({"source": {"kind": "csv"}}, "/source/path"),
    ({"source": {"kind": "parquet", "path": "/x", "url": "y"}}, "/source/url"),
    ({"source": {"kind": "sql", "url": "mysql://h/db", "table": "t"}}, "/source/url"),
    ({"source": {"kind": "sql", "url": "not a url", "table": "t"}}, "/source/url"),
    ({"source": {"kind": "sql", "url": "sqlite://", "table": "t"}}, "/source/url"),
    ({"source": {"kind": "sql", "url": "sqlite:///rel.db", "table": "t"}}, "/source/url"),
    ({"source": {"kind": "sql", "url": "sqlite:////x.db", "table": ""}}, "/source/table"),
    ({"modes": []}, "/modes"),
    ({"modes": ["sandbox", "sandbox"]}, "/modes/1"),
    ({"modes": ["teleport"]}, "/modes/0"),
    ({"modes": "sandbox"}, "/modes"),
    ({"offers": [{"target": "x"}]}, "/offers/0"),
    ({"offers": [{"permission": {"action": "use"}}]}, "/offers/0/permission"),
    ({"offers": [{"permission": ["use"]}]}, "/offers/0/permission"),
    ({"offers": [{"@id": "", "permission": []}]}, "/offers/0/@id"),
    ({"offers": [{"@id": "o", "permission": []}, {"@id": "o", "obligation": []}]},
     "/offers/1/@id"),
    ({"offers": [{"permission": [{"count": 2**60}]}]}, "/offers/0"),
    ({"offers": ["policy"]}, "/offers/0"),
    ({"approval_required": 1}, "/approval_required"),
    ({"approval_required": "true"}, "/approval_required"),
    ({"unexpected": 1}, "/unexpected"),
]


@pytest.mark.parametrize(("change", "field"), MALFORMED)
def test_malformed(change: dict[str, Any], field: str) -> None:
    error = refused(spec_json(CSV_SOURCE, **change))
    assert (error.reason, error.field) == ("malformed", field), error


@pytest.mark.parametrize(("obj", "field"), [
    ([], ""),
    ("spec", ""),
    (None, ""),
    ({**spec_json(CSV_SOURCE), "preview": [{**PREVIEW[0], "score": float("nan")}]},
     "/preview/0/score"),
    ({**spec_json(CSV_SOURCE), "offers": [{"permission": [{1: "x"}]}]}, "/offers/0/permission/0"),
    ({**spec_json(CSV_SOURCE), "keywords": ("a", "b")}, "/keywords"),
    ({**spec_json(CSV_SOURCE), "description": b"bytes"}, "/description"),
    ({**spec_json(CSV_SOURCE), "title": "lone \ud800 surrogate"}, "/title"),
    ({**spec_json(CSV_SOURCE), "preview": [{"\udfff": 1}]}, "/preview/0"),
    ({k: v for k, v in spec_json(CSV_SOURCE).items() if k != "source"}, "/source"),
])
def test_not_a_spec_object(obj: Any, field: str) -> None:
    error = refused(obj)
    assert (error.reason, error.field) == ("malformed", field)


def test_required_members() -> None:
    for member in ("id", "title", "category", "level", "columns", "source", "modes"):
        error = refused({k: v for k, v in spec_json(CSV_SOURCE).items() if k != member})
        assert (error.reason, error.field) == ("malformed", f"/{member}")


def test_unknown_column_type() -> None:
    columns = [*COLUMNS[:1], {"name": "id", "type": "int"}, *COLUMNS[2:]]
    error = refused(spec_json(CSV_SOURCE, columns=columns))
    assert (error.reason, error.field) == ("unknown-column-type", "/columns/1/type")
    assert "'int'" in error.detail


def test_duplicate_column() -> None:
    error = refused(spec_json(CSV_SOURCE, columns=[*COLUMNS, COLUMNS[3]]))
    assert (error.reason, error.field) == ("duplicate-column", "/columns/6/name")


@pytest.mark.parametrize("category", ["space", "Finance", "/x", ""])
def test_unknown_category(category: str) -> None:
    error = refused(spec_json(CSV_SOURCE, category=category))
    assert (error.reason, error.field) == ("unknown-category", "/category")


@pytest.mark.parametrize("category", [*DOMAINS, "finance/credit records", "other/风电/场站"])
def test_known_categories(category: str) -> None:
    assert ProductSpec.from_json(spec_json(CSV_SOURCE, category=category)).category == category


@pytest.mark.parametrize(("row", "field"), [
    ({**PREVIEW[0], "id": "1"}, "/preview/0/id"),
    ({**PREVIEW[0], "id": 1.0}, "/preview/0/id"),
    ({**PREVIEW[0], "id": True}, "/preview/0/id"),
    ({**PREVIEW[0], "id": 2**53}, "/preview/0/id"),
    ({**PREVIEW[0], "score": "2.5"}, "/preview/0/score"),
    ({**PREVIEW[0], "active": 1}, "/preview/0/active"),
    ({**PREVIEW[0], "name": 5}, "/preview/0/name"),
    ({**PREVIEW[0], "born": "2023-02-29"}, "/preview/0/born"),
    ({**PREVIEW[0], "born": "20240517"}, "/preview/0/born"),
    ({**PREVIEW[0], "seen": "2024-05-17 08:30:00"}, "/preview/0/seen"),
    ({**PREVIEW[0], "seen": "2024-05-17"}, "/preview/0/seen"),
    ({k: v for k, v in PREVIEW[0].items() if k != "seen"}, "/preview/0/seen"),
    ({**PREVIEW[0], "a/b~c": 1}, "/preview/0/a~1b~0c"),
])
def test_preview_mismatch(row: dict[str, Any], field: str) -> None:
    error = refused(spec_json(CSV_SOURCE, preview=[row]))
    assert (error.reason, error.field) == ("preview-mismatch", field)


# ---- hypothesis: preview rows --------------------------------------------------------------

MAX_SAFE = 2**53 - 1
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=20),
    "integer": st.integers(-MAX_SAFE, MAX_SAFE),
    "number": st.integers(-MAX_SAFE, MAX_SAFE) | st.floats(allow_nan=False,
                                                           allow_infinity=False),
    "boolean": st.booleans(),
    "date": st.dates().map(date.isoformat),
    "datetime": st.builds(
        lambda dt, offset: dt.isoformat() + offset,
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.sampled_from(["", "Z", "+08:00", "-05:30"]),
    ),
}
# A value of each type that is valid for no other type (None is valid for every type).
WRONG: dict[str, list[Any]] = {
    "string": [1, True, 2.5, [], {}],
    "integer": ["1", 1.5, True, 2**53, [], {}],
    "number": ["1.5", True, -(2**53), {}],
    "boolean": [0, "true", 1.0, []],
    "date": ["2024-1-01", "2024-01-01T00:00:00", 20240101, "2024-13-01"],
    "datetime": ["2024-01-01", "2024-01-01T25:00:00", "2024-01-01T00:00", 1.5],
}


@st.composite
def columns_and_rows(draw: st.DrawFn) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    names = draw(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
                                  min_size=1, max_size=12),
                          min_size=1, max_size=6, unique=True))
    types = draw(st.lists(st.sampled_from(list(ColumnType)), min_size=len(names),
                          max_size=len(names)))
    columns = [{"name": n, "type": str(t)} for n, t in zip(names, types, strict=True)]
    rows = draw(st.lists(
        st.fixed_dictionaries({c["name"]: st.none() | VALUES[c["type"]] for c in columns}),
        max_size=20))
    return columns, rows


@given(columns_and_rows())
def test_valid_preview_rows_are_accepted_and_mask_to_valid_rows(
        drawn: tuple[list[dict[str, str]], list[dict[str, Any]]]) -> None:
    columns, rows = drawn
    general = ProductSpec.from_json(spec_json(CSV_SOURCE, columns=columns, preview=rows))
    assert public_preview(general) == rows
    important = ProductSpec.from_json(spec_json(CSV_SOURCE, columns=columns, preview=rows,
                                                level="important", modes=["federated"]))
    masked = public_preview(important)
    assert [list(r) for r in masked] == [[c["name"] for c in columns] for _ in rows]
    # Shape kept: the masked rows are valid preview rows of the same columns.
    assert ProductSpec.from_json(spec_json(CSV_SOURCE, columns=columns, preview=masked))


@given(columns_and_rows(), st.data())
def test_one_bad_value_is_a_preview_mismatch(
        drawn: tuple[list[dict[str, str]], list[dict[str, Any]]], data: st.DataObject) -> None:
    columns, rows = drawn
    rows = rows or [{c["name"]: None for c in columns}]
    i = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.sampled_from(columns))
    how = data.draw(st.sampled_from(["wrong-type", "missing", "extra"]))
    bad = dict(rows[i])
    name = column["name"]
    if how == "wrong-type":
        bad[name] = data.draw(st.sampled_from(WRONG[column["type"]]))
    elif how == "missing":
        del bad[name]
    else:
        name = name + "\u2603"
        while name in bad:
            name += "\u2603"
        bad[name] = None
    error = refused(spec_json(CSV_SOURCE, columns=columns, preview=[*rows[:i], bad]))
    pointer = "/" + name.replace("~", "~0").replace("/", "~1")
    assert (error.reason, error.field) == ("preview-mismatch", f"/preview/{i}{pointer}")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from([*spec_json(CSV_SOURCE), "x"]), JSON, max_size=13)
       | JSON, st.data())
def test_only_product_invalid_escapes(obj: Any, data: st.DataObject) -> None:
    """Any JSON-like value (alone, or replacing members of a valid spec) is either a spec or a
    ProductInvalid with a known reason and a JSON Pointer."""
    if isinstance(obj, dict) and data.draw(st.booleans()):
        obj = {**spec_json(CSV_SOURCE), **obj}
    try:
        ProductSpec.from_json(obj)
    except ProductInvalid as error:
        assert error.reason in REASONS
        assert error.field == "" or error.field.startswith("/")
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# ---- classification (GB/T 43697-2024) ------------------------------------------------------

def test_general_data_keeps_what_the_provider_says() -> None:
    spec = ProductSpec.from_json(spec_json(CSV_SOURCE, modes=["sandbox"]))
    policy = effective_policy(spec)
    assert spec.approval_required is False and policy.approval_required is False
    assert policy.modes == {ComputeMode.SANDBOX} and policy.rules == ()
    assert policy.offers_allowed and policy.publishable and not policy.preview_masked
    assert public_preview(spec) == PREVIEW
    check_publishable(spec)
    check_classification(spec)


@pytest.mark.parametrize("level", ["important", "core"])
@pytest.mark.parametrize("modes", [["sandbox"], ["federated", "sandbox"]])
def test_sandbox_refused_for_important_and_core(level: str, modes: list[str]) -> None:
    error = refused(spec_json(CSV_SOURCE, level=level, modes=modes, offers=[]))
    assert (error.reason, error.rule) == ("classification-forbids", "privacy-modes-only")
    assert error.field == f"/modes/{modes.index('sandbox')}"
    assert error.detail.startswith("privacy-modes-only:")


def test_important_data_forces_approval() -> None:
    spec = ProductSpec.from_json(spec_json(CSV_SOURCE, level="important",
                                           modes=["homomorphic", "federated"]))
    assert spec.approval_required is True
    policy = effective_policy(spec)
    assert policy.approval_required is True
    assert policy.modes == {ComputeMode.FEDERATED, ComputeMode.HOMOMORPHIC}
    assert policy.offers_allowed and policy.publishable and policy.preview_masked
    assert policy.rules == ("privacy-modes-only", "approval-required", "masked-preview")
    check_publishable(spec)
    assert ProductSpec.from_json(spec.to_json()) == spec
    explicit = spec_json(CSV_SOURCE, level="important", modes=["federated"],
                         approval_required=True)
    assert ProductSpec.from_json(explicit).approval_required is True


@pytest.mark.parametrize("level", ["important", "core"])
def test_approval_cannot_be_turned_off(level: str) -> None:
    error = refused(spec_json(CSV_SOURCE, level=level, modes=["federated"], offers=[],
                              approval_required=False))
    assert (error.reason, error.field, error.rule) == (
        "classification-forbids", "/approval_required", "approval-required")


def test_core_data_is_registered_but_never_offered_or_published() -> None:
    error = refused(spec_json(CSV_SOURCE, level="core", modes=["federated"]))
    assert (error.reason, error.field, error.rule) == (
        "classification-forbids", "/offers/0", "core-not-offered")
    spec = ProductSpec.from_json(spec_json(CSV_SOURCE, level="core", modes=["federated"],
                                           offers=[]))
    policy = effective_policy(spec)
    assert spec.approval_required and policy.approval_required
    assert not policy.offers_allowed and not policy.publishable and policy.preview_masked
    assert "core-not-offered" in policy.rules and "core-not-published" in policy.rules
    with pytest.raises(ProductInvalid) as info:
        check_publishable(spec)
    assert (info.value.reason, info.value.field, info.value.rule) == (
        "classification-forbids", "/level", "core-not-published")
    # Adding an offer later means a new spec, which is refused the same way.
    with_offer = {**spec.to_json(), "offers": [{"permission": []}]}
    assert refused(with_offer).rule == "core-not-offered"


def test_check_classification_catches_a_spec_built_around_validation() -> None:
    spec = ProductSpec.from_json(spec_json(CSV_SOURCE))
    forged = spec.model_copy(update={"level": Level.IMPORTANT})
    with pytest.raises(ProductInvalid) as info:
        check_classification(forged)
    assert (info.value.field, info.value.rule) == ("/modes/0", "privacy-modes-only")
    for check in (effective_policy, check_publishable):
        with pytest.raises(ProductInvalid):
            check(forged)


@pytest.mark.parametrize("level", ["important", "core"])
def test_preview_masked_for_important_and_core(level: str) -> None:
    spec = ProductSpec.from_json(spec_json(CSV_SOURCE, level=level, modes=["federated"],
                                           offers=[]))
    assert public_preview(spec) == [
        {"name": "***", "id": None, "score": None, "active": None, "born": "1990-01-01",
         "seen": "2024-01-01T00:00:00+08:00"},
        {"name": None, "id": None, "score": None, "active": None, "born": None,
         "seen": "2024-01-01T00:00:00Z"},
    ]
    assert spec.preview == tuple(PREVIEW)  # the provider's own copy is untouched


@pytest.mark.parametrize(("column_type", "value", "masked"), [
    (ColumnType.STRING, "", "***"),
    (ColumnType.STRING, "secret", "***"),
    (ColumnType.INTEGER, 0, None),
    (ColumnType.NUMBER, -2.5, None),
    (ColumnType.BOOLEAN, False, None),
    (ColumnType.DATE, "2024-12-31", "2024-01-01"),
    (ColumnType.DATETIME, "2024-12-31T23:59:59.999999-05:30", "2024-01-01T00:00:00-05:30"),
    (ColumnType.DATETIME, "0001-02-03T04:05:06", "0001-01-01T00:00:00"),
    (ColumnType.STRING, None, None),
])
def test_mask_value(column_type: ColumnType, value: Any, masked: Any) -> None:
    assert mask_value(column_type, value) == masked

