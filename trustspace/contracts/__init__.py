"""Contracts: ODRL usage policies and their engine, the negotiation state machine and its
messages, agreements signed by both parties (and their ending), and the atomic use counter."""

from .ending import AgreementEnded, in_force
from .negotiation import AGREEMENT_TYPE, NegotiationRefused, check_policy
from .policy import Decision, Policy, PolicyInvalid, Request, apply_floor, compile_policy, evaluate
from .states import IllegalTransition, Message, Role, State, next_state
from .usage import UsesExhausted, consume, uses

__all__ = [
    "AGREEMENT_TYPE",
    "AgreementEnded",
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
    "in_force",
    "next_state",
    "uses",
]
