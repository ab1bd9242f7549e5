"""Database tables of the ledger: this node's receipts and their way to the ledger, the
transparency log (entries, perfect-subtree hashes, signed checkpoints and their cosignatures),
and what this node, as a witness, last cosigned."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trustspace.db import Base, UTCDateTime


class StoredReceipt(Base):
    """A receipt this node issued or countersigned, with its evidence (存证) record: log index,
    inclusion proof and checkpoint, and on a chain the transaction and block.

    status: countersign (issued, waiting for the consumer's signature) -> pending (complete,
    to be submitted) -> logged; received for an ending the other party issued (it submits
    it). Written in the transaction of the state change that caused it; a worker moves it on,
    retrying with backoff."""

    __tablename__ = "receipts"

    receipt_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    agreement_id: Mapped[str | None] = mapped_column(String(100), index=True)
    product_id: Mapped[str | None] = mapped_column(String(200), index=True)
    provider_id: Mapped[str] = mapped_column(String(200), index=True)
    consumer_id: Mapped[str] = mapped_column(String(200), index=True)
    digest: Mapped[str] = mapped_column(String(80), unique=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12), index=True)
    counterparty_url: Mapped[str | None] = mapped_column(String(500))
    counterparty_key: Mapped[str | None] = mapped_column(Text)  # PEM, to check its signature
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    log_index: Mapped[int | None] = mapped_column(BigInteger)
    log_size: Mapped[int | None] = mapped_column(BigInteger)  # the tree size of the proof
    inclusion: Mapped[list[str] | None] = mapped_column(JSON)  # hex hashes
    checkpoint: Mapped[str | None] = mapped_column(Text)  # signed note
    logged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    chain_tx: Mapped[str | None] = mapped_column(String(80))
    chain_block: Mapped[int | None] = mapped_column(BigInteger)


class LogHead(Base):
    """The size of a log: the row an appender locks, so appends are serialised."""

    __tablename__ = "log_heads"

    origin: Mapped[str] = mapped_column(String(200), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LogEntry(Base):
    """One leaf of the transparency log: a complete signed receipt. The leaf is the receipt's
    canonical JSON, signatures included, so altering any byte of it breaks its proofs."""

    __tablename__ = "log_entries"

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    receipt_id: Mapped[str] = mapped_column(String(100), unique=True)
    digest: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(20))
    agreement_id: Mapped[str | None] = mapped_column(String(100), index=True)
    product_id: Mapped[str | None] = mapped_column(String(200), index=True)
    provider_id: Mapped[str] = mapped_column(String(200), index=True)
    consumer_id: Mapped[str] = mapped_column(String(200), index=True)
    submitter: Mapped[str] = mapped_column(String(200))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LogNode(Base):
    """The hash of a perfect subtree: leaves [idx·2^level, (idx+1)·2^level)."""

    __tablename__ = "log_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogCheckpoint(Base):
    """A signed tree head, as a C2SP signed note; cosignatures are added to `note` as
    witnesses return them."""

    __tablename__ = "log_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64))  # hex
    note: Mapped[str] = mapped_column(Text)
    cosignatures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    chain_tx: Mapped[str | None] = mapped_column(String(80))
    chain_block: Mapped[int | None] = mapped_column(BigInteger)


class WitnessView(Base):
    """The newest checkpoint of a log this node has checked and cosigned, as a witness."""

    __tablename__ = "witness_views"

    origin: Mapped[str] = mapped_column(String(200), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
