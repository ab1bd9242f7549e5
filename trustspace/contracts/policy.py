"""The policy engine: the one place that decides whether a request is allowed by an offer's or an
agreement's ODRL policy.

    policy = compile_policy(offer)                       # once; raises PolicyInvalid
    apply_floor(policy, Level.IMPORTANT, product_modes)  # what the product's level forbids
    decision = evaluate(policy, request, now=now, uses_so_far=used)
    decision.permitted, decision.path, decision.reason   # and, when permitted, what to enforce

Policies are the JSON-LD objects of the Dataspace Protocol 2025-1 (negotiation/contract-schema.json:
Offer, Agreement, Permission, Prohibition, Duty, Constraint, LogicalConstraint) over the vocabulary
of `trustspace.contracts.vocabulary`. Evaluation is plain, deterministic and side-effect free:
the time (``now``) and the uses already consumed (``uses_so_far``) are inputs, nothing is read
from a clock or a database and no input is changed.

Compiling. Each constraint becomes a small checker object with one method, ``check(context) ->
Outcome``, composed by ``and`` / ``andSequence`` / ``or`` / ``xone`` combinators (after
sigstore-python's verification policies). Whatever the engine does not know -- an action other
than ``use``, a left operand, an operator, a logical keyword, a property of a policy, rule or
constraint, a profile, a malformed value -- is refused with `PolicyInvalid` (a reason and the
path into the policy, e.g. ``permission[1].constraint[0].and[0]``), never ignored.

Deciding (ODRL 2.2 Information Model: an action no permission allows is not permitted; and a
prohibition wins over a permission, as under ODRL's ``prohibit`` conflict strategy -- a policy
naming its own ``conflict`` strategy is refused). A request is permitted when, in this order:

1. its action is ``use``;
2. the policy's own conditions hold: its ``target`` is the request's target, an agreement's (or a
   targeted offer's) ``assignee`` is the requesting participant, and a purpose the request names
   is in the provider's purpose vocabulary;
3. no prohibition applies: a prohibition for ``use`` applies unless its constraints are known
   not to hold (one that has none always applies);
4. every policy-level obligation can be taken on (a deletion deadline that has passed cannot);
5. at least one permission holds: all of its constraints and of its duties' constraints hold.

Which permission grants matters only for what the caller must enforce: the first permission
that holds, in document order, grants, and its effects are the decision's (a provider who wants
the lighter permission preferred lists it first). A denial names every failed permission (path
and reason), or the prohibition / condition that refused; the first is `Decision.path` /
`Decision.reason`.

Three-valued evaluation (Kleene). A checker's outcome HOLDS, FAILS or is UNDETERMINED: a value it
needs is missing from the request, or has the wrong type (a type mismatch is a refusal with a
reason, never a Python exception). A permission grants only on HOLDS; a prohibition is lifted only
on FAILS. ``and``: FAILS if one fails, else UNDETERMINED if one is, else HOLDS. ``or``: HOLDS if
one holds, else UNDETERMINED if one is, else FAILS. ``xone``: FAILS if two hold or all fail,
HOLDS if exactly one holds and the others fail, else UNDETERMINED. ``andSequence``: the
constraints are evaluated in order and each only if all before it held; the first that does not
hold decides and the rest are not looked at. For an evaluation without side effects "in
sequence" can mean no more than that: it differs from ``and`` in which failure is reported and in
that an undetermined step stops the sequence (so it undetermines a prohibition that ``and`` would
have lifted). ODRL's temporal reading (satisfied one after the other over time) needs a history
the engine does not have. An empty ``or`` or ``xone`` is never satisfied and refused at compile
time; an empty ``and`` / ``andSequence`` holds (as no constraint does).

Effects. Some constraints do not only hold or fail but tell the caller what to enforce: ``count``
(a use limit), ``ts:minAggregation`` and ``ts:maxResultBytes`` (output rules on the results),
``ts:codeApproval`` (a flag: the provider's operator must approve the submitted code; the engine
does not decide it) and ``ts:deleteResultsBy`` (a duty: delete the results by a deadline). They
are allowed only where they always apply when their permission grants: on a permission's (or a
duty's) ``and`` chain, never under ``or`` / ``xone`` (what the caller must enforce must not
depend on which branch happened to hold), and never in a prohibition. Duties are written as
``ts:deleteResultsBy`` constraints of a permission, or as ODRL duties (a permission's ``duty``,
the policy's ``obligation``) with action ``ts:deleteResults`` and a ``ts:deleteResultsBy``
constraint.

Counting uses. ``count`` is the number of uses of the agreement including the one being decided:
``uses_so_far + 1``, where ``uses_so_far`` is what the caller's records say was consumed before.
``count lteq n`` holds while ``uses_so_far < n``. A permitted decision says ``uses == 1`` and
``use_limit == n`` (the smallest bound of the granting permission; ``lt n`` is ``n - 1``): the
caller consumes atomically, e.g. ``UPDATE ... SET uses = uses + 1 WHERE uses + 1 <= :limit``, and
refuses if no row changed (another job took the last use since this decision).

Purposes. The provider declares its purpose vocabulary in the policy (``"ts:purposes": [...]``)
or passes the product's (``compile_policy(..., purposes=...)``; a policy's own list must then be a
subset of it). A policy that constrains ``purpose`` without a vocabulary is refused (a deny-list
such as ``purpose neq marketing`` means nothing against purposes nobody declared), a purpose
constraint naming a term outside it is refused, and a request naming a purpose outside it is
denied.

Namespaces. ``ts:`` terms are read as trustspace's (`trustspace.registry.dsp.TS_NAMESPACE`)
whatever the enclosing message's ``@context`` says: the caller takes policies from messages it
has already read (`trustspace.registry.dsp` checks that context).

`apply_floor` checks a compiled policy against the product's classification level
(`trustspace.registry.classification`) and compute modes; it raises `PolicyInvalid` with the
level's rule name in ``rule``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from trustspace.registry.classification import (
    RULES,
    ClassificationForbids,
    ComputeMode,
    Level,
    check_approval,
    check_modes,
    check_offers,
)

from . import vocabulary as v
from .vocabulary import LeftOperand as L
from .vocabulary import Logical
from .vocabulary import Operator as Op

__all__ = [
    "APPROVAL_REQUIRED",
    "Rule",
    "RULE_PRODUCT_MODES",
    "Decision",
    "Duty",
    "Failure",
    "Flag",
    "OutputRule",
    "Policy",
    "PolicyInvalid",
    "Request",
    "apply_floor",
    "compile_policy",
    "evaluate",
]

APPROVAL_REQUIRED: Final = "approval-required"  # the flag ts:codeApproval raises
RULE_PRODUCT_MODES: Final = "product-modes"  # apply_floor: a mode the product does not offer


class PolicyInvalid(Exception):
    """A policy the engine refuses: ``reason`` says why, ``path`` where (``""`` for the policy
    itself, e.g. ``permission[0].constraint[1]``); ``rule`` names the classification rule for
    refusals by `apply_floor`."""

    def __init__(self, reason: str, path: str = "", *, rule: str | None = None) -> None:
        self.reason = reason
        self.path = path
        self.rule = rule
        super().__init__(f"{path}: {reason}" if path else reason)


# --- the request and the decision ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Request:
    """What is asked: by whom (participant id and the roles its membership credential gives),
    which action, for which purpose and target, in which compute mode, and what is known of the
    job (its code's digest, the aggregation k it declares, its result size). Unknown values are
    None. Fields are not checked here: the engine checks those a constraint needs, and refuses
    a value of the wrong type with a reason."""

    assignee: str
    roles: frozenset[str] = frozenset()
    action: str = v.USE
    purpose: str | None = None
    target: str | None = None
    compute_mode: ComputeMode | None = None
    code_digest: str | None = None
    aggregation_k: int | None = None
    result_bytes: int | None = None


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Duty:
    """Something the caller must record and see done: ``action`` (``ts:deleteResults``) by
    ``due``."""

    action: str
    due: datetime
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "due": self.due.isoformat(), "path": self.path}


@dataclass(frozen=True)
class Flag:
    """A condition the engine does not decide: ``approval-required`` (the provider's operator
    must approve the code with ``code_digest`` before the job runs)."""

    name: str
    path: str
    code_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"flag": self.name, "path": self.path, "codeDigest": self.code_digest}


@dataclass(frozen=True)
class OutputRule:
    """A rule the caller enforces on the results: ``minAggregation`` (every released value
    aggregates at least ``value`` records) or ``maxResultBytes`` (at most ``value`` bytes)."""

    name: str
    value: int
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.name, "value": self.value, "path": self.path}


@dataclass(frozen=True)
class _UseLimit:
    limit: int
    path: str


@dataclass(frozen=True)
class Effects:
    duties: tuple[Duty, ...] = ()
    flags: tuple[Flag, ...] = ()
    output_rules: tuple[OutputRule, ...] = ()
    use_limits: tuple[_UseLimit, ...] = ()

    def __add__(self, other: Effects) -> Effects:
        return Effects(self.duties + other.duties, self.flags + other.flags,
                       self.output_rules + other.output_rules, self.use_limits + other.use_limits)


NO_EFFECTS: Final = Effects()


@dataclass(frozen=True, kw_only=True)
class Decision:
    """Permit or deny. ``path`` and ``reason`` say which rule decided and why (for a denial the
    first of ``failures``, which lists every failed permission). A permit carries what the caller
    must enforce: ``duties``, ``flags`` (approval required), ``output_rules``, and the uses it
    consumes (``uses``, 1) against ``use_limit`` (None: no limit)."""

    permitted: bool
    policy_id: str | None
    path: str
    reason: str
    failures: tuple[Failure, ...] = ()
    duties: tuple[Duty, ...] = ()
    flags: tuple[Flag, ...] = ()
    output_rules: tuple[OutputRule, ...] = ()
    uses: int = 0
    use_limit: int | None = None

    @classmethod
    def deny(cls, *failures: Failure, policy_id: str | None) -> Decision:
        return cls(permitted=False, policy_id=policy_id, path=failures[0].path,
                   reason=failures[0].reason, failures=failures)

    @property
    def approval_required(self) -> bool:
        return any(f.name == APPROVAL_REQUIRED for f in self.flags)

    @property
    def min_aggregation(self) -> int | None:
        values = [r.value for r in self.output_rules if r.name == "minAggregation"]
        return max(values) if values else None

    @property
    def max_result_bytes(self) -> int | None:
        values = [r.value for r in self.output_rules if r.name == "maxResultBytes"]
        return min(values) if values else None

    def to_json(self) -> dict[str, Any]:
        """A plain JSON object (for refusal receipts and logs)."""
        return {
            "decision": "permit" if self.permitted else "deny",
            "policy": self.policy_id,
            "path": self.path,
            "reason": self.reason,
            "failures": [f.to_json() for f in self.failures],
            "duties": [d.to_json() for d in self.duties],
            "flags": [f.to_json() for f in self.flags],
            "outputRules": [r.to_json() for r in self.output_rules],
            "approvalRequired": self.approval_required,
            "minAggregation": self.min_aggregation,
            "maxResultBytes": self.max_result_bytes,
            "uses": self.uses,
            "useLimit": self.use_limit,
        }


# --- checkers ------------------------------------------------------------------------------


class Truth(enum.Enum):
    HOLDS = "holds"
    FAILS = "fails"
    UNDETERMINED = "undetermined"


@dataclass(frozen=True)
class Outcome:
    """A checker's answer: the truth, where it was decided and why; effects when it holds."""

    truth: Truth
    path: str
    reason: str
    effects: Effects = NO_EFFECTS


@dataclass(frozen=True)
class _Context:
    request: Request
    now: datetime
    uses_so_far: int
    # Abstract evaluation (apply_floor): atoms on other operands are UNDETERMINED.
    only: frozenset[L] | None = None


class Checker(abc.ABC):
    """A compiled constraint: one method, ``check``, that never raises."""

    path: str

    @abc.abstractmethod
    def check(self, ctx: _Context) -> Outcome: ...

    def atoms(self) -> Iterator[_Atom]:
        yield from ()


class _Atom(Checker):
    @property
    @abc.abstractmethod
    def operand(self) -> L: ...

    def check(self, ctx: _Context) -> Outcome:
        if ctx.only is not None and self.operand not in ctx.only:
            return Outcome(Truth.UNDETERMINED, self.path, f"{self.operand} is not considered")
        return self._check(ctx)

    @abc.abstractmethod
    def _check(self, ctx: _Context) -> Outcome: ...

    def atoms(self) -> Iterator[_Atom]:
        yield self


def _judge(path: str, holds: bool, left: str, op: Op, right: str,
           effects: Effects = NO_EFFECTS) -> Outcome:
    if holds:
        return Outcome(Truth.HOLDS, path, f"{left} is {op} {right}", effects)
    return Outcome(Truth.FAILS, path, f"{left} is not {op} {right}")


def _undetermined(path: str, reason: str) -> Outcome:
    return Outcome(Truth.UNDETERMINED, path, reason)


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(elements: tuple[str, ...], op: Op) -> str:
    return repr(list(elements)) if op in v.SET_OPERATORS else repr(elements[0])


@dataclass(frozen=True)
class _Subject:
    """A request's value of a term operand: how it shows, what it matches, what it is an
    instance of."""

    shown: str
    matches: Callable[[str], bool]
    is_a: Callable[[str], bool]


def _purpose(request: Request) -> _Subject | str:
    purpose = request.purpose
    if purpose is None:
        return "the request names no purpose"
    if not isinstance(purpose, str) or not purpose:
        return f"request.purpose must be a non-empty string, got {purpose!r}"
    return _Subject(repr(purpose), lambda x: x == purpose, lambda x: v.purpose_is_a(purpose, x))


def _mode(request: Request) -> _Subject | str:
    mode = request.compute_mode
    if mode is None:
        return "the request names no compute mode"
    if not isinstance(mode, str) or mode not in {m.value for m in ComputeMode}:
        return (f"request.compute_mode {mode!r} is not one of "
                f"{', '.join(m.value for m in ComputeMode)}")
    value = ComputeMode(mode).value
    return _Subject(repr(value), lambda x: x == value, lambda x: x == value)


def _assignee(request: Request) -> _Subject | str:
    who, roles = request.assignee, request.roles
    if not isinstance(who, str) or not who or who.startswith(v.ROLE_PREFIX):
        return f"request.assignee must be a participant id, got {who!r}"
    if not isinstance(roles, frozenset | set | tuple | list) \
            or not all(isinstance(r, str) for r in roles):
        return f"request.roles must be a set of role names, got {roles!r}"
    held = frozenset(roles)

    def matches(x: str) -> bool:
        return x[len(v.ROLE_PREFIX):] in held if x.startswith(v.ROLE_PREFIX) else x == who

    shown = f"{who!r} (roles: {', '.join(sorted(held)) or 'none'})"
    return _Subject(shown, matches, matches)


_SUBJECTS: Final[Mapping[L, Callable[[Request], _Subject | str]]] = {
    L.PURPOSE: _purpose, L.COMPUTE_MODE: _mode, L.ASSIGNEE: _assignee,
}


@dataclass(frozen=True)
class _TermAtom(_Atom):
    """assignee, purpose, ts:computeMode under a term operator."""

    path: str
    left: L
    op: Op
    elements: tuple[str, ...]

    @property
    def operand(self) -> L:
        return self.left

    def _check(self, ctx: _Context) -> Outcome:
        subject = _SUBJECTS[self.left](ctx.request)
        if isinstance(subject, str):
            return _undetermined(self.path, subject)
        holds = v.term_holds(self.op, subject.matches, subject.is_a, self.elements)
        return _judge(self.path, holds, f"{self.left} {subject.shown}", self.op,
                      _shown(self.elements, self.op))


@dataclass(frozen=True)
class _DateTimeAtom(_Atom):
    path: str
    op: Op
    bound: datetime

    @property
    def operand(self) -> L:
        return L.DATE_TIME

    def _check(self, ctx: _Context) -> Outcome:
        return _judge(self.path, v.ordered_holds(self.op, ctx.now, self.bound),
                      f"dateTime {ctx.now.isoformat()}", self.op, self.bound.isoformat())


@dataclass(frozen=True)
class _CountAtom(_Atom):
    path: str
    op: Op  # lt or lteq
    bound: int

    @property
    def operand(self) -> L:
        return L.COUNT

    def _check(self, ctx: _Context) -> Outcome:
        count = ctx.uses_so_far + 1
        limit = self.bound if self.op is Op.LTEQ else self.bound - 1
        return _judge(self.path, v.ordered_holds(self.op, count, self.bound),
                      f"count {count} ({ctx.uses_so_far} uses so far + this one)", self.op,
                      str(self.bound), Effects(use_limits=(_UseLimit(limit, self.path),)))


@dataclass(frozen=True)
class _OutputAtom(_Atom):
    """ts:minAggregation / ts:maxResultBytes: checked against the request when it says, and
    always returned as an output rule for the caller to enforce on the results."""

    path: str
    left: L
    op: Op
    bound: int

    @property
    def operand(self) -> L:
        return self.left

    def _check(self, ctx: _Context) -> Outcome:
        if self.left is L.MIN_AGGREGATION:
            name, field_name, value = "minAggregation", "aggregation_k", ctx.request.aggregation_k
            rule = self.bound + 1 if self.op is Op.GT else self.bound
            enforced = f"every released value aggregates at least {rule} records"
        else:
            name, field_name, value = "maxResultBytes", "result_bytes", ctx.request.result_bytes
            rule = self.bound - 1 if self.op is Op.LT else self.bound
            enforced = f"results are at most {rule} bytes"
        effects = Effects(output_rules=(OutputRule(name, rule, self.path),))
        if value is None:
            return Outcome(Truth.HOLDS, self.path, f"{enforced} (enforced on the results)",
                           effects)
        if not _natural(value):
            return _undetermined(self.path, f"request.{field_name} must be a non-negative "
                                            f"integer, got {value!r}")
        return _judge(self.path, v.ordered_holds(self.op, value, self.bound),
                      f"{self.left} {value}", self.op, str(self.bound), effects)


@dataclass(frozen=True)
class _CodeApprovalAtom(_Atom):
    path: str

    @property
    def operand(self) -> L:
        return L.CODE_APPROVAL

    def _check(self, ctx: _Context) -> Outcome:
        digest = ctx.request.code_digest
        if digest is not None and not isinstance(digest, str):
            return _undetermined(self.path, f"request.code_digest must be a string, "
                                            f"got {digest!r}")
        return Outcome(Truth.HOLDS, self.path,
                       "the provider's operator must approve the code before the job runs",
                       Effects(flags=(Flag(APPROVAL_REQUIRED, self.path, digest),)))


@dataclass(frozen=True)
class _DeleteResultsAtom(_Atom):
    path: str
    due: datetime

    @property
    def operand(self) -> L:
        return L.DELETE_RESULTS_BY

    def _check(self, ctx: _Context) -> Outcome:
        if ctx.now < self.due:
            return Outcome(Truth.HOLDS, self.path,
                           f"the results must be deleted by {self.due.isoformat()}",
                           Effects(duties=(Duty(v.DELETE_RESULTS, self.due, self.path),)))
        return Outcome(Truth.FAILS, self.path,
                       f"the results would have to be deleted by {self.due.isoformat()}, "
                       f"which is not after now ({ctx.now.isoformat()})")


@dataclass(frozen=True)
class _Logical(Checker):
    path: str
    items: tuple[Checker, ...]
    keyword: str

    def atoms(self) -> Iterator[_Atom]:
        for item in self.items:
            yield from item.atoms()


def _sum(outcomes: list[Outcome]) -> Effects:
    total = NO_EFFECTS
    for outcome in outcomes:
        total = total + outcome.effects
    return total


def _listed(outcomes: list[Outcome]) -> str:
    return "; ".join(f"[{o.path}] {o.reason}" for o in outcomes)


class _AllOf(_Logical):
    """``and`` (and the implicit ``and`` of a rule's constraints): all hold."""

    def check(self, ctx: _Context) -> Outcome:
        outcomes = [item.check(ctx) for item in self.items]
        for truth in (Truth.FAILS, Truth.UNDETERMINED):
            for outcome in outcomes:
                if outcome.truth is truth:
                    return outcome
        reason = " and ".join(o.reason for o in outcomes) or "nothing is required"
        return Outcome(Truth.HOLDS, self.path, reason, _sum(outcomes))


class _Sequence(_Logical):
    """``andSequence``: in order, each only if all before it held (module docstring)."""

    def check(self, ctx: _Context) -> Outcome:
        outcomes: list[Outcome] = []
        for item in self.items:
            outcome = item.check(ctx)
            if outcome.truth is not Truth.HOLDS:
                return outcome
            outcomes.append(outcome)
        reason = " and then ".join(o.reason for o in outcomes) or "nothing is required"
        return Outcome(Truth.HOLDS, self.path, reason, _sum(outcomes))


class _AnyOf(_Logical):
    """``or``: at least one holds; an empty one never does."""

    def check(self, ctx: _Context) -> Outcome:
        outcomes = [item.check(ctx) for item in self.items]
        for outcome in outcomes:
            if outcome.truth is Truth.HOLDS:
                return Outcome(Truth.HOLDS, self.path, outcome.reason, outcome.effects)
        if not outcomes:
            return Outcome(Truth.FAILS, self.path, f"an empty '{self.keyword}' never holds")
        truth = Truth.UNDETERMINED if any(o.truth is Truth.UNDETERMINED for o in outcomes) \
            else Truth.FAILS
        return Outcome(truth, self.path,
                       f"none of the {len(outcomes)} constraints of '{self.keyword}' holds: "
                       + _listed(outcomes))


class _OneOf(_Logical):
    """``xone``: exactly one holds; an empty one never does."""

    def check(self, ctx: _Context) -> Outcome:
        outcomes = [item.check(ctx) for item in self.items]
        held = [o for o in outcomes if o.truth is Truth.HOLDS]
        unsure = [o for o in outcomes if o.truth is Truth.UNDETERMINED]
        if not outcomes:
            return Outcome(Truth.FAILS, self.path, f"an empty '{self.keyword}' never holds")
        if len(held) > 1:
            return Outcome(Truth.FAILS, self.path,
                           f"more than one constraint of '{self.keyword}' holds: "
                           + _listed(held))
        if len(held) == 1 and not unsure:
            return Outcome(Truth.HOLDS, self.path, held[0].reason, held[0].effects)
        if unsure:
            return Outcome(Truth.UNDETERMINED, self.path,
                           f"cannot tell whether exactly one constraint of '{self.keyword}' "
                           "holds: " + _listed(unsure))
        return Outcome(Truth.FAILS, self.path,
                       f"none of the {len(outcomes)} constraints of '{self.keyword}' holds: "
                       + _listed(outcomes))


_COMBINATORS: Final[Mapping[Logical, type[_Logical]]] = {
    Logical.AND: _AllOf, Logical.AND_SEQUENCE: _Sequence, Logical.OR: _AnyOf,
    Logical.XONE: _OneOf,
}


# --- the compiled policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A compiled permission or prohibition: its path and the condition (its constraints, and
    for a permission its duties) under which it applies."""

    path: str
    condition: Checker


@dataclass(frozen=True)
class Policy:
    """A compiled Offer or Agreement (`compile_policy`)."""

    id: str | None
    type: str
    target: str | None
    assigner: str | None
    assignee: str | None
    purposes: frozenset[str] | None
    purposes_path: str
    permissions: tuple[Rule, ...]
    prohibitions: tuple[Rule, ...]
    obligations: tuple[Checker, ...]

    def evaluate(self, request: Request, *, now: datetime, uses_so_far: int) -> Decision:
        """The decision for ``request`` at ``now`` after ``uses_so_far`` uses (see the module
        docstring for the order and the semantics)."""
        def deny(*failures: Failure) -> Decision:
            return Decision.deny(*failures, policy_id=self.id)

        refused = _inputs(request, now, uses_so_far) or self._conditions(request)
        if refused is not None:
            return deny(refused)
        ctx = _Context(request, now, uses_so_far)
        for rule in self.prohibitions:
            outcome = rule.condition.check(ctx)
            if outcome.truth is Truth.HOLDS:
                return deny(Failure(rule.path, f"{rule.path} applies: {outcome.reason}"))
            if outcome.truth is Truth.UNDETERMINED:
                return deny(Failure(rule.path, f"{rule.path} cannot be ruled out: "
                                               f"{outcome.reason}"))
        obligations = [o.check(ctx) for o in self.obligations]
        for outcome in obligations:
            if outcome.truth is not Truth.HOLDS:
                return deny(Failure(outcome.path, outcome.reason))
        failures: list[Failure] = []
        for rule in self.permissions:
            outcome = rule.condition.check(ctx)
            if outcome.truth is Truth.HOLDS:
                effects = outcome.effects + _sum(obligations)
                limits = [u.limit for u in effects.use_limits]
                return Decision(
                    permitted=True, policy_id=self.id, path=rule.path,
                    reason=f"{rule.path} holds: {outcome.reason}", duties=effects.duties,
                    flags=effects.flags, output_rules=effects.output_rules, uses=1,
                    use_limit=min(limits) if limits else None)
            failures.append(Failure(outcome.path, outcome.reason))
        if not failures:
            failures.append(Failure("", "the policy has no permission, and what is not "
                                        "permitted is prohibited"))
        return deny(*failures)

    def _conditions(self, request: Request) -> Failure | None:
        if not v.action_is_use(request.action):
            return Failure("action", f"action {request.action!r} is not known: the only "
                                     f"action is '{v.USE}'")
        if self.target is not None and request.target != self.target:
            if request.target is None:
                return Failure("target", f"the request names no target; the {self.type} is "
                                         f"for {self.target!r}")
            return Failure("target", f"the {self.type} is for {self.target!r}, not "
                                     f"{request.target!r}")
        if self.assignee is not None and request.assignee != self.assignee:
            return Failure("assignee", f"the {self.type} is with {self.assignee!r}, not "
                                       f"{request.assignee!r}")
        purpose = request.purpose
        if purpose is not None and self.purposes is not None:
            if not isinstance(purpose, str):
                return Failure(self.purposes_path, f"request.purpose must be a string, "
                                                   f"got {purpose!r}")
            if purpose not in self.purposes:
                return Failure(self.purposes_path,
                               f"purpose {purpose!r} is not in the provider's purpose "
                               f"vocabulary ({', '.join(sorted(self.purposes))})")
        return None


def _inputs(request: object, now: object, uses_so_far: object) -> Failure | None:
    if not isinstance(request, Request):
        return Failure("", f"the request must be a Request, got {type(request).__name__}")
    if not isinstance(now, datetime) or now.utcoffset() is None:
        return Failure("", f"now must be a timezone-aware datetime, got {now!r}")
    if not _natural(uses_so_far):
        return Failure("", f"uses_so_far must be a non-negative integer, got {uses_so_far!r}")
    return None


def evaluate(policy: Policy | Mapping[str, Any], request: Request, *, now: datetime,
             uses_so_far: int) -> Decision:
    """Decide ``request`` under ``policy`` (compiled, or a JSON object compiled here: a policy
    that does not compile is a denial naming why)."""
    if not isinstance(policy, Policy):
        try:
            policy = compile_policy(policy)
        except PolicyInvalid as exc:
            pid = policy.get("@id") if isinstance(policy, Mapping) else None
            return Decision.deny(Failure(exc.path, f"the policy is refused: {exc.reason}"),
                                 policy_id=pid if isinstance(pid, str) else None)
    return policy.evaluate(request, now=now, uses_so_far=uses_so_far)


# --- compiling -------------------------------------------------------------------------------

_POLICY_KEYS: Final = frozenset({"@context", "@id", "@type", "profile", "target", "assigner",
                                 "assignee", "timestamp", "permission", "prohibition",
                                 "obligation", "ts:purposes"})
_POLICY_TYPES: Final = {"Offer": "Offer", "odrl:Offer": "Offer", "Agreement": "Agreement",
                        "odrl:Agreement": "Agreement"}
_ATOMIC_KEYS: Final = frozenset({"leftOperand", "operator", "rightOperand"})
_EFFECTS: Final = frozenset({L.COUNT, L.MIN_AGGREGATION, L.MAX_RESULT_BYTES, L.CODE_APPROVAL,
                             L.DELETE_RESULTS_BY})
_ORDER: Final = frozenset({Op.EQ, Op.NEQ, Op.LT, Op.LTEQ, Op.GT, Op.GTEQ})
_OPERATORS: Final[Mapping[L, frozenset[Op]]] = {
    L.ASSIGNEE: v.TERM_OPERATORS, L.PURPOSE: v.TERM_OPERATORS, L.COMPUTE_MODE: v.TERM_OPERATORS,
    L.DATE_TIME: _ORDER,
    L.COUNT: frozenset({Op.LT, Op.LTEQ}),
    L.MIN_AGGREGATION: frozenset({Op.GTEQ, Op.GT}),
    L.MAX_RESULT_BYTES: frozenset({Op.LTEQ, Op.LT}),
    L.CODE_APPROVAL: frozenset({Op.EQ}),
    L.DELETE_RESULTS_BY: frozenset({Op.EQ, Op.LTEQ}),
}
_WHY_NOT: Final[Mapping[L, str]] = {
    L.ASSIGNEE: "terms have no order", L.PURPOSE: "terms have no order",
    L.COMPUTE_MODE: "terms have no order",
    L.DATE_TIME: "a dateTime is an instant, not a set or a class",
    L.COUNT: "count takes an upper bound on the uses",
    L.MIN_AGGREGATION: "it is a lower bound on the records each released value aggregates",
    L.MAX_RESULT_BYTES: "it is an upper bound on the result size",
    L.CODE_APPROVAL: "write ts:codeApproval eq \"required\"",
    L.DELETE_RESULTS_BY: "it is a deadline",
}


@dataclass(frozen=True)
class _Where:
    """Where a constraint sits: in which kind of rule, and under which ``or``/``xone``."""

    rule: str  # "permission", "prohibition" or "duty"
    choice: str | None = None  # the path of the nearest enclosing or / xone


def compile_policy(policy: Mapping[str, Any], *,
                   purposes: Collection[str] | None = None) -> Policy:
    """Compile an Offer or Agreement (a JSON object; not changed). ``purposes`` is the product's
    purpose vocabulary, if it declares one. Raises `PolicyInvalid`."""
    return _Compiler(purposes).policy(policy)


@dataclass
class _Compiler:
    product_purposes: Collection[str] | None
    purposes: frozenset[str] | None = field(default=None, init=False)

    def policy(self, obj: object) -> Policy:
        if not isinstance(obj, Mapping):
            raise PolicyInvalid(f"a policy is a JSON object, not {type(obj).__name__}")
        for key in obj:
            if key not in _POLICY_KEYS:
                raise PolicyInvalid(f"unknown policy property {key!r}: refused rather than "
                                    "ignored", str(key))
        raw_type = obj.get("@type", "Offer")  # a Dataset's offers omit @type
        kind = _POLICY_TYPES.get(raw_type) if isinstance(raw_type, str) else None
        if kind is None:
            raise PolicyInvalid(f"@type must be 'Offer' or 'Agreement', got {obj['@type']!r}",
                                "@type")
        texts = {key: _text(obj, key) for key in ("@id", "target", "assigner", "assignee",
                                                   "timestamp")}
        if kind == "Agreement":
            for key in ("target", "assigner", "assignee"):
                if texts[key] is None:
                    raise PolicyInvalid(f"an Agreement names its {key}", key)
        self._profile(obj.get("profile"))
        self._purposes(obj)
        if "permission" not in obj and "prohibition" not in obj:
            raise PolicyInvalid("a policy has a permission or a prohibition")
        permissions = tuple(self._rule(r, f"permission[{i}]", "permission")
                            for i, r in enumerate(_rules(obj, "permission")))
        prohibitions = tuple(self._rule(r, f"prohibition[{i}]", "prohibition")
                             for i, r in enumerate(_rules(obj, "prohibition")))
        obligations = tuple(self._duty(d, f"obligation[{i}]")
                            for i, d in enumerate(_rules(obj, "obligation")))
        return Policy(id=texts["@id"], type=kind, target=texts["target"],
                      assigner=texts["assigner"], assignee=texts["assignee"],
                      purposes=self.purposes,
                      purposes_path="ts:purposes" if "ts:purposes" in obj else "",
                      permissions=permissions, prohibitions=prohibitions,
                      obligations=obligations)

    def _profile(self, profile: object) -> None:
        if profile is None:
            return
        names = [profile] if isinstance(profile, str) else profile
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PolicyInvalid("profile is a string or an array of strings", "profile")
        for name in names:
            if name not in v.PROFILES:
                raise PolicyInvalid(f"profile {name!r} is not known (a profile may change what "
                                    f"any term means); known: {', '.join(sorted(v.PROFILES))}",
                                    "profile")

    def _purposes(self, obj: Mapping[str, Any]) -> None:
        product = None
        if self.product_purposes is not None:
            product = _vocabulary(self.product_purposes, "purposes (the product's)", "")
        own = None
        if "ts:purposes" in obj:
            own = _vocabulary(obj["ts:purposes"], "ts:purposes", "ts:purposes")
            if product is not None and not own <= product:
                extra = ", ".join(sorted(own - product))
                raise PolicyInvalid(f"ts:purposes names purposes the product does not declare: "
                                    f"{extra}", "ts:purposes")
        self.purposes = own if own is not None else product

    def _rule(self, obj: object, path: str, kind: str) -> Rule:
        allowed = {"action", "constraint", "@id", "@type"} | ({"duty"} if kind == "permission"
                                                               else set())
        rule = _object(obj, path, allowed, kind.capitalize())
        if not v.action_is_use(rule.get("action")):
            raise PolicyInvalid(f"unknown action {rule.get('action')!r}: the only action is "
                                f"'{v.USE}'", f"{path}.action")
        items = self._constraints(rule, path, _Where(kind))
        items += tuple(self._duty(d, f"{path}.duty[{i}]")
                       for i, d in enumerate(_rules(rule, "duty", path)))
        return Rule(path, _AllOf(path, items, "and"))

    def _duty(self, obj: object, path: str) -> Checker:
        duty = _object(obj, path, {"action", "constraint", "@id", "@type"}, "Duty")
        if duty.get("action") != v.DELETE_RESULTS:
            raise PolicyInvalid(f"unknown duty action {duty.get('action')!r}: the only one is "
                                f"'{v.DELETE_RESULTS}'", f"{path}.action")
        items = self._constraints(duty, path, _Where("duty"))
        checker = _AllOf(path, items, "and")
        if not any(isinstance(a, _DeleteResultsAtom) for a in checker.atoms()):
            raise PolicyInvalid(f"a {v.DELETE_RESULTS} duty needs a deadline: a "
                                f"{L.DELETE_RESULTS_BY} constraint", path)
        return checker

    def _constraints(self, rule: Mapping[str, Any], path: str,
                     where: _Where) -> tuple[Checker, ...]:
        items = rule.get("constraint", [])
        if not isinstance(items, list):
            raise PolicyInvalid("constraint must be an array", f"{path}.constraint")
        return tuple(self._constraint(c, f"{path}.constraint[{i}]", where)
                     for i, c in enumerate(items))

    def _constraint(self, obj: object, path: str, where: _Where) -> Checker:
        if not isinstance(obj, Mapping):
            raise PolicyInvalid("a constraint is a JSON object", path)
        keys = set(obj) - {"@id", "@type"}
        if keys & _ATOMIC_KEYS:
            return self._atom(obj, path, where)
        kind = obj.get("@type", "LogicalConstraint")
        if kind not in ("LogicalConstraint", "odrl:LogicalConstraint"):
            raise PolicyInvalid(f"a logical constraint's @type is LogicalConstraint, "
                                f"got {kind!r}", path)
        known = ", ".join(k.value for k in Logical)
        if len(keys) != 1:
            raise PolicyInvalid(f"a constraint has leftOperand, operator and rightOperand, or "
                                f"exactly one of {known}; got {sorted(keys)}", path)
        (key,) = keys
        keyword = v.logical(key)
        if keyword is None:
            raise PolicyInvalid(f"unknown logical keyword {key!r}; known: {known}", path)
        items = obj[key]
        if not isinstance(items, list):
            raise PolicyInvalid(f"'{key}' takes an array of constraints", path)
        if keyword in (Logical.OR, Logical.XONE):
            if not items:
                raise PolicyInvalid(f"an empty '{key}' is never satisfied", path)
            where = _Where(where.rule, path)
        children = tuple(self._constraint(c, f"{path}.{key}[{i}]", where)
                         for i, c in enumerate(items))
        return _COMBINATORS[keyword](path, children, key)

    def _atom(self, obj: Mapping[str, Any], path: str, where: _Where) -> Checker:
        missing = _ATOMIC_KEYS - set(obj)
        if missing:
            raise PolicyInvalid(f"an atomic constraint has leftOperand, operator and "
                                f"rightOperand; {', '.join(sorted(missing))} is missing", path)
        extra = set(obj) - _ATOMIC_KEYS - {"@id", "@type"}
        if extra:
            raise PolicyInvalid(f"unsupported constraint property {sorted(extra)[0]!r}: refused "
                                "rather than ignored", path)
        if obj.get("@type", "Constraint") not in ("Constraint", "odrl:Constraint"):
            raise PolicyInvalid(f"an atomic constraint's @type is Constraint, "
                                f"got {obj['@type']!r}", path)
        left = v.left_operand(obj["leftOperand"])
        if left is None:
            raise PolicyInvalid(f"unknown left operand {obj['leftOperand']!r}; known: "
                                f"{', '.join(m.value for m in L)}", path)
        op = v.operator(obj["operator"])
        if op is None:
            raise PolicyInvalid(f"unknown operator {obj['operator']!r}; known: "
                                f"{', '.join(m.value for m in Op)}", path)
        self._placement(left, path, where)
        if op not in _OPERATORS[left]:
            raise PolicyInvalid(f"{left} does not take {op} ({_WHY_NOT[left]}); it takes "
                                f"{', '.join(sorted(_OPERATORS[left]))}", path)
        right = obj["rightOperand"]
        try:
            if left in (L.ASSIGNEE, L.PURPOSE, L.COMPUTE_MODE):
                return _TermAtom(path, left, op, self._terms(left, op, right, path))
            if isinstance(right, list):
                raise v.LiteralInvalid(f"{op} takes a single value, not an array")
            return _single(left, op, right, path)
        except v.LiteralInvalid as exc:
            raise PolicyInvalid(f"{left} {op}: {exc}", path) from None

    def _placement(self, left: L, path: str, where: _Where) -> None:
        if where.rule == "duty" and left is not L.DELETE_RESULTS_BY:
            raise PolicyInvalid(f"a duty's constraints give its deadline "
                                f"({L.DELETE_RESULTS_BY}); {left} belongs in a permission", path)
        if left in _EFFECTS and where.rule == "prohibition":
            raise PolicyInvalid(f"{left} tells what a permission requires; it has no meaning in "
                                "a prohibition", path)
        if left in _EFFECTS and where.choice is not None:
            raise PolicyInvalid(f"{left} must apply whenever its permission grants, so it cannot "
                                f"sit under an 'or' / 'xone' ({where.choice})", path)

    def _terms(self, left: L, op: Op, right: object, path: str) -> tuple[str, ...]:
        if op in v.SET_OPERATORS:
            if not isinstance(right, list) or not right:
                raise v.LiteralInvalid(f"{op} takes a non-empty array of values")
            elements = tuple(v.parse_term(x) for x in right)
        elif isinstance(right, list):
            raise v.LiteralInvalid(f"{op} takes a single value, not an array (for a set: "
                                   "isAnyOf, isNoneOf, isAllOf)")
        else:
            elements = (v.parse_term(right),)
        for term in elements:
            self._term(left, op, term, path)
        return elements

    def _term(self, left: L, op: Op, term: str, path: str) -> None:
        if left is L.COMPUTE_MODE and term not in {m.value for m in ComputeMode}:
            raise v.LiteralInvalid(f"{term!r} is not a compute mode "
                                   f"({', '.join(m.value for m in ComputeMode)})")
        if left is L.ASSIGNEE:
            role = term[len(v.ROLE_PREFIX):] if term.startswith(v.ROLE_PREFIX) else None
            if role is not None and role not in v.ROLES:
                raise v.LiteralInvalid(f"{term!r} names no role; roles: "
                                       f"{', '.join(v.ROLE_PREFIX + r for r in sorted(v.ROLES))}")
            if op is Op.IS_A and role is None:
                raise v.LiteralInvalid(f"isA takes a role ('{v.ROLE_PREFIX}<role>'), "
                                       f"got {term!r}")
        if left is L.PURPOSE:
            if self.purposes is None:
                raise PolicyInvalid("a purpose constraint needs the provider's purpose "
                                    "vocabulary: declare ts:purposes in the policy or pass the "
                                    "product's purposes", path)
            broader = op is Op.IS_A and any(v.purpose_is_a(p, term) for p in self.purposes)
            if term not in self.purposes and not broader:
                raise v.LiteralInvalid(f"purpose {term!r} is not in the purpose vocabulary "
                                       f"({', '.join(sorted(self.purposes))})")


def _single(left: L, op: Op, right: object, path: str) -> Checker:
    """The checker of a left operand that takes one number, dateTime or keyword."""
    if left is L.DATE_TIME:
        return _DateTimeAtom(path, op, v.parse_datetime(right))
    if left is L.DELETE_RESULTS_BY:
        return _DeleteResultsAtom(path, v.parse_datetime(right))
    if left is L.CODE_APPROVAL:
        if v.parse_term(right) != "required":
            raise v.LiteralInvalid(f"the only value is 'required', got {right!r}")
        return _CodeApprovalAtom(path)
    bound = v.parse_integer(right)
    if left is L.COUNT:
        if bound < (1 if op is Op.LT else 0):
            raise v.LiteralInvalid(f"a use limit below 0 ({op} {bound}) is not one")
        return _CountAtom(path, op, bound)
    if left is L.MIN_AGGREGATION and bound < (0 if op is Op.GT else 1):
        raise v.LiteralInvalid(f"an aggregation of fewer than 1 record ({op} {bound}) is none")
    if left is L.MAX_RESULT_BYTES and bound < (1 if op is Op.LT else 0):
        raise v.LiteralInvalid(f"a result size below 0 ({op} {bound}) is impossible")
    return _OutputAtom(path, left, op, bound)


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not (isinstance(value, str) and value):
        raise PolicyInvalid(f"{key} must be a non-empty string, got {value!r}", key)
    return value


def _rules(obj: Mapping[str, Any], key: str, path: str = "") -> list[Any]:
    if key not in obj:
        return []
    rules = obj[key]
    if not isinstance(rules, list) or not rules:
        raise PolicyInvalid(f"{key} must be a non-empty array", f"{path}.{key}" if path else key)
    return rules


def _object(obj: object, path: str, allowed: set[str], kind: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise PolicyInvalid(f"a {kind} is a JSON object", path)
    for key in obj:
        if key not in allowed:
            raise PolicyInvalid(f"unknown {kind} property {key!r}: refused rather than ignored",
                                f"{path}.{key}")
    if obj.get("@type", kind) not in (kind, "odrl:" + kind):
        raise PolicyInvalid(f"@type must be {kind!r}, got {obj['@type']!r}", path)
    if not isinstance(obj.get("action"), str):
        raise PolicyInvalid("action must be a string (refinements are not supported)",
                            f"{path}.action")
    return obj


def _vocabulary(terms: object, name: str, path: str) -> frozenset[str]:
    if isinstance(terms, str | Mapping) or not isinstance(terms, Collection) or not terms:
        raise PolicyInvalid(f"{name} must be a non-empty array of purpose terms", path)
    vocabulary: set[str] = set()
    for term in terms:
        if not v.valid_purpose(term):
            raise PolicyInvalid(f"{name}: {term!r} is not a purpose term (non-empty "
                                "'/'-separated words without whitespace)", path)
        if term in vocabulary:
            raise PolicyInvalid(f"{name}: {term!r} appears twice", path)
        vocabulary.add(term)
    return frozenset(vocabulary)


# --- the classification floor -------------------------------------------------------------------

_ANY_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)


def _grantable_modes(rule: Rule) -> frozenset[ComputeMode]:
    """The compute modes ``rule`` may grant: those for which its condition does not fail when
    everything but the compute mode is unknown (an over-approximation: sound for the floor)."""
    modes = set()
    for mode in ComputeMode:
        ctx = _Context(Request(assignee="", compute_mode=mode), _ANY_TIME, 0,
                       only=frozenset({L.COMPUTE_MODE}))
        if rule.condition.check(ctx).truth is not Truth.FAILS:
            modes.add(mode)
    return frozenset(modes)


def apply_floor(policy: Policy | Mapping[str, Any], level: Level,
                allowed_modes: Collection[ComputeMode]) -> None:
    """Refuse a policy that would grant what the product's classification level forbids
    (`trustspace.registry.classification.RULES`) or a compute mode the product does not offer:
    core data is never offered; every permission must rule out (by ts:computeMode constraints
    on the permission itself) each mode the level or the product does not allow -- a permission
    without one grants sandbox; where the level requires approval, every permission must carry
    ``ts:codeApproval eq "required"``. Raises `PolicyInvalid` with ``rule`` set to the level's
    rule name or `RULE_PRODUCT_MODES`. A JSON policy is compiled first."""
    if not isinstance(policy, Policy):
        policy = compile_policy(policy)
    level = Level(level)
    try:
        check_offers(level, [policy])
    except ClassificationForbids as exc:
        raise PolicyInvalid(exc.detail, "", rule=exc.rule) from None
    product_modes = frozenset(ComputeMode(m) for m in allowed_modes)
    allowed = product_modes & RULES[level].modes
    for rule in policy.permissions:
        granted = sorted(_grantable_modes(rule))
        try:
            check_modes(level, granted)
        except ClassificationForbids as exc:
            forbidden = next(m for m in granted if m not in RULES[level].modes)
            raise PolicyInvalid(f"would grant {forbidden}, which no {L.COMPUTE_MODE} "
                                f"constraint rules out: {exc.detail}", rule.path,
                                rule=exc.rule) from None
        beyond = [m.value for m in granted if m not in allowed]
        if beyond:
            raise PolicyInvalid(f"would grant compute mode {', '.join(beyond)}, "
                                f"which the product does not offer (it offers "
                                f"{', '.join(sorted(allowed)) or 'none'}); constrain "
                                f"{L.COMPUTE_MODE}", rule.path, rule=RULE_PRODUCT_MODES)
        approval = any(isinstance(a, _CodeApprovalAtom) for a in rule.condition.atoms())
        try:
            check_approval(level, approval)
        except ClassificationForbids as exc:
            raise PolicyInvalid(f"lacks {L.CODE_APPROVAL} eq \"required\": "
                                f"{exc.detail}", rule.path, rule=exc.rule) from None
