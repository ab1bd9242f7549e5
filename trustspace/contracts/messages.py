"""Contract Negotiation Protocol messages of the Dataspace Protocol 2025-1, as JSON: built here,
and read strictly (the @type, the pids, the offer or agreement). trustspace's signed agreement
travels beside the standard `agreement` in the extension term ``ts:signedAgreement``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trustspace.registry.dsp import DSP_CONTEXT, TS_CONTEXT

from .states import Message, State

SIGNED_AGREEMENT = "ts:signedAgreement"

_TYPES = {
    "ContractRequestMessage": Message.REQUEST,
    "ContractOfferMessage": Message.OFFER,
    "ContractAgreementMessage": Message.AGREEMENT,
    "ContractAgreementVerificationMessage": Message.VERIFICATION,
    "ContractNegotiationTerminationMessage": Message.TERMINATION,
}
_EVENTS = {"ACCEPTED": Message.ACCEPTED, "FINALIZED": Message.FINALIZED}


class MessageInvalid(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True)
class Parsed:
    kind: Message
    provider_pid: str | None
    consumer_pid: str | None
    body: Mapping[str, Any]

    @property
    def offer(self) -> dict[str, Any]:
        offer = self.body.get("offer")
        if not isinstance(offer, dict) or not isinstance(offer.get("@id"), str):
            raise MessageInvalid("offer must be an object with an @id")
        return offer

    @property
    def callback(self) -> str | None:
        value = self.body.get("callbackAddress")
        return value if isinstance(value, str) else None

    @property
    def signed_agreement(self) -> dict[str, Any]:
        doc = self.body.get(SIGNED_AGREEMENT)
        if not isinstance(doc, dict):
            raise MessageInvalid(f"{SIGNED_AGREEMENT} (the SM2-signed agreement) is missing")
        return doc


def _context(with_ts: bool) -> list[str]:
    return [DSP_CONTEXT, TS_CONTEXT] if with_ts else [DSP_CONTEXT]


def _pid(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 100:
        raise MessageInvalid(f"{name} must be a string of 1..100 characters")
    return value


def parse(obj: object, expected: Sequence[Message] | None = None) -> Parsed:
    """Read a negotiation message; raise MessageInvalid for anything malformed."""
    if not isinstance(obj, dict):
        raise MessageInvalid("a message is a JSON object")
    context = obj.get("@context")
    if not isinstance(context, list) or DSP_CONTEXT not in context:
        raise MessageInvalid(f"@context must be an array containing {DSP_CONTEXT}")
    kind = _TYPES.get(str(obj.get("@type")))
    if obj.get("@type") == "ContractNegotiationEventMessage":
        kind = _EVENTS.get(str(obj.get("eventType")))
        if kind is None:
            raise MessageInvalid("eventType must be ACCEPTED or FINALIZED")
    if kind is None:
        raise MessageInvalid(f"unexpected @type {obj.get('@type')!r}")
    if expected is not None and kind not in expected:
        raise MessageInvalid(f"{obj.get('@type')} is not accepted at this endpoint")
    return Parsed(kind, _pid(obj.get("providerPid"), "providerPid"),
                  _pid(obj.get("consumerPid"), "consumerPid"), obj)


def _base(kind: str, provider_pid: str | None, consumer_pid: str | None,
          with_ts: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"@context": _context(with_ts), "@type": kind}
    if provider_pid:
        message["providerPid"] = provider_pid
    if consumer_pid:
        message["consumerPid"] = consumer_pid
    return message


def request(consumer_pid: str, provider_pid: str | None, offer: Mapping[str, Any],
            callback: str | None) -> dict[str, Any]:
    message = _base("ContractRequestMessage", provider_pid, consumer_pid)
    message["offer"] = {"@type": "Offer", **offer}
    if callback:
        message["callbackAddress"] = callback
    return message


def offer(provider_pid: str, consumer_pid: str | None, offer: Mapping[str, Any],
          callback: str | None) -> dict[str, Any]:
    message = _base("ContractOfferMessage", provider_pid, consumer_pid)
    message["offer"] = {"@type": "Offer", **offer}
    if callback:
        message["callbackAddress"] = callback
    return message


def agreement(provider_pid: str, consumer_pid: str, odrl: Mapping[str, Any],
              signed: Mapping[str, Any]) -> dict[str, Any]:
    message = _base("ContractAgreementMessage", provider_pid, consumer_pid, with_ts=True)
    message["agreement"] = dict(odrl)
    message[SIGNED_AGREEMENT] = dict(signed)
    return message


def verification(provider_pid: str, consumer_pid: str,
                 countersigned: Mapping[str, Any]) -> dict[str, Any]:
    message = _base("ContractAgreementVerificationMessage", provider_pid, consumer_pid,
                    with_ts=True)
    message[SIGNED_AGREEMENT] = dict(countersigned)
    return message


def event(provider_pid: str, consumer_pid: str, event_type: str) -> dict[str, Any]:
    message = _base("ContractNegotiationEventMessage", provider_pid, consumer_pid)
    message["eventType"] = event_type
    return message


def termination(provider_pid: str, consumer_pid: str, code: str,
                reasons: Sequence[str]) -> dict[str, Any]:
    message = _base("ContractNegotiationTerminationMessage", provider_pid, consumer_pid)
    message["code"] = code
    message["reason"] = list(reasons)
    return message


def negotiation(provider_pid: str | None, consumer_pid: str | None,
                state: State) -> dict[str, Any]:
    """The ContractNegotiation ACK body."""
    message = _base("ContractNegotiation", provider_pid, consumer_pid)
    message["state"] = state.value
    return message


def error(provider_pid: str | None, consumer_pid: str | None, code: str,
          reasons: Sequence[str]) -> dict[str, Any]:
    """The ContractNegotiationError body. The schema requires both pids; an unknown one is
    answered with the value the caller sent, or "unknown"."""
    return {"@context": [DSP_CONTEXT], "@type": "ContractNegotiationError",
            "providerPid": provider_pid or "unknown", "consumerPid": consumer_pid or "unknown",
            "code": code, "reason": list(reasons)}
