"""The contract negotiation state machine of the Dataspace Protocol 2025-1 (Contract Negotiation
Protocol, "States" and "State Machine"): one table of (state, message, sender) -> next state,
applied the same way by both parties, and one function that applies it."""

from __future__ import annotations

import enum
from typing import Final


class State(enum.StrEnum):
    REQUESTED = "REQUESTED"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    AGREED = "AGREED"
    VERIFIED = "VERIFIED"
    FINALIZED = "FINALIZED"
    TERMINATED = "TERMINATED"

    @property
    def terminal(self) -> bool:
        return self in (State.FINALIZED, State.TERMINATED)


class Message(enum.StrEnum):
    """A negotiation message, by what it does (the DSP @type, and the eventType of events)."""

    REQUEST = "ContractRequestMessage"
    OFFER = "ContractOfferMessage"
    ACCEPTED = "ContractNegotiationEventMessage:ACCEPTED"
    AGREEMENT = "ContractAgreementMessage"
    VERIFICATION = "ContractAgreementVerificationMessage"
    FINALIZED = "ContractNegotiationEventMessage:FINALIZED"
    TERMINATION = "ContractNegotiationTerminationMessage"


class Role(enum.StrEnum):
    PROVIDER = "provider"
    CONSUMER = "consumer"


S, M, R = State, Message, Role

# None stands for "no negotiation yet": the message that opens one.
TRANSITIONS: Final[dict[tuple[State | None, Message, Role], State]] = {
    (None, M.REQUEST, R.CONSUMER): S.REQUESTED,
    (None, M.OFFER, R.PROVIDER): S.OFFERED,
    (S.OFFERED, M.REQUEST, R.CONSUMER): S.REQUESTED,  # counter-request
    (S.REQUESTED, M.OFFER, R.PROVIDER): S.OFFERED,  # counter-offer
    (S.OFFERED, M.ACCEPTED, R.CONSUMER): S.ACCEPTED,
    (S.REQUESTED, M.AGREEMENT, R.PROVIDER): S.AGREED,
    (S.ACCEPTED, M.AGREEMENT, R.PROVIDER): S.AGREED,
    (S.AGREED, M.VERIFICATION, R.CONSUMER): S.VERIFIED,
    (S.VERIFIED, M.FINALIZED, R.PROVIDER): S.FINALIZED,
    **{(s, M.TERMINATION, r): S.TERMINATED
       for s in S if not s.terminal for r in R},
}


class IllegalTransition(Exception):
    def __init__(self, state: State | None, message: Message, sender: Role) -> None:
        self.state, self.message, self.sender = state, message, sender
        where = state.value if state else "no negotiation"
        super().__init__(f"{message.value} from the {sender.value} is not allowed in {where}")


def next_state(state: State | None, message: Message, sender: Role) -> State:
    """The state after `sender` sends `message` in `state`; raises IllegalTransition."""
    try:
        return TRANSITIONS[(state, message, sender)]
    except KeyError:
        raise IllegalTransition(state, message, sender) from None
