"""Consuming an agreement's uses atomically: two jobs running at once can never both take the
last use. One conditional UPDATE ... RETURNING does it on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .tables import AgreementUse


class UsesExhausted(Exception):
    def __init__(self, agreement_id: str, limit: int) -> None:
        self.agreement_id, self.limit = agreement_id, limit
        super().__init__(f"agreement {agreement_id} allows {limit} use(s); all are used")


def uses(session: Session, agreement_id: str) -> int:
    used = session.scalar(select(AgreementUse.used).where(
        AgreementUse.agreement_id == agreement_id))
    return used or 0


def consume(session: Session, agreement_id: str, limit: int | None, now: datetime) -> int:
    """Take one use (the caller's transaction commits it); return how many are now used.

    Raises UsesExhausted when `limit` uses are already taken. `limit=None` counts without a
    bound (for metering)."""
    bind = session.get_bind()
    insert = pg_insert if bind.dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(AgreementUse).values(agreement_id=agreement_id, used=0,
                                                updated_at=now)
                    .on_conflict_do_nothing(index_elements=["agreement_id"]))
    stmt = update(AgreementUse).where(AgreementUse.agreement_id == agreement_id)
    if limit is not None:
        stmt = stmt.where(AgreementUse.used < limit)
    used = session.execute(stmt.values(used=AgreementUse.used + 1, updated_at=now)
                           .returning(AgreementUse.used)).scalar()
    if used is None:
        raise UsesExhausted(agreement_id, limit or 0)
    return int(used)
