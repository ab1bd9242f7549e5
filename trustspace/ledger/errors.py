"""The errors of the ledger.

Verification raises, it never returns False: each error carries `reason`, a short
machine-readable code (``root-mismatch``, ``bad-signature``, ...), and `detail` for people.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error raised by trustspace.ledger."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (f": {detail}" if detail else ""))


class ProofInvalid(LedgerError):
    """A Merkle inclusion or consistency proof does not verify (RFC 9162 §2.1.3.2, §2.1.4.2).

    Reasons: ``bad-index`` (leaf index not below the tree size), ``bad-size`` (sizes out of
    order or negative), ``bad-length`` (the proof has too many or too few hashes for the sizes),
    ``root-mismatch`` (inclusion: the computed root differs), ``old-root-mismatch`` /
    ``new-root-mismatch`` (consistency: the computed first / second root differs).
    """


class NoteInvalid(LedgerError):
    """A signed note or checkpoint is malformed or fails verification.

    Reasons: ``malformed`` (not a well-formed signed note or checkpoint), ``wrong-origin``
    (the checkpoint is for another log), ``bad-signature`` (a signature line from a known key
    does not verify), ``unknown-key`` (no signature line from a known key). `name` is the key
    name concerned, where there is one.
    """

    def __init__(self, reason: str, detail: str = "", name: str | None = None) -> None:
        self.name = name
        super().__init__(reason, detail)


class LedgerUnavailable(LedgerError):
    """The ledger cannot be reached right now (connection refused, timeout, 5xx): the caller
    keeps what it wanted to write and retries later."""


class ChainRejected(LedgerError):
    """An EVM chain refused a write: the transaction reverted, or the node would not take it.

    Reasons: the contract's custom error in kebab case (``already-recorded``,
    ``not-authorised``, ``not-owner``, ``batch-already-anchored``, ``empty-batch``,
    ``checkpoint-not-newer``, ``checkpoint-conflict``), ``out-of-gas``, ``reverted`` (no reason
    could be recovered) or ``refused`` (the node refused the transaction itself: funds, fees).
    `fields` holds the custom error's arguments by name (``receiptId``, ``blockNumber``, ...)
    and `tx_hash` the mined transaction, where there is one. Retrying does not help.
    """

    def __init__(self, reason: str, detail: str = "", *, tx_hash: str | None = None,
                 fields: dict[str, object] | None = None) -> None:
        self.tx_hash = tx_hash
        self.fields = dict(fields or {})
        super().__init__(reason, detail)
