"""The node's database: one SQLAlchemy declarative base, engines for SQLite and PostgreSQL, and
Alembic migrations run programmatically.

SQLite (WAL, foreign keys on) is the embedded default; PostgreSQL is the server option. Every
state change goes through `Database.transaction()`, so it commits whole or not at all.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import DateTime, Dialect, Engine, MetaData, Table, create_engine, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS = Path(__file__).parent / "migrations"

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored and returned as aware UTC datetimes on every backend (SQLite keeps no
    time zone; returning naive values there would make comparisons backend-dependent)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: trustspace stores aware UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(str):
    """A value for a JSON column that is already JSON text: stored as it is, not serialised
    again (the transparency log stores the canonical bytes it hashed). Reads give the parsed
    value, as for any JSON column."""

    __slots__ = ()


def _json_dumps(value: Any) -> str:
    return value if type(value) is JSONText else json.dumps(value)


@dataclass(frozen=True)
class _Insert:
    sql: str  # as SQLAlchemy compiles it for the dialect
    named: bool  # named placeholders (a dict per row), else positional (a tuple per row)
    order: tuple[int, ...] | None  # positional: the value each placeholder takes, if reordered


@functools.lru_cache(maxsize=32)
def _insert_statement(table: Table, dialect: Dialect, names: tuple[str, ...]) -> _Insert:
    compiled = insert(table).compile(dialect=dialect, column_keys=list(names))
    if not compiled.positional:
        return _Insert(compiled.string, True, None)
    order = tuple(names.index(name) for name in compiled.positiontup or ())
    return _Insert(compiled.string, False, None if order == tuple(range(len(names))) else order)


def insert_many(session: Session, model: type[Base], columns: Sequence[str],
                rows: Iterable[Sequence[Any]], **same: Any) -> None:
    """INSERT into `model`'s table `rows` (the values of `columns`, in that order), with the
    `same` values in every row, in the session's transaction.

    What a Core executemany does (the statement SQLAlchemy compiles for the dialect, each value
    through its column type's bind processor, one executemany on the driver's cursor) without
    its per-row parameter dictionaries, and with `same` processed once. A log entry and its
    nodes: ORM bulk insert 60–67 µs, Core 32–33, this 28, raw sqlite3 24 (docs/performance.md,
    "Ledger"). The session is not flushed first."""
    table = cast(Table, model.__table__)
    conn = session.connection()
    dialect = conn.dialect
    names = (*columns, *same)
    statement = _insert_statement(table, dialect, names)

    def processor(name: str) -> Any:
        return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)

    fixed = tuple(p(value) if (p := processor(name)) else value for name, value in same.items())
    varying = [(i, p) for i, name in enumerate(columns) if (p := processor(name)) is not None]
    params: list[Any] = []
    for row in rows:
        if varying:
            row = list(row)
            for i, process in varying:
                row[i] = process(row[i])
        values = (*row, *fixed)
        if statement.named:
            params.append(dict(zip(names, values, strict=True)))
        elif statement.order is not None:
            params.append(tuple(values[i] for i in statement.order))
        else:
            params.append(values)
    if params:
        conn.exec_driver_sql(statement.sql, params)


WAL_CHECKPOINT_PAGES = 10_000  # 4 KiB pages


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               json_serializer=_json_dumps)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Checkpoint the WAL every ~40 MB instead of SQLite's 4 MB: a batch of 1,000
            # receipts writes ~2.7 MB, so the default copied pages back and fsynced twice every
            # other transaction (~7 of ~50 µs per appended receipt, docs/performance.md,
            # "Ledger"). Readers find pages in a long WAL through its hash index just as fast.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         json_serializer=_json_dumps)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; waiting here wakes at once, SQLite's busy handler
        # sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries.
        self._writer: Any = threading.RLock() if self.engine.dialect.name == "sqlite" \
            else nullcontext()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any exception."""
        with self._writer, self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
