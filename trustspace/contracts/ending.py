"""Ending an agreement after it was finalized: a trustspace extension on top of the Dataspace
Protocol, whose FINALIZED state stays terminal (states.py).

Either party's operator may *terminate* an agreement; the provider's may also *revoke* it (the
data subject withdrew consent, say). The party that ends it, in one transaction, marks its row,
issues a termination or revocation receipt (signed by it alone, so it goes to the ledger as is;
this party alone submits it) and queues a notice carrying the receipt to the other party
(`NOTICE_PATH`). The other party checks that the receipt is its counterparty's, about this
agreement, marks its own row and keeps the receipt. From then on no job starts under the
agreement on either side (`in_force`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from trustspace.crypto import DocumentInvalid, SignedDocument, SM2PublicKey
from trustspace.ledger import receipts, store
from trustspace.ledger.tables import StoredReceipt
from trustspace.registry.credentials import Membership, iso

from .negotiation import Me
from .tables import Agreement, Negotiation, OutboxMessage

NOTICE_PATH = "/agreements/{agreement_id}/termination"
_REFUSAL_CODE = {receipts.Kind.TERMINATION.value: "agreement-terminated",
                 receipts.Kind.REVOCATION.value: "agreement-revoked"}
_PAST = {receipts.Kind.TERMINATION.value: "terminated",
         receipts.Kind.REVOCATION.value: "revoked"}
MAX_CODE, MAX_REASON = 100, 2000  # the code is a column of 100 characters


class EndingRefused(Exception):
    """An ending this node will not make or accept: a status, a reason and a detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        self.status, self.reason, self.detail = status, reason, detail
        super().__init__(f"{reason}: {detail}")


class AgreementEnded(Exception):
    """The agreement was terminated or revoked: `code` is the refusal's machine-readable
    reason (agreement-terminated | agreement-revoked)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code, self.detail = code, detail
        super().__init__(f"{code}: {detail}")


def status(agreement: Agreement) -> str:
    """active, terminated or revoked."""
    return _PAST.get(agreement.end_kind or "", "active")


def in_force(agreement: Agreement) -> None:
    """Raise AgreementEnded if the agreement may no longer be used."""
    if agreement.end_kind is None:
        return
    when = iso(agreement.ended_at) if agreement.ended_at else "?"
    raise AgreementEnded(_REFUSAL_CODE[agreement.end_kind],
                         f"agreement {agreement.agreement_id} was {status(agreement)} by "
                         f"{agreement.ended_by} at {when} ({agreement.end_code}: "
                         f"{agreement.end_reason})")


def end(session: Session, me: Me, agreement_id: str, kind: receipts.Kind, code: str,
        reason: str, now: datetime) -> Agreement:
    """This node's operator ends one of its agreements: mark it, issue the receipt, queue the
    notice to the other party."""
    _check_text(code, reason)
    row = session.get(Agreement, agreement_id, with_for_update=True)
    if row is None:
        raise EndingRefused(404, "unknown-agreement", f"no agreement {agreement_id}")
    if kind is receipts.Kind.REVOCATION and row.role != "provider":
        raise EndingRefused(403, "not-the-provider", "only the provider revokes an agreement; "
                            "a consumer terminates it")
    if row.end_kind is not None:
        raise EndingRefused(409, "already-ended", f"agreement {agreement_id} was "
                            f"{status(row)} already (receipt {row.end_receipt_id})")
    neg = session.get(Negotiation, row.pid)
    assert neg is not None  # noqa: S101 - an agreement comes out of its negotiation
    parties = receipts.Parties(provider=row.provider_id, consumer=row.consumer_id,
                               agreement_id=row.agreement_id, agreement_digest=row.digest)
    other = [SM2PublicKey.from_pem(row.counterparty_key.encode())] if row.counterparty_key \
        else []  # an ending seals nothing, so a row from before 0007 loses nothing
    content = receipts.Ending(kind, me.participant_id, code, reason, row.dataset_id)
    doc = receipts.issue(content, parties, me.signer, row.role, now, [*other, *me.regulators])
    store.keep(session, doc, status=store.PENDING, now=now)  # nothing to countersign
    _mark(row, receipts.Receipt(doc), now)
    session.add(OutboxMessage(
        pid=row.pid, url=neg.counterparty_url + NOTICE_PATH.format(agreement_id=agreement_id),
        message=notice(doc), attempts=0, next_attempt_at=now, failed=False, created_at=now))
    return row


def notice(doc: SignedDocument) -> dict[str, Any]:
    """The message that tells the other party (docs/protocol.md, "Ending an agreement")."""
    return {"agreementId": doc.body["agreementId"], "receipt": doc.to_json()}


def on_notice(session: Session, me: str, my_key: SM2PublicKey, sender: Membership,
              agreement_id: str, message: Mapping[str, Any], now: datetime) -> Agreement:
    """The other party ended our agreement `agreement_id`: check its receipt, mark our row,
    keep the receipt (the issuer submits it). A repeat of the same notice is a no-op."""
    document = message.get("receipt")
    if message.get("agreementId") != agreement_id or not isinstance(document, dict):
        raise EndingRefused(400, "malformed", 'expected {"agreementId": <the id in the path>, '
                            '"receipt": <signed receipt>}')
    row = session.get(Agreement, agreement_id, with_for_update=True)
    other = None if row is None else (row.consumer_id if row.role == "provider"
                                      else row.provider_id)
    if row is None or other != sender.participant_id:  # the same answer: reveals nothing
        raise EndingRefused(404, "unknown-agreement", f"no agreement {agreement_id} with you")
    try:
        receipt = receipts.verify_receipt(document, {sender.participant_id: sender.public_key,
                                                     me: my_key})
    except DocumentInvalid as exc:
        raise EndingRefused(400, "receipt-invalid", str(exc)) from None
    if receipt.kind not in receipts.ENDINGS:
        raise EndingRefused(400, "not-an-ending", f"a {receipt.kind.value} receipt ends nothing")
    if receipt.public.get("by") != sender.participant_id:
        raise EndingRefused(403, "not-the-issuer", "the receipt was not issued by you")
    _check_text(receipt.public.get("code"), receipt.public.get("reason"))
    named = (receipt.provider, receipt.consumer, receipt.agreement_id,
             receipt.document.body.get("agreementDigest"))
    product = receipt.public.get("productId")  # absent in receipts from before it was added
    if named != (row.provider_id, row.consumer_id, row.agreement_id, row.digest) \
            or product not in (None, row.dataset_id):
        raise EndingRefused(400, "agreement-mismatch", "the receipt names another agreement")
    if row.end_receipt_id == receipt.id:
        return row  # the notice again (its answer was lost)
    if row.end_kind is not None and row.ended_by == me:
        # Both parties ended it at the same time: ours stands here, theirs is kept beside it
        # (each issuer submits its own to the ledger, so the trace shows both).
        if session.get(StoredReceipt, receipt.id) is None:
            store.keep(session, receipt.document, status=store.RECEIVED, now=now)
        return row
    if row.end_kind is not None:
        raise EndingRefused(409, "already-ended", f"agreement {agreement_id} was "
                            f"{status(row)} already, by {row.ended_by} (receipt "
                            f"{row.end_receipt_id})")
    _mark(row, receipt, now)
    store.keep(session, receipt.document, status=store.RECEIVED, now=now)
    return row


def _check_text(code: object, reason: object) -> None:
    if not (isinstance(code, str) and 0 < len(code) <= MAX_CODE and isinstance(reason, str)
            and 0 < len(reason) <= MAX_REASON):
        raise EndingRefused(400, "malformed", f"an ending needs a code of 1 to {MAX_CODE} "
                            f"characters and a reason of 1 to {MAX_REASON}")


def _mark(row: Agreement, receipt: receipts.Receipt, now: datetime) -> None:
    public = receipt.public
    row.ended_at, row.ended_by, row.end_kind = now, str(public["by"]), receipt.kind.value
    row.end_code, row.end_reason = str(public["code"]), str(public["reason"])
    row.end_receipt_id = receipt.id
