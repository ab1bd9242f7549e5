"""Alembic environment: trustspace runs migrations programmatically (Database.migrate), handing
over an open connection; `alembic -x url=...` from a shell works too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import trustspace.connector.tables  # noqa: F401 - registers every table on Base.metadata
from trustspace.db import Base, make_engine

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the database with: alembic -x url=<database url> ...")
    with make_engine(url).begin() as conn:
        _run(conn)
