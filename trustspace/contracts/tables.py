"""Database tables of contract negotiation: the processes, the messages seen and to send, and
the agreements they produced."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trustspace.db import Base, UTCDateTime


class Negotiation(Base):
    """One contract negotiation as this node sees it (as provider or as consumer)."""

    __tablename__ = "negotiations"

    pid: Mapped[str] = mapped_column(String(100), primary_key=True)  # our own process id
    role: Mapped[str] = mapped_column(String(10))  # provider | consumer
    provider_pid: Mapped[str | None] = mapped_column(String(100), index=True)
    consumer_pid: Mapped[str | None] = mapped_column(String(100), index=True)
    state: Mapped[str] = mapped_column(String(12), index=True)
    counterparty_id: Mapped[str] = mapped_column(String(200))
    counterparty_url: Mapped[str] = mapped_column(String(500))
    dataset_id: Mapped[str] = mapped_column(String(200))
    offer: Mapped[dict[str, Any]] = mapped_column(JSON)  # the policy under discussion
    agreement: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # signed document
    agreement_id: Mapped[str | None] = mapped_column(String(100))
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    termination: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboundMessage(Base):
    """Digests of messages already applied, so a retried or duplicated message is a no-op."""

    __tablename__ = "negotiation_inbound"

    pid: Mapped[str] = mapped_column(String(100), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """A message to send to the other party, written in the transaction of the state change
    that caused it and sent at once; retried with backoff until the peer takes it."""

    __tablename__ = "negotiation_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pid: Mapped[str] = mapped_column(String(100), index=True)
    url: Mapped[str] = mapped_column(String(600))
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Agreement(Base):
    """A finalized agreement, signed by both parties: what every computation is checked
    against, until either party terminates it or the provider revokes it (contracts/ending.py;
    the `end_*` columns, all set together)."""

    __tablename__ = "agreements"

    agreement_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    pid: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(10))
    provider_id: Mapped[str] = mapped_column(String(200), index=True)
    consumer_id: Mapped[str] = mapped_column(String(200), index=True)
    dataset_id: Mapped[str] = mapped_column(String(200), index=True)
    data_digest: Mapped[str] = mapped_column(String(80))
    digest: Mapped[str] = mapped_column(String(80), unique=True)  # of the signed document
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The other party's key (PEM), to seal receipts to it; None on rows older than 0007.
    counterparty_key: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(200))  # participant id
    end_kind: Mapped[str | None] = mapped_column(String(12))  # termination | revocation
    end_code: Mapped[str | None] = mapped_column(String(100))
    end_reason: Mapped[str | None] = mapped_column(Text)
    end_receipt_id: Mapped[str | None] = mapped_column(String(100))  # both parties hold it


class AgreementUse(Base):
    """How many uses of an agreement have been consumed (the ODRL count constraint)."""

    __tablename__ = "agreement_uses"

    agreement_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
