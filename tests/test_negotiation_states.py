"""The negotiation state machine, tested from its table: every (state, message, sender) either
has exactly the transition the Dataspace Protocol defines or is refused."""

from __future__ import annotations

import itertools

import pytest

from trustspace.contracts.states import (
    TRANSITIONS,
    IllegalTransition,
    Message,
    Role,
    State,
    next_state,
)

ALL = list(itertools.product([None, *State], Message, Role))


@pytest.mark.parametrize(("state", "message", "sender"), ALL)
def test_every_combination_is_allowed_only_if_in_the_table(state: State | None,
                                                           message: Message,
                                                           sender: Role) -> None:
    if (state, message, sender) in TRANSITIONS:
        assert next_state(state, message, sender) == TRANSITIONS[(state, message, sender)]
    else:
        with pytest.raises(IllegalTransition):
            next_state(state, message, sender)


def test_the_rules_the_protocol_insists_on() -> None:
    accepted = {k for k, v in TRANSITIONS.items() if k[1] is Message.ACCEPTED}
    assert all(sender is Role.CONSUMER for _, _, sender in accepted)
    finalized = {k for k, v in TRANSITIONS.items() if v is State.FINALIZED}
    assert finalized == {(State.VERIFIED, Message.FINALIZED, Role.PROVIDER)}
    for state in (State.FINALIZED, State.TERMINATED):  # nothing after a terminal state
        assert not [k for k in TRANSITIONS if k[0] is state]
    for state in State:  # either party may terminate any live negotiation
        for role in Role:
            assert ((state, Message.TERMINATION, role) in TRANSITIONS) == (not state.terminal)


def test_the_happy_paths_reach_finalized() -> None:
    auto = [(Message.REQUEST, Role.CONSUMER), (Message.AGREEMENT, Role.PROVIDER),
            (Message.VERIFICATION, Role.CONSUMER), (Message.FINALIZED, Role.PROVIDER)]
    counter = [(Message.REQUEST, Role.CONSUMER), (Message.OFFER, Role.PROVIDER),
               (Message.ACCEPTED, Role.CONSUMER), (Message.AGREEMENT, Role.PROVIDER),
               (Message.VERIFICATION, Role.CONSUMER), (Message.FINALIZED, Role.PROVIDER)]
    for path in (auto, counter):
        state: State | None = None
        for message, sender in path:
            state = next_state(state, message, sender)
        assert state is State.FINALIZED
