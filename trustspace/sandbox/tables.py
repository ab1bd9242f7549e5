"""Database table of jobs: compute-to-data transfer processes, as the provider (who runs them)
and as the consumer (who asked) see them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trustspace.db import Base, UTCDateTime


class Job(Base):
    """One job. On the provider it is also the work queue: a worker claims a queued job by
    locking its row (SKIP LOCKED on PostgreSQL) and holds a lease while it runs."""

    __tablename__ = "jobs"

    pid: Mapped[str] = mapped_column(String(100), primary_key=True)  # our own process id
    role: Mapped[str] = mapped_column(String(10))  # provider | consumer
    provider_pid: Mapped[str | None] = mapped_column(String(100), index=True)
    consumer_pid: Mapped[str] = mapped_column(String(100), index=True)
    state: Mapped[str] = mapped_column(String(12), index=True)
    counterparty_id: Mapped[str] = mapped_column(String(200), index=True)
    counterparty_url: Mapped[str] = mapped_column(String(500))
    counterparty_key: Mapped[str] = mapped_column(Text, default="")  # PEM (provider side)
    agreement_id: Mapped[str] = mapped_column(String(100), index=True)
    dataset_id: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20))
    code: Mapped[bytes] = mapped_column(LargeBinary)  # the bundle (zip)
    code_digest: Mapped[str] = mapped_column(String(80))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the consumer-signed job request
    request_digest: Mapped[str] = mapped_column(String(80))
    approval: Mapped[str] = mapped_column(String(12))  # not-required | pending | approved
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the policy engine's
    queued: Mapped[bool] = mapped_column(default=False, index=True)  # provider: ready to run
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the sealed result (envelope)
    result_digest: Mapped[str | None] = mapped_column(String(80))
    result_bytes: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(20))  # succeeded | failed | refused
    reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # code and detail
    receipt_id: Mapped[str | None] = mapped_column(String(100))  # delivery or refusal
    log: Mapped[str | None] = mapped_column(Text)  # provider only: the job's stdout/stderr
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # consumer, federated: each exchange of the run as it ended (`trustspace fl run` reports)
    progress: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
