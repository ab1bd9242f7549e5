"""The policy engine (trustspace.contracts.policy): a table per operator and left operand, logical
constraints, prohibitions, duties and flags, what is refused at compile time, type mismatches,
the classification floor, the DSP 2025-1 example policies, and properties checked against an
independent oracle written here."""

from __future__ import annotations

import copy
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustspace.contracts import policy as engine
from trustspace.contracts.policy import (
    Decision,
    PolicyInvalid,
    Request,
    apply_floor,
    compile_policy,
    evaluate,
)
from trustspace.contracts.vocabulary import LeftOperand
from trustspace.crypto import canonical_json
from trustspace.registry.classification import ComputeMode, Level

from .dsp_schemas import dsp_dir

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
VOCAB = ["research", "research/clinical", "research/public-health", "marketing", "teaching"]
LAB = "urn:ts:participant:lab"
REQ = Request(assignee=LAB, roles=frozenset({"consumer"}), purpose="research",
              compute_mode=ComputeMode.FEDERATED)
FIRST = "permission[0].constraint[0]"


def c(left: str, op: str, right: Any) -> dict[str, Any]:
    return {"leftOperand": left, "operator": op, "rightOperand": right}


def offer(*constraints: Mapping[str, Any], prohibitions: Sequence[Sequence[Any]] = (),
          **extra: Any) -> dict[str, Any]:
    """An offer with one permission holding ``constraints`` (and prohibitions, each a list of
    constraints)."""
    policy: dict[str, Any] = {"@id": "urn:offer:1", "ts:purposes": VOCAB,
                              "permission": [{"action": "use", "constraint": list(constraints)}]}
    if prohibitions:
        policy["prohibition"] = [{"action": "use", "constraint": list(p)} for p in prohibitions]
    policy.update(extra)
    return policy


def decide(policy: Mapping[str, Any], request: Request = REQ, *, now: datetime = NOW,
           uses: int = 0, **changes: Any) -> Decision:
    return evaluate(compile_policy(policy), replace(request, **changes), now=now,
                    uses_so_far=uses)


def refused(policy: Any, **kwargs: Any) -> PolicyInvalid:
    with pytest.raises(PolicyInvalid) as info:
        compile_policy(policy, **kwargs)
    return info.value


# --- one table per left operand and operator ----------------------------------------------

# (constraint, request changes, expected reason when denied, or None when permitted)
OPERAND_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    # purpose: a term of the vocabulary
    ("purpose eq", c("purpose", "eq", "research"), {}, None),
    ("purpose eq, other", c("purpose", "eq", "research"), {"purpose": "marketing"},
     "purpose 'marketing' is not eq 'research'"),
    ("purpose odrl:eq", c("odrl:purpose", "odrl:eq", "research"), {}, None),
    ("purpose neq", c("purpose", "neq", "marketing"), {}, None),
    ("purpose neq, same", c("purpose", "neq", "marketing"), {"purpose": "marketing"},
     "purpose 'marketing' is not neq 'marketing'"),
    ("purpose isA narrower", c("purpose", "isA", "research"), {"purpose": "research/clinical"},
     None),
    ("purpose isA itself", c("purpose", "isA", "research"), {}, None),
    ("purpose isA other", c("purpose", "isA", "research"), {"purpose": "teaching"},
     "purpose 'teaching' is not isA 'research'"),
    ("purpose isA is not eq", c("purpose", "eq", "research"),
     {"purpose": "research/clinical"}, "purpose 'research/clinical' is not eq 'research'"),
    ("purpose isAnyOf", c("purpose", "isAnyOf", ["teaching", "research"]), {}, None),
    ("purpose isAnyOf, none", c("purpose", "isAnyOf", ["teaching", "research"]),
     {"purpose": "marketing"}, "purpose 'marketing' is not isAnyOf ['teaching', 'research']"),
    ("purpose isPartOf", c("purpose", "isPartOf", ["research"]), {}, None),
    ("purpose isPartOf, not", c("purpose", "isPartOf", ["teaching"]), {},
     "purpose 'research' is not isPartOf ['teaching']"),
    ("purpose isNoneOf", c("purpose", "isNoneOf", ["marketing"]), {}, None),
    ("purpose isNoneOf, listed", c("purpose", "isNoneOf", ["marketing"]),
     {"purpose": "marketing"}, "purpose 'marketing' is not isNoneOf ['marketing']"),
    ("purpose isAllOf one", c("purpose", "isAllOf", ["research"]), {}, None),
    ("purpose isAllOf two", c("purpose", "isAllOf", ["research", "teaching"]), {},
     "purpose 'research' is not isAllOf ['research', 'teaching']"),
    ("purpose hasPart", c("purpose", "hasPart", ["research"]), {}, None),
    ("purpose hasPart two", c("purpose", "hasPart", ["research", "teaching"]), {},
     "purpose 'research' is not hasPart ['research', 'teaching']"),
    ("purpose missing", c("purpose", "eq", "research"), {"purpose": None},
     "the request names no purpose"),
    ("purpose typed literal", c("purpose", "eq", {"@value": "research", "@type": "xsd:string"}),
     {}, None),
    # ts:computeMode
    ("mode eq", c("ts:computeMode", "eq", "federated"), {}, None),
    ("mode eq, other", c("ts:computeMode", "eq", "federated"),
     {"compute_mode": ComputeMode.SANDBOX}, "ts:computeMode 'sandbox' is not eq 'federated'"),
    ("mode neq", c("ts:computeMode", "neq", "sandbox"), {}, None),
    ("mode isA", c("ts:computeMode", "isA", "federated"), {}, None),
    ("mode isAnyOf", c("ts:computeMode", "isAnyOf", ["federated", "homomorphic"]),
     {"compute_mode": ComputeMode.HOMOMORPHIC}, None),
    ("mode isAnyOf, sandbox", c("ts:computeMode", "isAnyOf", ["federated", "homomorphic"]),
     {"compute_mode": ComputeMode.SANDBOX},
     "ts:computeMode 'sandbox' is not isAnyOf ['federated', 'homomorphic']"),
    ("mode isNoneOf", c("ts:computeMode", "isNoneOf", ["sandbox"]), {}, None),
    ("mode missing", c("ts:computeMode", "eq", "federated"), {"compute_mode": None},
     "the request names no compute mode"),
    ("mode unknown", c("ts:computeMode", "eq", "federated"), {"compute_mode": "gpu"},
     "request.compute_mode 'gpu' is not one of sandbox, federated, homomorphic"),
    # assignee: participant ids and role:<r>
    ("assignee role", c("assignee", "eq", "role:consumer"), {}, None),
    ("assignee role, lacking", c("assignee", "eq", "role:consumer"),
     {"roles": frozenset({"provider"})},
     f"assignee '{LAB}' (roles: provider) is not eq 'role:consumer'"),
    ("assignee id", c("odrl:assignee", "eq", LAB), {}, None),
    ("assignee id, other", c("assignee", "eq", "urn:ts:participant:other"), {},
     f"assignee '{LAB}' (roles: consumer) is not eq 'urn:ts:participant:other'"),
    ("assignee id as reference", c("assignee", "eq", {"@id": LAB}), {}, None),
    ("assignee neq", c("assignee", "neq", "urn:ts:participant:evil"), {}, None),
    ("assignee isA role", c("assignee", "isA", "role:consumer"), {}, None),
    ("assignee isA role, lacking", c("assignee", "isA", "role:regulator"), {},
     f"assignee '{LAB}' (roles: consumer) is not isA 'role:regulator'"),
    ("assignee isAnyOf", c("assignee", "isAnyOf", ["urn:x", "role:consumer"]), {}, None),
    ("assignee isNoneOf", c("assignee", "isNoneOf", [LAB]), {},
     f"assignee '{LAB}' (roles: consumer) is not isNoneOf ['{LAB}']"),
    ("assignee isAllOf roles", c("assignee", "isAllOf", ["role:consumer", "role:provider"]),
     {"roles": frozenset({"consumer", "provider"})}, None),
    ("assignee isAllOf roles, one", c("assignee", "isAllOf", ["role:consumer", "role:provider"]),
     {}, f"assignee '{LAB}' (roles: consumer) is not isAllOf "
         "['role:consumer', 'role:provider']"),
    ("assignee role named like an id", c("assignee", "eq", "role:consumer"),
     {"assignee": "role:consumer", "roles": frozenset()},
     "request.assignee must be a participant id, got 'role:consumer'"),
    # dateTime: now
    ("dateTime lteq", c("dateTime", "lteq", "2025-12-31T23:59:59Z"), {}, None),
    ("dateTime lteq, past", c("dateTime", "lteq", "2024-12-31T23:59:59Z"), {},
     "dateTime 2025-06-01T12:00:00+00:00 is not lteq 2024-12-31T23:59:59+00:00"),
    ("dateTime lt", c("dateTime", "lt", "2025-06-01T12:00:00Z"), {},
     "dateTime 2025-06-01T12:00:00+00:00 is not lt 2025-06-01T12:00:00+00:00"),
    ("dateTime gteq", c("dateTime", "gteq", "2025-06-01T12:00:00Z"), {}, None),
    ("dateTime gt, offset", c("dateTime", "gt", "2025-06-01T20:00:00+08:00"), {},
     "dateTime 2025-06-01T12:00:00+00:00 is not gt 2025-06-01T20:00:00+08:00"),
    ("dateTime eq, offset", c("odrl:dateTime", "eq", "2025-06-01T20:00:00+08:00"), {}, None),
    ("dateTime neq", c("dateTime", "neq", "2025-06-01T12:00:01Z"), {}, None),
    ("dateTime without seconds", c("dateTime", "lteq", "2025-06-01T12:00Z"), {}, None),
    ("dateTime typed", c("dateTime", "gt", {"@value": "2025-01-01T00:00:00Z",
                                            "@type": "xsd:dateTime"}), {}, None),
    # count: uses so far + 1
    ("count lteq", c("count", "lteq", "10"), {"uses": 9}, None),
    ("count lteq, used up", c("count", "lteq", "10"), {"uses": 10},
     "count 11 (10 uses so far + this one) is not lteq 10"),
    ("count lt", c("odrl:count", "lt", 10), {"uses": 8}, None),
    ("count lt, used up", c("count", "lt", {"@value": "10", "@type": "xsd:integer"}),
     {"uses": 9}, "count 10 (9 uses so far + this one) is not lt 10"),
    # output rules: checked when the request says, always returned
    ("minAggregation unknown k", c("ts:minAggregation", "gteq", "10"), {}, None),
    ("minAggregation k", c("ts:minAggregation", "gteq", "10"), {"aggregation_k": 10}, None),
    ("minAggregation small k", c("ts:minAggregation", "gteq", "10"), {"aggregation_k": 5},
     "ts:minAggregation 5 is not gteq 10"),
    ("minAggregation gt", c("ts:minAggregation", "gt", "10"), {"aggregation_k": 10},
     "ts:minAggregation 10 is not gt 10"),
    ("maxResultBytes unknown size", c("ts:maxResultBytes", "lteq", "1000"), {}, None),
    ("maxResultBytes size", c("ts:maxResultBytes", "lteq", "1000"), {"result_bytes": 1000},
     None),
    ("maxResultBytes too big", c("ts:maxResultBytes", "lt", "1000"), {"result_bytes": 1000},
     "ts:maxResultBytes 1000 is not lt 1000"),
    # flags and duties
    ("codeApproval", c("ts:codeApproval", "eq", "required"), {}, None),
    ("deleteResultsBy future", c("ts:deleteResultsBy", "eq", "2025-07-01T00:00:00Z"), {}, None),
    ("deleteResultsBy past", c("ts:deleteResultsBy", "lteq", "2025-06-01T12:00:00Z"), {},
     "the results would have to be deleted by 2025-06-01T12:00:00+00:00, which is not after "
     "now (2025-06-01T12:00:00+00:00)"),
]


@pytest.mark.parametrize(("constraint", "changes", "denied"),
                         [case[1:] for case in OPERAND_CASES],
                         ids=[case[0] for case in OPERAND_CASES])
def test_operand_and_operator(constraint: dict[str, Any], changes: dict[str, Any],
                              denied: str | None) -> None:
    changes = dict(changes)
    uses = changes.pop("uses", 0)
    decision = decide(offer(constraint), uses=uses, **changes)
    if denied is None:
        assert decision.permitted, decision.reason
        assert decision.path == "permission[0]"
        assert decision.uses == 1
    else:
        assert not decision.permitted
        assert (decision.path, decision.reason) == (FIRST, denied)
        assert decision.failures == (engine.Failure(FIRST, denied),)
        assert decision.uses == 0 and decision.duties == () and decision.flags == ()


def test_count_reports_the_limit_for_the_atomic_consumption() -> None:
    policy = offer(c("count", "lteq", "10"), c("count", "lt", "8"))
    decision = decide(policy, uses=3)
    assert (decision.uses, decision.use_limit) == (1, 7)
    assert not decide(policy, uses=7).permitted
    assert decide(offer(c("purpose", "eq", "research"))).use_limit is None


def test_output_rules_are_returned_strictest_first() -> None:
    decision = decide(offer(c("ts:minAggregation", "gteq", "10"), c("ts:minAggregation", "gt", 19),
                            c("ts:maxResultBytes", "lteq", "4096"),
                            c("ts:maxResultBytes", "lt", "1000")))
    assert decision.permitted
    assert (decision.min_aggregation, decision.max_result_bytes) == (20, 999)
    assert [(r.name, r.value, r.path) for r in decision.output_rules] == [
        ("minAggregation", 10, FIRST), ("minAggregation", 20, "permission[0].constraint[1]"),
        ("maxResultBytes", 4096, "permission[0].constraint[2]"),
        ("maxResultBytes", 999, "permission[0].constraint[3]"),
    ]


def test_code_approval_is_a_flag_not_a_decision() -> None:
    decision = decide(offer(c("ts:codeApproval", "eq", "required")), code_digest="sm3:" + "a" * 64)
    assert decision.permitted and decision.approval_required
    assert decision.flags == (engine.Flag("approval-required", FIRST, "sm3:" + "a" * 64),)
    assert not decide(offer(c("purpose", "eq", "research"))).approval_required
    # during negotiation there is no code yet: still a permit, still flagged
    assert decide(offer(c("ts:codeApproval", "eq", "required"))).flags[0].code_digest is None


# --- duties ------------------------------------------------------------------------------

DUE = "2025-09-01T00:00:00+08:00"


def test_duties_from_constraints_duty_and_obligation() -> None:
    policy = offer(c("ts:deleteResultsBy", "eq", DUE))
    policy["permission"][0]["duty"] = [
        {"action": "ts:deleteResults", "constraint": [c("ts:deleteResultsBy", "lteq",
                                                        "2025-08-01T00:00:00Z")]}]
    policy["obligation"] = [{"action": "ts:deleteResults",
                             "constraint": [c("ts:deleteResultsBy", "eq", "2026-01-01T00:00:00Z")]}]
    decision = decide(policy)
    assert decision.permitted
    assert [(d.action, d.due.isoformat(), d.path) for d in decision.duties] == [
        ("ts:deleteResults", "2025-09-01T00:00:00+08:00", FIRST),
        ("ts:deleteResults", "2025-08-01T00:00:00+00:00", "permission[0].duty[0].constraint[0]"),
        ("ts:deleteResults", "2026-01-01T00:00:00+00:00", "obligation[0].constraint[0]"),
    ]
    assert decision.to_json()["duties"][0] == {"action": "ts:deleteResults",
                                               "due": "2025-09-01T00:00:00+08:00", "path": FIRST}


def test_an_obligation_that_cannot_be_met_denies() -> None:
    policy = offer(c("purpose", "eq", "research"))
    policy["obligation"] = [{"action": "ts:deleteResults",
                             "constraint": [c("ts:deleteResultsBy", "eq", "2025-01-01T00:00:00Z")]}]
    decision = decide(policy)
    assert not decision.permitted and decision.path == "obligation[0].constraint[0]"


@pytest.mark.parametrize(("duty", "path", "reason"), [
    ({"action": "compensate"}, "permission[0].duty[0].action", "unknown duty action"),
    ({"action": "ts:deleteResults"}, "permission[0].duty[0]", "needs a deadline"),
    ({"action": "ts:deleteResults", "constraint": [c("purpose", "eq", "research")]},
     "permission[0].duty[0].constraint[0]", "a duty's constraints give its deadline"),
    ({"action": "ts:deleteResults", "constraint": [
        {"or": [c("ts:deleteResultsBy", "eq", DUE), c("ts:deleteResultsBy", "eq", DUE)]}]},
     "permission[0].duty[0].constraint[0].or[0]", "cannot sit under an 'or'"),
    ({"action": "ts:deleteResults", "remedy": []}, "permission[0].duty[0].remedy",
     "unknown Duty property"),
])
def test_malformed_duties_are_refused(duty: dict[str, Any], path: str, reason: str) -> None:
    policy = offer()
    policy["permission"][0]["duty"] = [duty]
    exc = refused(policy)
    assert exc.path == path and reason in exc.reason


# --- logical constraints -----------------------------------------------------------------

RESEARCH = c("purpose", "eq", "research")
TEACHING = c("purpose", "eq", "teaching")
FEDERATED = c("ts:computeMode", "eq", "federated")
SANDBOX = c("ts:computeMode", "eq", "sandbox")

LOGICAL_CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, str] | None]] = [
    ("and: all hold", {"and": [RESEARCH, FEDERATED]}, {}, None),
    ("and: one fails", {"and": [RESEARCH, SANDBOX]}, {},
     (FIRST + ".and[1]", "ts:computeMode 'federated' is not eq 'sandbox'")),
    ("and: a failure beats an undetermined one", {"and": [RESEARCH, SANDBOX]},
     {"purpose": None}, (FIRST + ".and[1]", "ts:computeMode 'federated' is not eq 'sandbox'")),
    ("and: empty holds", {"and": []}, {}, None),
    ("odrl:and", {"odrl:and": [RESEARCH]}, {}, None),
    ("andSequence: all hold", {"andSequence": [RESEARCH, FEDERATED]}, {}, None),
    ("andSequence: the first failure decides", {"andSequence": [TEACHING, SANDBOX]}, {},
     (FIRST + ".andSequence[0]", "purpose 'research' is not eq 'teaching'")),
    ("andSequence: an undetermined step stops it", {"andSequence": [RESEARCH, SANDBOX]},
     {"purpose": None}, (FIRST + ".andSequence[0]", "the request names no purpose")),
    ("andSequence: empty holds", {"andSequence": []}, {}, None),
    ("or: one holds", {"or": [TEACHING, FEDERATED]}, {}, None),
    ("or: none holds", {"or": [TEACHING, SANDBOX]}, {},
     (FIRST, "none of the 2 constraints of 'or' holds: "
             f"[{FIRST}.or[0]] purpose 'research' is not eq 'teaching'; "
             f"[{FIRST}.or[1]] ts:computeMode 'federated' is not eq 'sandbox'")),
    ("or: holds despite an undetermined one", {"or": [TEACHING, FEDERATED]}, {"purpose": None},
     None),
    ("xone: exactly one", {"xone": [RESEARCH, SANDBOX]}, {}, None),
    ("xone: two hold", {"xone": [RESEARCH, FEDERATED]}, {},
     (FIRST, "more than one constraint of 'xone' holds: "
             f"[{FIRST}.xone[0]] purpose 'research' is eq 'research'; "
             f"[{FIRST}.xone[1]] ts:computeMode 'federated' is eq 'federated'")),
    ("xone: none holds", {"xone": [TEACHING, SANDBOX]}, {},
     (FIRST, "none of the 2 constraints of 'xone' holds: "
             f"[{FIRST}.xone[0]] purpose 'research' is not eq 'teaching'; "
             f"[{FIRST}.xone[1]] ts:computeMode 'federated' is not eq 'sandbox'")),
    ("xone: one holds, one undetermined", {"xone": [RESEARCH, SANDBOX]},
     {"compute_mode": None},
     (FIRST, "cannot tell whether exactly one constraint of 'xone' holds: "
             f"[{FIRST}.xone[1]] the request names no compute mode")),
    ("nested: or of ands", {"or": [{"and": [TEACHING, FEDERATED]},
                                   {"and": [RESEARCH, FEDERATED]}]}, {}, None),
]


@pytest.mark.parametrize(("constraint", "changes", "denied"),
                         [case[1:] for case in LOGICAL_CASES],
                         ids=[case[0] for case in LOGICAL_CASES])
def test_logical_constraints(constraint: dict[str, Any], changes: dict[str, Any],
                             denied: tuple[str, str] | None) -> None:
    decision = decide(offer(constraint), **changes)
    if denied is None:
        assert decision.permitted, decision.reason
    else:
        assert not decision.permitted
        assert (decision.path, decision.reason) == denied


@pytest.mark.parametrize("keyword", ["or", "xone", "odrl:or"])
def test_an_empty_or_or_xone_refuses(keyword: str) -> None:
    exc = refused(offer({keyword: []}))
    assert exc.path == FIRST and "never satisfied" in exc.reason
    # and the combinator itself, built directly, never holds
    combinator = engine._AnyOf if keyword != "xone" else engine._OneOf
    ctx = engine._Context(REQ, NOW, 0)
    assert combinator("p", (), keyword).check(ctx).truth is engine.Truth.FAILS


def test_sequence_and_and_differ_only_for_undetermined_steps_in_a_prohibition() -> None:
    # and(undetermined, fails) fails: the prohibition is lifted;
    # andSequence stops at the undetermined step: it cannot be ruled out.
    steps = [c("purpose", "eq", "marketing"), SANDBOX]
    lifted = decide(offer(prohibitions=[[{"and": steps}]]), purpose=None)
    assert lifted.permitted
    kept = decide(offer(prohibitions=[[{"andSequence": steps}]]), purpose=None)
    assert not kept.permitted and kept.path == "prohibition[0]"
    assert "cannot be ruled out" in kept.reason


# --- prohibitions, permissions, policy-level conditions ----------------------------------


def test_a_matching_prohibition_denies_naming_it() -> None:
    policy = offer(prohibitions=[[c("assignee", "eq", "urn:x")],
                                 [c("purpose", "eq", "marketing")]])
    assert decide(policy).permitted
    decision = decide(policy, purpose="marketing")
    assert not decision.permitted
    assert decision.path == "prohibition[1]"
    assert decision.reason == "prohibition[1] applies: purpose 'marketing' is eq 'marketing'"


def test_a_prohibition_without_constraints_or_undecidable_applies() -> None:
    assert not decide(offer(prohibitions=[[]])).permitted
    decision = decide(offer(prohibitions=[[c("purpose", "eq", "marketing")]]), purpose=None)
    assert not decision.permitted
    assert decision.reason == ("prohibition[0] cannot be ruled out: the request names no "
                               "purpose")


def test_the_first_permission_that_holds_grants_and_every_failure_is_named() -> None:
    policy = {"ts:purposes": VOCAB, "permission": [
        {"action": "use", "constraint": [TEACHING]},
        {"action": "odrl:use", "constraint": [FEDERATED, c("count", "lteq", "3")]},
        {"action": "use"},
    ]}
    decision = decide(policy)
    assert decision.permitted and decision.path == "permission[1]" and decision.use_limit == 3
    denied = decide({**policy, "permission": policy["permission"][:2]}, purpose="marketing",
                    compute_mode=ComputeMode.SANDBOX)
    assert not denied.permitted
    assert [f.path for f in denied.failures] == [FIRST, "permission[1].constraint[0]"]


def test_no_permission_means_nothing_is_permitted() -> None:
    decision = decide({"prohibition": [{"action": "use",
                                        "constraint": [c("dateTime", "lt", "2000-01-01T00:00Z")]}]})
    assert not decision.permitted and "no permission" in decision.reason


@pytest.mark.parametrize(("policy_extra", "changes", "path", "reason"), [
    ({}, {"action": "transfer"}, "action", "action 'transfer' is not known"),
    ({}, {"action": "odrl:use"}, None, None),
    ({"target": "urn:ds:1"}, {"target": "urn:ds:2"}, "target", "is for 'urn:ds:1', not"),
    ({"target": "urn:ds:1"}, {}, "target", "the request names no target"),
    ({"target": "urn:ds:1"}, {"target": "urn:ds:1"}, None, None),
    ({"@type": "Agreement", "target": "urn:ds:1", "assigner": "urn:prov",
      "assignee": "urn:someone-else"}, {"target": "urn:ds:1"}, "assignee",
     f"the Agreement is with 'urn:someone-else', not '{LAB}'"),
    ({"@type": "Agreement", "target": "urn:ds:1", "assigner": "urn:prov", "assignee": LAB},
     {"target": "urn:ds:1"}, None, None),
    ({}, {"purpose": "spam"}, "ts:purposes", "purpose 'spam' is not in the provider's purpose "
                                              "vocabulary"),
])
def test_policy_level_conditions(policy_extra: dict[str, Any], changes: dict[str, Any],
                                 path: str | None, reason: str | None) -> None:
    decision = decide(offer(**policy_extra), **changes)
    if path is None:
        assert decision.permitted, decision.reason
    else:
        assert not decision.permitted and decision.path == path
        assert reason is not None and reason in decision.reason


def test_the_product_vocabulary() -> None:
    policy = offer(RESEARCH)
    del policy["ts:purposes"]
    exc = refused(policy)
    assert exc.path == FIRST and "needs the provider's purpose vocabulary" in exc.reason
    compiled = compile_policy(policy, purposes=["research", "teaching"])
    assert evaluate(compiled, REQ, now=NOW, uses_so_far=0).permitted
    decision = evaluate(compiled, replace(REQ, purpose="marketing"), now=NOW, uses_so_far=0)
    assert (decision.path, decision.permitted) == ("", False)
    assert "not in the provider's purpose vocabulary (research, teaching)" in decision.reason
    # a policy's own list must stay within the product's
    assert refused(offer(RESEARCH), purposes=["research"]).path == "ts:purposes"
    exc = refused({**policy, "permission": [{"action": "use", "constraint": [TEACHING]}]},
                  purposes=["research"])
    assert "purpose 'teaching' is not in the purpose vocabulary (research)" in exc.reason


# --- refused at compile time ---------------------------------------------------------------

COMPILE_REFUSALS: list[tuple[str, Any, str, str]] = [
    # unknown words
    ("unknown operator", offer(c("purpose", "term-lteq", "research")), FIRST,
     "unknown operator 'term-lteq'"),
    ("unknown operator 2", offer(c("purpose", "like", "res%")), FIRST, "unknown operator 'like'"),
    ("unknown left operand", offer(c("spatial", "eq", "EU")), FIRST,
     "unknown left operand 'spatial'"),
    ("unknown odrl left operand", offer(c("odrl:recipient", "eq", "x")), FIRST,
     "unknown left operand 'odrl:recipient'"),
    ("ts term without prefix", offer(c("computeMode", "eq", "federated")), FIRST,
     "unknown left operand 'computeMode'"),
    ("ts term under odrl prefix", offer(c("odrl:ts:computeMode", "eq", "federated")), FIRST,
     "unknown left operand"),
    ("unknown ts left operand", offer(c("ts:region", "eq", "cn")), FIRST,
     "unknown left operand 'ts:region'"),
    ("unknown action", {"permission": [{"action": "transfer"}]}, "permission[0].action",
     "unknown action 'transfer'"),
    ("unknown odrl action", {"permission": [{"action": "odrl:display"}]},
     "permission[0].action", "unknown action 'odrl:display'"),
    ("action with refinement", {"permission": [{"action": {"rdf:value": {"@id": "odrl:use"}}}]},
     "permission[0].action", "action must be a string"),
    ("unknown prohibition action", {"prohibition": [{"action": "print"}]},
     "prohibition[0].action", "unknown action 'print'"),
    ("unknown logical keyword", offer({"not": [RESEARCH]}), FIRST,
     "unknown logical keyword 'not'"),
    ("unknown logical keyword 2", offer({"nand": [RESEARCH, TEACHING]}), FIRST,
     "unknown logical keyword 'nand'"),
    # malformed
    ("missing rightOperand", offer({"leftOperand": "purpose", "operator": "eq"}), FIRST,
     "rightOperand is missing"),
    ("constraint not an object", offer("purpose eq research"), FIRST, "a JSON object"),
    ("empty constraint", offer({}), FIRST, "exactly one of and"),
    ("logical not a list", offer({"and": RESEARCH}), FIRST, "takes an array"),
    ("two logical keywords", offer({"and": [RESEARCH], "or": [TEACHING]}), FIRST,
     "exactly one of"),
    ("logical mixed with atomic", offer({**RESEARCH, "and": [TEACHING]}), FIRST,
     "unsupported constraint property 'and'"),
    ("constraint with a unit", offer({**c("count", "lteq", "5"), "unit": "x"}), FIRST,
     "unsupported constraint property 'unit'"),
    ("constraint not a list", {"permission": [{"action": "use", "constraint": RESEARCH}]},
     "permission[0].constraint", "must be an array"),
    ("unknown policy property", offer(conflict="perm"), "conflict",
     "unknown policy property 'conflict'"),
    ("unknown rule property", {"permission": [{"action": "use", "target": "urn:x"}]},
     "permission[0].target", "unknown Permission property 'target'"),
    ("duty on a prohibition", {"prohibition": [{"action": "use", "duty": []}]},
     "prohibition[0].duty", "unknown Prohibition property 'duty'"),
    ("policy type Set", {"@type": "Set", "permission": [{"action": "use"}]}, "@type",
     "'Offer' or 'Agreement'"),
    ("agreement without assignee", {"@type": "Agreement", "target": "t", "assigner": "a",
                                    "permission": [{"action": "use"}]}, "assignee",
     "an Agreement names its assignee"),
    ("empty permission list", {"permission": []}, "permission", "non-empty array"),
    ("no rule", {"@id": "x"}, "", "a permission or a prohibition"),
    ("not an object", ["permission"], "", "a policy is a JSON object"),
    ("unknown profile", {"profile": "https://test.com/profile",
                         "permission": [{"action": "use"}]}, "profile",
     "profile 'https://test.com/profile' is not known"),
    # type mismatches
    ("count not a number", offer(c("count", "lteq", "ten")), FIRST,
     "count lteq: 'ten' is not an integer"),
    ("count a float", offer(c("count", "lteq", 2.5)), FIRST, "2.5 is not an integer"),
    ("count a boolean", offer(c("count", "lteq", {"@value": True})), FIRST, "is a boolean"),
    ("count typed as dateTime", offer(c("count", "lteq", {"@value": "5",
                                                          "@type": "xsd:dateTime"})), FIRST,
     "@type 'xsd:dateTime' is not an integer type"),
    ("count below zero", offer(c("count", "lt", "0")), FIRST, "a use limit below 0"),
    ("dateTime not a date", offer(c("dateTime", "lt", "tomorrow")), FIRST,
     "'tomorrow' is not an RFC 3339 dateTime"),
    ("dateTime without zone", offer(c("dateTime", "lt", "2025-01-01T00:00:00")), FIRST,
     "with a time zone offset"),
    ("dateTime impossible", offer(c("dateTime", "lt", "2025-02-30T00:00:00Z")), FIRST,
     "is not a valid dateTime"),
    ("dateTime leap second", offer(c("dateTime", "lt", "2016-12-31T23:59:60Z")), FIRST,
     "is not a valid dateTime"),
    ("dateTime typed as integer", offer(c("dateTime", "lt", {"@value": "2025-01-01T00:00:00Z",
                                                             "@type": "xsd:integer"})), FIRST,
     "is not xsd:dateTime"),
    ("purpose lt", offer(c("purpose", "lt", "research")), FIRST,
     "purpose does not take lt (terms have no order)"),
    ("mode gt", offer(c("ts:computeMode", "gt", "sandbox")), FIRST, "terms have no order"),
    ("unknown mode", offer(c("ts:computeMode", "eq", "gpu")), FIRST,
     "'gpu' is not a compute mode"),
    ("unknown role", offer(c("assignee", "eq", "role:king")), FIRST, "'role:king' names no role"),
    ("isA on a participant", offer(c("assignee", "isA", "urn:x")), FIRST, "isA takes a role"),
    ("eq on a set", offer(c("purpose", "eq", ["research"])), FIRST,
     "eq takes a single value, not an array"),
    ("isAnyOf on a scalar", offer(c("purpose", "isAnyOf", "research")), FIRST,
     "isAnyOf takes a non-empty array"),
    ("isAnyOf empty", offer(c("purpose", "isNoneOf", [])), FIRST, "non-empty array"),
    ("purpose number", offer(c("purpose", "eq", 5)), FIRST, "5 is not a non-empty string"),
    ("purpose unknown", offer(c("purpose", "eq", "reserch")), FIRST,
     "purpose 'reserch' is not in the purpose vocabulary"),
    ("count lower bound", offer(c("count", "gteq", "3")), FIRST,
     "count does not take gteq (count takes an upper bound on the uses)"),
    ("minAggregation upper bound", offer(c("ts:minAggregation", "lteq", "3")), FIRST,
     "ts:minAggregation does not take lteq"),
    ("maxResultBytes on array", offer(c("ts:maxResultBytes", "lteq", ["3"])), FIRST,
     "lteq takes a single value"),
    ("codeApproval other value", offer(c("ts:codeApproval", "eq", "optional")), FIRST,
     "the only value is 'required'"),
    # effects where they cannot apply
    ("count under or", offer({"or": [c("count", "lteq", "3"), RESEARCH]}), FIRST + ".or[0]",
     "cannot sit under an 'or' / 'xone' (permission[0].constraint[0])"),
    ("approval under xone", offer({"xone": [RESEARCH, {"and": [
        c("ts:codeApproval", "eq", "required")]}]}), FIRST + ".xone[1].and[0]",
     "cannot sit under an 'or'"),
    ("count in a prohibition", offer(prohibitions=[[c("count", "gt", "3")]]),
     "prohibition[0].constraint[0]", "has no meaning in a prohibition"),
    ("output rule in a prohibition", offer(prohibitions=[[c("ts:maxResultBytes", "lt", "3")]]),
     "prohibition[0].constraint[0]", "has no meaning in a prohibition"),
    # vocabulary declarations
    ("ts:purposes empty", offer(**{"ts:purposes": []}), "ts:purposes", "non-empty array"),
    ("ts:purposes bad term", offer(**{"ts:purposes": ["re search"]}), "ts:purposes",
     "'re search' is not a purpose term"),
    ("ts:purposes repeated", offer(**{"ts:purposes": ["a", "a"]}), "ts:purposes",
     "'a' appears twice"),
]


@pytest.mark.parametrize(("policy", "path", "reason"), [case[1:] for case in COMPILE_REFUSALS],
                         ids=[case[0] for case in COMPILE_REFUSALS])
def test_refused_at_compile_time(policy: Any, path: str, reason: str) -> None:
    exc = refused(policy)
    assert exc.path == path, exc
    assert reason in exc.reason, exc


def test_every_left_operand_has_its_operators_and_refusal_hint() -> None:
    assert set(engine._OPERATORS) == set(engine._WHY_NOT) == set(LeftOperand)


def test_a_policy_that_does_not_compile_is_a_denial_at_evaluation() -> None:
    decision = evaluate(offer(c("spatial", "eq", "EU")), REQ, now=NOW, uses_so_far=0)
    assert not decision.permitted and decision.policy_id == "urn:offer:1"
    assert decision.path == FIRST
    assert decision.reason.startswith("the policy is refused: unknown left operand 'spatial'")
    assert not evaluate(None, REQ, now=NOW, uses_so_far=0).permitted  # type: ignore[arg-type]


# --- type mismatches at evaluation time: refusals with a reason, never exceptions ------------

EVERYTHING = offer(
    c("purpose", "isA", "research"), c("ts:computeMode", "neq", "sandbox"),
    c("assignee", "eq", "role:consumer"), c("dateTime", "lt", "2030-01-01T00:00:00Z"),
    c("count", "lteq", "100"), c("ts:minAggregation", "gteq", "5"),
    c("ts:maxResultBytes", "lteq", "100000"), c("ts:codeApproval", "eq", "required"),
)


@pytest.mark.parametrize(("changes", "now", "uses", "path", "reason"), [
    ({"result_bytes": "big"}, NOW, 0, "permission[0].constraint[6]",
     "request.result_bytes must be a non-negative integer, got 'big'"),
    ({"aggregation_k": -1}, NOW, 0, "permission[0].constraint[5]",
     "request.aggregation_k must be a non-negative integer, got -1"),
    ({"aggregation_k": True}, NOW, 0, "permission[0].constraint[5]",
     "request.aggregation_k must be a non-negative integer, got True"),
    ({"compute_mode": 5}, NOW, 0, "permission[0].constraint[1]",
     "request.compute_mode 5 is not one of"),
    ({"purpose": ["research"]}, NOW, 0, "ts:purposes",
     "request.purpose must be a string, got ['research']"),
    ({"roles": "consumer"}, NOW, 0, "permission[0].constraint[2]",
     "request.roles must be a set of role names"),
    ({"roles": frozenset({1})}, NOW, 0, "permission[0].constraint[2]",
     "request.roles must be a set of role names"),
    ({"assignee": None}, NOW, 0, "permission[0].constraint[2]",
     "request.assignee must be a participant id"),
    ({"code_digest": 12}, NOW, 0, "permission[0].constraint[7]",
     "request.code_digest must be a string"),
    ({"action": None}, NOW, 0, "action", "action None is not known"),
    ({}, datetime(2025, 6, 1), 0, "", "now must be a timezone-aware datetime"),
    ({}, "2025-06-01T00:00:00Z", 0, "", "now must be a timezone-aware datetime"),
    ({}, NOW, -1, "", "uses_so_far must be a non-negative integer"),
    ({}, NOW, True, "", "uses_so_far must be a non-negative integer"),
    ({}, NOW, "3", "", "uses_so_far must be a non-negative integer"),
])
def test_type_mismatches_are_refusals(changes: dict[str, Any], now: Any, uses: Any,
                                      path: str, reason: str) -> None:
    assert decide(EVERYTHING, code_digest="sm3:00").permitted
    decision = evaluate(compile_policy(EVERYTHING), replace(REQ, **changes), now=now,
                        uses_so_far=uses)
    assert not decision.permitted
    assert decision.path == path and reason in decision.reason, decision.to_json()


def test_a_request_that_is_not_a_request_is_refused() -> None:
    decision = evaluate(compile_policy(offer()), {"assignee": LAB},  # type: ignore[arg-type]
                        now=NOW, uses_so_far=0)
    assert not decision.permitted and "must be a Request" in decision.reason


# --- the classification floor ------------------------------------------------------------

PRIVATE = c("ts:computeMode", "isAnyOf", ["federated", "homomorphic"])
APPROVAL = c("ts:codeApproval", "eq", "required")
ALL_MODES = list(ComputeMode)


@pytest.mark.parametrize(("constraints", "level", "modes", "rule", "reason"), [
    ([PRIVATE, APPROVAL], Level.CORE, ALL_MODES, "core-not-offered",
     "core data (核心数据) is never offered"),
    ([], Level.IMPORTANT, ALL_MODES, "privacy-modes-only",
     "would grant sandbox, which no ts:computeMode constraint rules out"),
    ([APPROVAL], Level.IMPORTANT, ALL_MODES, "privacy-modes-only", "would grant sandbox"),
    ([{"or": [FEDERATED, RESEARCH]}, APPROVAL], Level.IMPORTANT, ALL_MODES,
     "privacy-modes-only", "would grant sandbox"),
    ([{"xone": [SANDBOX, FEDERATED]}, APPROVAL], Level.IMPORTANT, ALL_MODES,
     "privacy-modes-only", "would grant sandbox"),
    ([c("ts:computeMode", "neq", "homomorphic"), APPROVAL], Level.IMPORTANT, ALL_MODES,
     "privacy-modes-only", "would grant sandbox"),
    ([PRIVATE], Level.IMPORTANT, ALL_MODES, "approval-required",
     "lacks ts:codeApproval eq \"required\""),
    ([PRIVATE, APPROVAL], Level.IMPORTANT, ["federated"], "product-modes",
     "would grant compute mode homomorphic, which the product does not offer"),
    ([], Level.GENERAL, ["federated"], "product-modes",
     "would grant compute mode homomorphic, sandbox"),
    ([PRIVATE, APPROVAL], Level.IMPORTANT, ALL_MODES, None, None),
    ([{"and": [FEDERATED, RESEARCH]}, {"and": [APPROVAL]}], Level.IMPORTANT, ALL_MODES,
     None, None),
    ([c("ts:computeMode", "isNoneOf", ["sandbox"]), APPROVAL], Level.IMPORTANT,
     ["federated", "homomorphic"], None, None),
    ([{"or": [SANDBOX, FEDERATED]}], Level.GENERAL, ["sandbox", "federated"], None, None),
    ([], Level.GENERAL, ALL_MODES, None, None),
])
def test_classification_floor(constraints: list[Any], level: Level, modes: list[Any],
                              rule: str | None, reason: str | None) -> None:
    policy = offer(*constraints)
    if rule is None:
        apply_floor(compile_policy(policy), level, modes)
        return
    with pytest.raises(PolicyInvalid) as info:
        apply_floor(policy, level, modes)
    assert info.value.rule == rule
    assert reason is not None and reason in info.value.reason, info.value
    assert info.value.path == ("" if rule == "core-not-offered" else "permission[0]")


def test_the_floor_looks_at_every_permission_and_not_at_prohibitions() -> None:
    policy = {"permission": [{"action": "use", "constraint": [PRIVATE, APPROVAL]},
                             {"action": "use", "constraint": [APPROVAL]}],
              "prohibition": [{"action": "use", "constraint": [SANDBOX]}]}
    with pytest.raises(PolicyInvalid) as info:
        apply_floor(policy, Level.IMPORTANT, ALL_MODES)
    assert info.value.path == "permission[1]"


# --- the Dataspace Protocol's own examples -----------------------------------------------

# Every Offer / Agreement in the 2025-1 examples, and what the engine makes of it.
EXAMPLES: dict[tuple[str, str], tuple[str, str] | None] = {
    ("negotiation/example/contract-agreement-message.json", "agreement"): None,
    ("negotiation/example/contract-agreement-message-full.json", "agreement"):
        ("profile", "profile 'https://test.com/profile' is not known"),
    ("negotiation/example/contract-offer-message.json", "offer"): None,
    ("negotiation/example/contract-offer-message_initial.json", "offer"): None,
    ("negotiation/example/contract-request-message.json", "offer"): None,
    ("negotiation/example/contract-request-message_initial.json", "offer"): None,
    ("catalog/example/catalog.json", "dataset[0].hasPolicy[0]"):
        ("permission[0].constraint[0]", "unknown left operand 'spatial'"),
    ("catalog/example/dataset.json", "hasPolicy[0]"):
        ("permission[0].constraint[0]", "unknown left operand 'spatial'"),
}


def _example_policies(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for folder in ("negotiation/example", "catalog/example"):
        for path in sorted((root / folder).glob("*.json")):
            doc = json.loads(path.read_text(encoding="utf-8"))
            name = f"{folder}/{path.name}"
            for key in ("offer", "agreement"):
                if isinstance(doc.get(key), dict):
                    found[(name, key)] = doc[key]
            if doc.get("@type") == "Dataset":
                for i, policy in enumerate(doc.get("hasPolicy", [])):
                    found[(name, f"hasPolicy[{i}]")] = policy
            if doc.get("@type") == "Catalog":
                for i, dataset in enumerate(doc.get("dataset", [])):
                    for j, policy in enumerate(dataset.get("hasPolicy", [])):
                        found[(name, f"dataset[{i}].hasPolicy[{j}]")] = policy
    return found


def test_the_dsp_example_policies() -> None:
    found = _example_policies(dsp_dir())
    assert set(found) == set(EXAMPLES), "the examples changed: classify the new ones"
    for key, expected in EXAMPLES.items():
        before = copy.deepcopy(found[key])
        if expected is None:
            compile_policy(found[key])
        else:
            exc = refused(found[key])
            assert (exc.path, expected[1] in exc.reason) == (expected[0], True), (key, exc)
        assert found[key] == before


def test_the_full_dsp_agreement_is_refused_for_its_left_operands_too() -> None:
    full = _example_policies(dsp_dir())[
        ("negotiation/example/contract-agreement-message-full.json", "agreement")]
    del full["profile"]
    exc = refused(full)
    assert exc.path == "permission[1].constraint[0].and[0]"
    assert exc.reason.startswith("unknown left operand 'partner'")
    full["permission"] = full["permission"][:1]
    compile_policy(full)


def test_the_dsp_agreement_is_valid_until_its_date() -> None:
    agreement = _example_policies(dsp_dir())[
        ("negotiation/example/contract-agreement-message.json", "agreement")]
    request = Request(assignee="http://example.com/Consumer",
                      target="urn:uuid:3dd1add4-4d2d-569e-d634-8394a8836d23")
    before = datetime(2023, 12, 31, 6, 0, tzinfo=UTC)
    assert evaluate(agreement, request, now=before, uses_so_far=0).permitted
    after = evaluate(agreement, request, now=before + timedelta(microseconds=1), uses_so_far=0)
    assert not after.permitted and after.path == FIRST
    other = evaluate(agreement, replace(request, assignee="http://example.com/Other"),
                     now=before, uses_so_far=0)
    assert (other.permitted, other.path) == (False, "assignee")


# --- the decision as JSON ----------------------------------------------------------------


def test_decisions_are_plain_json() -> None:
    permit = decide(EVERYTHING, code_digest="sm3:00", uses=4)
    deny = decide(EVERYTHING, purpose="marketing")
    for decision in (permit, deny):
        data = decision.to_json()
        assert json.loads(json.dumps(data)) == data
        canonical_json(data)  # I-JSON: no floats, only strings, integers, lists, objects
    assert permit.to_json() == {
        "decision": "permit", "policy": "urn:offer:1", "path": "permission[0]",
        "reason": permit.reason, "failures": [], "duties": [],
        "flags": [{"flag": "approval-required", "path": "permission[0].constraint[7]",
                   "codeDigest": "sm3:00"}],
        "outputRules": [{"rule": "minAggregation", "value": 5,
                         "path": "permission[0].constraint[5]"},
                        {"rule": "maxResultBytes", "value": 100000,
                         "path": "permission[0].constraint[6]"}],
        "approvalRequired": True, "minAggregation": 5, "maxResultBytes": 100000,
        "uses": 1, "useLimit": 100,
    }
    assert deny.to_json()["failures"] == [{
        "path": FIRST, "reason": "purpose 'marketing' is not isA 'research'"}]
    assert deny.to_json()["decision"] == "deny" and deny.to_json()["uses"] == 0


# --- properties ----------------------------------------------------------------------------

PARTICIPANTS = ["urn:p:a", "urn:p:b", "urn:p:c"]
ROLE_NAMES = ["consumer", "provider", "regulator"]
MODES = [m.value for m in ComputeMode]
OFFSETS = [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]
INSTANTS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31),
                        timezones=st.sampled_from(OFFSETS))
TERM_OPS = ["eq", "neq", "isA", "isAnyOf", "isPartOf", "isNoneOf", "isAllOf", "hasPart"]
SET_OPS = {"isAnyOf", "isPartOf", "isNoneOf", "isAllOf", "hasPart"}
ORDER = {"eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lteq": operator.le,
         "gt": operator.gt, "gteq": operator.ge}


def _term_constraint(left: str, terms: list[str], is_a: list[str] | None = None
                     ) -> st.SearchStrategy[dict[str, Any]]:
    def build(op: str, one: str, some: list[str], kind: str) -> dict[str, Any]:
        if op == "isA":
            return c(left, op, kind)
        return c(left, op, some if op in SET_OPS else one)
    return st.builds(build, st.sampled_from(TERM_OPS), st.sampled_from(terms),
                     st.lists(st.sampled_from(terms), min_size=1, max_size=3),
                     st.sampled_from(terms if is_a is None else is_a))


PARTIES = PARTICIPANTS + [f"role:{r}" for r in ROLE_NAMES]
PLAIN = st.one_of(  # constraints with no effects: allowed anywhere
    _term_constraint("purpose", VOCAB),
    _term_constraint("ts:computeMode", MODES),
    _term_constraint("assignee", PARTIES, is_a=[f"role:{r}" for r in ROLE_NAMES]),
    st.builds(lambda op, t: c("dateTime", op, t.isoformat()), st.sampled_from(sorted(ORDER)),
              INSTANTS),
)
LOGICAL = st.recursive(
    PLAIN, lambda inner: st.builds(
        lambda kw, items: {kw: items}, st.sampled_from(["and", "andSequence", "or", "xone"]),
        st.lists(inner, min_size=1, max_size=3)),
    max_leaves=6)
EFFECTS = st.one_of(
    st.builds(lambda op, n: c("count", op, str(n)), st.sampled_from(["lt", "lteq"]),
              st.integers(1, 12)),
    st.builds(lambda op, n: c("ts:minAggregation", op, str(n)), st.sampled_from(["gt", "gteq"]),
              st.integers(1, 40)),
    st.builds(lambda op, n: c("ts:maxResultBytes", op, str(n)), st.sampled_from(["lt", "lteq"]),
              st.integers(1, 5000)),
    st.just(c("ts:codeApproval", "eq", "required")),
)
PERMISSION_CONSTRAINT = st.one_of(LOGICAL, EFFECTS)
POLICIES = st.builds(
    lambda perms, prohibs: {
        "@id": "urn:offer:p", "ts:purposes": VOCAB,
        "permission": [{"action": "use", "constraint": p} for p in perms],
        **({"prohibition": [{"action": "use", "constraint": p} for p in prohibs]}
           if prohibs else {})},
    st.lists(st.lists(PERMISSION_CONSTRAINT, max_size=4), min_size=1, max_size=3),
    st.lists(st.lists(LOGICAL, max_size=2), max_size=2),
)
REQUESTS = st.builds(
    Request, assignee=st.sampled_from(PARTICIPANTS),
    roles=st.frozensets(st.sampled_from(ROLE_NAMES), max_size=3),
    purpose=st.none() | st.sampled_from(VOCAB),
    compute_mode=st.none() | st.sampled_from(list(ComputeMode)),
    aggregation_k=st.none() | st.integers(0, 50),
    result_bytes=st.none() | st.integers(0, 6000),
    code_digest=st.none() | st.just("sm3:" + "0" * 64),
)
USES = st.integers(0, 14)


def oracle(constraint: Mapping[str, Any], request: Request, now: datetime, uses: int) -> bool:
    """Whether ``constraint`` certainly holds, written independently of the engine: a value the
    request does not give makes a constraint on it false."""
    for keyword, combine in (("and", all), ("andSequence", all), ("or", any)):
        if keyword in constraint:
            return combine(oracle(x, request, now, uses) for x in constraint[keyword])
    if "xone" in constraint:
        return sum(oracle(x, request, now, uses) for x in constraint["xone"]) == 1
    left, op, right = constraint["leftOperand"], constraint["operator"], constraint["rightOperand"]
    if left == "dateTime":
        return bool(ORDER[op](now, datetime.fromisoformat(right)))
    if left == "count":
        return bool(ORDER[op](uses + 1, int(right)))
    if left == "ts:minAggregation":
        return request.aggregation_k is None or bool(ORDER[op](request.aggregation_k, int(right)))
    if left == "ts:maxResultBytes":
        return request.result_bytes is None or bool(ORDER[op](request.result_bytes, int(right)))
    if left == "ts:codeApproval":
        return True
    if left == "assignee":
        identities = {request.assignee} | {f"role:{r}" for r in request.roles}
        value: str | None = request.assignee

        def is_a(x: str) -> bool:
            return x in identities
        matches = is_a
    else:
        value = request.purpose if left == "purpose" else request.compute_mode

        def matches(x: str) -> bool:
            return x == value

        def is_a(x: str) -> bool:
            return value is not None and (value == x or (left == "purpose"
                                                         and value.startswith(x + "/")))
    if value is None:
        return False
    items = right if isinstance(right, list) else [right]
    hits = [matches(x) for x in items]
    return {"eq": hits[0], "neq": not hits[0], "isA": is_a(items[0]), "isAnyOf": any(hits),
            "isPartOf": any(hits), "isNoneOf": not any(hits), "isAllOf": all(hits),
            "hasPart": all(hits)}[op]


def _rule_holds(rule: Mapping[str, Any], request: Request, now: datetime, uses: int) -> bool:
    return all(oracle(x, request, now, uses) for x in rule.get("constraint", []))


@given(POLICIES, REQUESTS, INSTANTS, USES)
def test_a_permit_is_backed_by_every_constraint_of_its_permission(
        policy: dict[str, Any], request: Request, now: datetime, uses: int) -> None:
    decision = evaluate(compile_policy(policy), request, now=now, uses_so_far=uses)
    prohibited = any(_rule_holds(p, request, now, uses) for p in policy.get("prohibition", []))
    holding = [i for i, p in enumerate(policy["permission"]) if _rule_holds(p, request, now, uses)]
    # With every value given, the engine is exact (nothing is undetermined).
    complete = request.purpose is not None and request.compute_mode is not None
    if decision.permitted:
        index = int(decision.path.removeprefix("permission[").removesuffix("]"))
        assert index in holding and not prohibited
        if complete:
            assert index == holding[0]  # the first permission that holds grants
        bounds = [int(x["rightOperand"]) - (x["operator"] == "lt")
                  for x in policy["permission"][index]["constraint"]
                  if x.get("leftOperand") == "count"]
        assert decision.use_limit == (min(bounds) if bounds else None)
        assert uses < (decision.use_limit if decision.use_limit is not None else uses + 1)
    elif complete:
        assert prohibited or not holding


@given(POLICIES, REQUESTS, INSTANTS, USES)
def test_evaluation_is_deterministic_and_changes_nothing(
        policy: dict[str, Any], request: Request, now: datetime, uses: int) -> None:
    policy_before, request_before = copy.deepcopy(policy), copy.deepcopy(request)
    compiled = compile_policy(policy)
    first = evaluate(compiled, request, now=now, uses_so_far=uses)
    again = evaluate(compile_policy(policy), request, now=now, uses_so_far=uses)
    assert first == again and first.to_json() == again.to_json()
    assert evaluate(policy, request, now=now, uses_so_far=uses) == first
    assert policy == policy_before and request == request_before


@given(POLICIES, REQUESTS, INSTANTS, USES, PERMISSION_CONSTRAINT, st.integers(0, 2))
def test_adding_a_constraint_never_turns_a_deny_into_a_permit(
        policy: dict[str, Any], request: Request, now: datetime, uses: int,
        extra: dict[str, Any], which: int) -> None:
    before = evaluate(policy, request, now=now, uses_so_far=uses)
    stricter = copy.deepcopy(policy)
    rule = stricter["permission"][which % len(stricter["permission"])]
    rule["constraint"] = [*rule["constraint"], extra]
    after = evaluate(stricter, request, now=now, uses_so_far=uses)
    assert before.permitted or not after.permitted


@given(POLICIES, REQUESTS, INSTANTS, USES, st.lists(LOGICAL, max_size=3))
def test_adding_a_prohibition_never_turns_a_deny_into_a_permit(
        policy: dict[str, Any], request: Request, now: datetime, uses: int,
        prohibition: list[dict[str, Any]]) -> None:
    before = evaluate(policy, request, now=now, uses_so_far=uses)
    stricter = copy.deepcopy(policy)
    stricter.setdefault("prohibition", []).append({"action": "use", "constraint": prohibition})
    after = evaluate(stricter, request, now=now, uses_so_far=uses)
    assert before.permitted or not after.permitted
    if after.permitted:
        assert not _rule_holds(stricter["prohibition"][-1], request, now, uses)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["@value", "@type", "@id", "x"]), inner,
                                      max_size=2), max_leaves=5),
       st.sampled_from(["purpose", "ts:computeMode", "assignee", "dateTime", "count",
                        "ts:minAggregation", "ts:maxResultBytes", "ts:codeApproval",
                        "ts:deleteResultsBy"]),
       st.sampled_from([*ORDER, *TERM_OPS]))
def test_any_right_operand_compiles_or_is_refused_with_a_reason(
        right: Any, left: str, op: str) -> None:
    try:
        compile_policy(offer(c(left, op, right)))
    except PolicyInvalid as exc:
        assert exc.path == FIRST and exc.reason
