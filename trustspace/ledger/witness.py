"""A member node as a witness of the data space's log: it cosigns a new checkpoint only if it
is consistent with the last one it cosigned, so the log cannot show different histories to
different members without a witness catching it (the idea of C2SP tlog-witness).

The log sends the checkpoint, the size it believes the witness last saw, and a consistency
proof from that size. The witness answers with its cosignature line, or refuses: `size-mismatch`
(it saw another size; the answer says which, so the log can retry), `rollback` (older than what
it saw), `fork` (same size, another root), `inconsistent` (the proof fails), `bad-signature`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from trustspace.crypto import Signer, SM2PublicKey

from . import merkle
from .checkpoint import SignedNote, add_cosignature, verify_note
from .errors import LedgerError, NoteInvalid, ProofInvalid
from .tables import WitnessView


class WitnessRefused(LedgerError):
    def __init__(self, status: int, reason: str, detail: str, known_size: int | None = None
                 ) -> None:
        self.status = status
        self.known_size = known_size
        super().__init__(reason, detail)


def cosign(session: Session, note_text: str, old_size: int, proof: Sequence[bytes], *,
           log_name: str, log_key: SM2PublicKey, name: str, signer: Signer,
           now: datetime) -> SignedNote:
    """Check a new checkpoint against what this witness saw and cosign it; returns the note
    with only this witness's cosignature line."""
    try:
        note = SignedNote.parse(note_text)
        verified = verify_note(note, {log_name: log_key})
        checkpoint = note.checkpoint()
    except NoteInvalid as exc:
        raise WitnessRefused(400, "bad-signature" if exc.reason != "malformed" else "malformed",
                             str(exc)) from None
    if log_name not in verified.signers:
        raise WitnessRefused(400, "bad-signature", "the checkpoint is not signed by the log")
    view = session.get(WitnessView, checkpoint.origin, with_for_update=True)
    known_size = 0 if view is None else view.size
    known_root = merkle.empty_root() if view is None else bytes.fromhex(view.root)
    if checkpoint.size < known_size:
        raise WitnessRefused(409, "rollback", f"size {checkpoint.size} is older than the "
                             f"{known_size} already cosigned", known_size)
    if old_size != known_size:
        raise WitnessRefused(409, "size-mismatch", f"the last size cosigned here is "
                             f"{known_size}, not {old_size}", known_size)
    if checkpoint.size == known_size and checkpoint.root_hash != known_root:
        raise WitnessRefused(409, "fork", f"a different root for size {known_size}: the log "
                             "shows two histories", known_size)
    try:
        merkle.verify_consistency(known_size, checkpoint.size, known_root,
                                  checkpoint.root_hash, proof)
    except ProofInvalid as exc:
        raise WitnessRefused(422, "inconsistent", f"size {checkpoint.size} does not extend "
                             f"the {known_size} cosigned before: {exc}", known_size) from None
    if view is None:
        view = WitnessView(origin=checkpoint.origin)
        session.add(view)
    view.size, view.root = checkpoint.size, checkpoint.root_hash.hex()
    view.note, view.updated_at = note.text(), now
    cosigned = add_cosignature(SignedNote(note.body, ()), name, signer, int(now.timestamp()))
    return cosigned
