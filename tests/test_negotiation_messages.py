"""Every negotiation message trustspace sends validates against the DSP 2025-1 schemas, and the
specification's own example messages are read."""

from __future__ import annotations

import pytest

from tests.dsp_schemas import example, validator
from trustspace.contracts import messages
from trustspace.contracts.states import Message, State
from trustspace.crypto import SM2PrivateKey, sign_document

OFFER = {"@id": "urn:ts:offer:1", "target": "urn:ts:product:x",
         "permission": [{"action": "use", "constraint": [
             {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "research"}]}]}
P, C = "urn:uuid:provider-pid", "urn:uuid:consumer-pid"


def _signed() -> dict[str, object]:
    return sign_document("trustspace.agreement", {"x": 1}, SM2PrivateKey.generate()).to_json()


AGREEMENT = {"@id": "urn:uuid:agreement", "@type": "Agreement", "target": "urn:ts:product:x",
             "assigner": "urn:trustspace:participant:p", "assignee": "urn:trustspace:participant:c",
             "timestamp": "2026-11-26T12:00:00Z", "permission": OFFER["permission"]}

OURS = [
    ("contract-request-message-schema.json", messages.request(C, None, OFFER, "http://c")),
    ("contract-request-message-schema.json", messages.request(C, P, OFFER, None)),
    ("contract-offer-message-schema.json", messages.offer(P, C, OFFER, None)),
    ("contract-agreement-message-schema.json", messages.agreement(P, C, AGREEMENT, _signed())),
    ("contract-agreement-verification-message-schema.json",
     messages.verification(P, C, _signed())),
    ("contract-negotiation-event-message-schema.json", messages.event(P, C, "ACCEPTED")),
    ("contract-negotiation-event-message-schema.json", messages.event(P, C, "FINALIZED")),
    ("contract-negotiation-termination-message-schema.json",
     messages.termination(P, C, "refused", ["no"])),
    ("contract-negotiation-schema.json", messages.negotiation(P, C, State.AGREED)),
    ("contract-negotiation-error-schema.json", messages.error(P, None, "x", ["y"])),
]


@pytest.mark.parametrize(("schema", "message"), OURS, ids=[f"{s}-{i}" for i, (s, _) in
                                                           enumerate(OURS)])
def test_our_messages_validate(schema: str, message: dict[str, object]) -> None:
    validator(f"negotiation/{schema}").validate(message)


@pytest.mark.parametrize(("name", "kind"), [
    ("contract-request-message_initial.json", Message.REQUEST),
    ("contract-request-message.json", Message.REQUEST),
    ("contract-offer-message_initial.json", Message.OFFER),
    ("contract-offer-message.json", Message.OFFER),
    ("contract-agreement-message.json", Message.AGREEMENT),
    ("contract-agreement-message-full.json", Message.AGREEMENT),
    ("contract-agreement-verification-message.json", Message.VERIFICATION),
    ("contract-negotiation-event-message.json", Message.ACCEPTED),
    ("contract-negotiation-termination-message.json", Message.TERMINATION),
])
def test_the_specifications_examples_are_read(name: str, kind: Message) -> None:
    parsed = messages.parse(example(f"negotiation/example/{name}"))
    assert parsed.kind is kind


@pytest.mark.parametrize("bad", [
    [], {"@type": "ContractRequestMessage"},
    {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "Nope"},
    {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
     "@type": "ContractNegotiationEventMessage", "eventType": "REJECTED"},
    {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
     "@type": "ContractRequestMessage", "consumerPid": 7},
])
def test_malformed_messages_are_refused(bad: object) -> None:
    with pytest.raises(messages.MessageInvalid):
        messages.parse(bad)
