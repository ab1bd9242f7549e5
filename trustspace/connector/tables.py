"""Tables of the node itself, and the one import that registers every table with the metadata
(Alembic's env.py imports this module)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

import trustspace.contracts.tables  # noqa: F401 - registers the negotiation tables
import trustspace.ledger.tables  # noqa: F401 - registers the receipts and the log
import trustspace.registry.tables  # noqa: F401 - registers the registry's tables
import trustspace.sandbox.tables  # noqa: F401 - registers the jobs
from trustspace.db import Base, UTCDateTime


class NodeState(Base):
    """Small named values the node keeps: its own membership credential, crawl marks."""

    __tablename__ = "node_state"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
