"""The storage layer, as one suite run against SQLite and PostgreSQL: migrations, times, the
replay-protection store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import trustspace.connector.tables  # noqa: F401 - registers every table
from tests.nodes import PostgresDatabases
from trustspace.connector.tables import NodeState
from trustspace.db import Base, Database, JSONText, insert_many
from trustspace.ledger.tables import LogNode


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    pg = PostgresDatabases()
    url = pg.create() if request.param == "postgresql" else f"sqlite:///{tmp_path / 'n.db'}"
    database = Database(url)
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()
        pg.drop_all()


def test_migrations_build_exactly_the_models_and_are_idempotent(db: Database) -> None:
    db.migrate()  # a second run changes nothing
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'w.db'}")
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.dispose()


def test_times_come_back_aware_and_in_utc(db: Database) -> None:
    t = datetime(2026, 11, 26, 20, 0, tzinfo=timezone(timedelta(hours=8)))
    with db.transaction() as session:
        session.add(NodeState(key="k", value={"a": 1}, updated_at=t))
    with db.read() as session:
        row = session.get(NodeState, "k")
        assert row is not None and row.updated_at == t and row.updated_at.tzinfo == UTC
    with pytest.raises(Exception, match="naive"), db.transaction() as session:
        session.add(NodeState(key="n", value={}, updated_at=datetime(2026, 1, 1)))


def test_insert_many_stores_what_the_orm_would(db: Database) -> None:
    """Bulk rows come back as ORM-inserted ones would: aware UTC times, JSON values, bytes; JSON
    text already serialised is kept as it is, byte for byte."""
    t = datetime(2026, 11, 26, 20, 0, tzinfo=timezone(timedelta(hours=8)))
    with db.transaction() as session:
        insert_many(session, NodeState, ("value", "key"),  # not in the table's column order
                    [({"x": [1, "é", None]}, "a"), (JSONText('{"y": 2,"z":[]}'), "b")],
                    updated_at=t)
        insert_many(session, LogNode, ("level", "idx", "hash"), [(0, 7, bytes(range(32)))])
        insert_many(session, LogNode, ("level", "idx", "hash"), [])
    with db.read() as session:
        a, b = session.get(NodeState, "a"), session.get(NodeState, "b")
        assert a is not None and b is not None
        assert (a.value, b.value) == ({"x": [1, "é", None]}, {"y": 2, "z": []})
        assert a.updated_at == t and a.updated_at.tzinfo == UTC
        assert session.connection().exec_driver_sql(
            "SELECT CAST(value AS TEXT) FROM node_state WHERE key = 'b'").scalar() == \
            '{"y": 2,"z":[]}'
        node = session.get(LogNode, (0, 7))
        assert node is not None and node.hash == bytes(range(32))


def test_a_transaction_that_fails_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.add(NodeState(key="half", value={}, updated_at=datetime.now(UTC)))
        session.flush()
        raise RuntimeError("crash in the middle")
    with db.read() as session:
        assert session.get(NodeState, "half") is None


def test_uses_are_consumed_atomically_under_concurrency(db: Database) -> None:
    """Eight threads race for five uses: exactly five succeed, on either backend."""
    from concurrent.futures import ThreadPoolExecutor

    from trustspace.contracts.usage import UsesExhausted, consume, uses

    def attempt(_: int) -> bool:
        try:
            with db.transaction() as session:
                consume(session, "urn:uuid:agreement", 5, datetime.now(UTC))
            return True
        except UsesExhausted:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(24)))
    assert results.count(True) == 5
    with db.read() as session:
        assert uses(session, "urn:uuid:agreement") == 5
    with db.transaction() as session:  # no limit: metering only
        assert consume(session, "urn:uuid:other", None, datetime.now(UTC)) == 1
