"""One interface over the ledgers a node can write receipts to: its own transparency log
(`local`), the data space's shared log at the authority (`authority`), or an EVM chain that
anchors the log (`evm`). Each returns, per receipt, the evidence (存证) record it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from trustspace.crypto import SignedDocument

from .errors import LedgerUnavailable

__all__ = ["Evidence", "Ledger", "LedgerUnavailable"]


@dataclass(frozen=True)
class Evidence:
    """Where a receipt went: its log index, an inclusion proof at `size`, the signed checkpoint
    of that size, and on a chain the transaction and block."""

    receipt_id: str
    digest: str
    index: int
    size: int
    inclusion: Sequence[bytes]
    checkpoint: str
    duplicate: bool = False  # it was in the log already (a retry): same index as before
    chain_tx: str | None = None
    chain_block: int | None = None


class Ledger(Protocol):
    def submit(self, documents: Sequence[SignedDocument]) -> list[Evidence]:
        """Write complete receipts; idempotent by receipt id. Raises LedgerUnavailable when it
        cannot be reached (the caller retries) and ReceiptRejected for a receipt it refuses."""
        ...
