"""Contracts: ODRL usage policies and their engine, the negotiation state machine and its
messages, agreements signed by both parties, and the atomic use counter."""

from .negotiation import AGREEMENT_TYPE, NegotiationRefused, check_policy
from .policy import Decision, Policy, PolicyInvalid, Request, apply_floor, compile_policy, evaluate
from .states import IllegalTransition, Message, Role, State, next_state
from .usage import UsesExhausted, consume, uses

__all__ = [
    "AGREEMENT_TYPE",
    "Decision",
    "IllegalTransition",
    "Message",
    "NegotiationRefused",
    "Policy",
    "PolicyInvalid",
    "Request",
    "Role",
    "State",
    "UsesExhausted",
    "apply_floor",
    "check_policy",
    "compile_policy",
    "consume",
    "evaluate",
    "next_state",
    "uses",
]
