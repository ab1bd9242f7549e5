"""Data classification and grading (数据分类分级) after GB/T 43697-2024, "Data security technology —
Rules for data classification and grading", and what each level lets a provider do.

Category (分类, GB/T 43697-2024 §5): ``<domain>`` or ``<domain>/<free text>``. The domain is the
industry field of §5.1, from the vocabulary `DOMAINS`; the optional free text (1..100
characters) is the provider's own finer class by business attribute (§5.2), e.g.
``finance/credit-records`` or ``health/门诊记录``.

Level (分级, §6.1): `Level` — general (一般数据), important (重要数据), core (核心数据). The level
sets defaults the provider cannot loosen; each rule has a stable name, carried by every refusal:

================================  =========  =================================================
rule                              levels     effect
================================  =========  =================================================
``privacy-modes-only``            important, only federated and homomorphic compute; declaring
                                  core       ``sandbox`` is refused (not dropped)
``approval-required``             important, every job needs the operator's approval: the
                                  core       spec's ``approval_required`` defaults to true,
                                             an explicit false is refused
``core-not-offered``              core       the product may be registered, but any offer is
                                             refused
``core-not-published``            core       publication (catalog listing) is refused
``masked-preview``                important, the public preview rows are masked (`mask_value`)
                                  core
================================  =========  =================================================

Masking keeps the shape of a row (same columns, every value still valid for its type or null)
and keeps nothing of the values: strings become ``"***"``; integers, numbers and booleans
become null; dates and datetimes are truncated to the first instant of their year
(``2024-05-17`` -> ``2024-01-01``, ``2024-05-17T08:30:00+08:00`` -> ``2024-01-01T00:00:00+08:00``);
nulls stay null.

The functions here work on plain values and raise `ClassificationForbids`;
`trustspace.registry.products` applies them to a `ProductSpec` and reports `ProductInvalid`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .datasource import Column, ColumnType

__all__ = [
    "DOMAINS",
    "RULES",
    "CategoryInvalid",
    "ClassificationForbids",
    "ComputeMode",
    "EffectivePolicy",
    "Level",
    "LevelRules",
    "check_approval",
    "check_category",
    "check_modes",
    "check_offers",
    "check_publishable",
    "mask_row",
    "mask_value",
    "policy_for",
]


class Level(enum.StrEnum):
    """The three levels of GB/T 43697-2024 §6.1, lowest first."""

    GENERAL = "general"  # 一般数据
    IMPORTANT = "important"  # 重要数据
    CORE = "core"  # 核心数据


class ComputeMode(enum.StrEnum):
    """How a consumer may compute on a product without receiving its data."""

    SANDBOX = "sandbox"  # the consumer's code runs next to the data, only vetted output leaves
    FEDERATED = "federated"  # federated learning: only model updates leave
    HOMOMORPHIC = "homomorphic"  # computation on encrypted data


PRIVACY_MODES: Final = frozenset({ComputeMode.FEDERATED, ComputeMode.HOMOMORPHIC})

# The industry fields GB/T 43697-2024 §5.1 names ("按照行业领域分类"), plus "other".
DOMAINS: Final[Mapping[str, str]] = {
    "industrial": "工业数据",
    "telecom": "电信数据",
    "finance": "金融数据",
    "energy": "能源数据",
    "transport": "交通运输数据",
    "natural-resources": "自然资源数据",
    "health": "卫生健康数据",
    "education": "教育数据",
    "science": "科学数据",
    "other": "其他",
}

RULE_PRIVACY_MODES: Final = "privacy-modes-only"
RULE_APPROVAL: Final = "approval-required"
RULE_NO_OFFERS: Final = "core-not-offered"
RULE_NO_PUBLICATION: Final = "core-not-published"
RULE_MASKED_PREVIEW: Final = "masked-preview"


@dataclass(frozen=True)
class LevelRules:
    """What a level allows: the compute modes a provider may declare, whether every job needs
    the operator's approval, whether the product may carry offers or be published, and whether
    its preview is masked."""

    modes: frozenset[ComputeMode]
    approval_required: bool
    offers_allowed: bool
    publishable: bool
    preview_masked: bool


RULES: Final[Mapping[Level, LevelRules]] = {
    Level.GENERAL: LevelRules(frozenset(ComputeMode), approval_required=False,
                              offers_allowed=True, publishable=True, preview_masked=False),
    Level.IMPORTANT: LevelRules(PRIVACY_MODES, approval_required=True,
                                offers_allowed=True, publishable=True, preview_masked=True),
    Level.CORE: LevelRules(PRIVACY_MODES, approval_required=True,
                           offers_allowed=False, publishable=False, preview_masked=True),
}

_LABEL = {Level.GENERAL: "general data (一般数据)", Level.IMPORTANT: "important data (重要数据)",
          Level.CORE: "core data (核心数据)"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ClassificationForbids(Exception):
    """A spec asks for more than its level allows.

    ``rule`` is the rule's name (table above), ``at`` the position inside the field it concerns
    (e.g. ``(0,)``: the first mode), ``detail`` the explanation, starting with the rule's name.
    """

    def __init__(self, rule: str, detail: str, at: tuple[int | str, ...] = ()) -> None:
        self.rule = rule
        self.at = at
        self.detail = f"{rule}: {detail}"
        super().__init__(self.detail)


@dataclass(frozen=True)
class EffectivePolicy:
    """The policy that applies to a product once its level's rules are taken into account.

    ``rules`` names the rules of the level that shaped it (empty for general data), so nothing
    about it is implicit.
    """

    level: Level
    modes: frozenset[ComputeMode]
    approval_required: bool
    offers_allowed: bool
    publishable: bool
    preview_masked: bool
    rules: tuple[str, ...]


class CategoryInvalid(ValueError):
    """A category is not ``<domain>`` or ``<domain>/<free text>``: ``reason`` is
    ``unknown-category`` (the domain is not in `DOMAINS`) or ``malformed``."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def check_category(category: str) -> None:
    domain, slash, text = category.partition("/")
    if domain not in DOMAINS:
        raise CategoryInvalid(
            "unknown-category",
            f"unknown domain {domain!r}; known (GB/T 43697-2024 §5.1): {', '.join(DOMAINS)}",
        )
    if slash and (not text.strip() or len(text) > 100 or _CONTROL.search(text)):
        raise CategoryInvalid(
            "malformed",
            "the text after '/' must be 1..100 characters, not blank, without control characters",
        )


def check_modes(level: Level, modes: Sequence[ComputeMode]) -> None:
    allowed = RULES[level].modes
    for i, mode in enumerate(modes):
        if mode not in allowed:
            raise ClassificationForbids(
                RULE_PRIVACY_MODES,
                f"{_LABEL[level]} may only be computed on in "
                f"{' or '.join(sorted(allowed))} mode; {mode} is refused",
                (i,),
            )


def check_offers(level: Level, offers: Collection[object]) -> None:
    if offers and not RULES[level].offers_allowed:
        raise ClassificationForbids(
            RULE_NO_OFFERS, f"{_LABEL[level]} is never offered; remove the {len(offers)} offer(s)",
            (0,),
        )


def check_approval(level: Level, approval_required: bool) -> None:
    if RULES[level].approval_required and not approval_required:
        raise ClassificationForbids(
            RULE_APPROVAL,
            f"every job on {_LABEL[level]} needs the operator's approval; "
            "approval_required cannot be false",
        )


def check_publishable(level: Level) -> None:
    if not RULES[level].publishable:
        raise ClassificationForbids(RULE_NO_PUBLICATION, f"{_LABEL[level]} is never published")


def policy_for(level: Level, modes: Collection[ComputeMode],
               approval_required: bool) -> EffectivePolicy:
    """The effective policy of a product whose spec already passed the checks above."""
    rules = RULES[level]
    applied: list[str] = []
    if rules.modes != frozenset(ComputeMode):
        applied.append(RULE_PRIVACY_MODES)
    if rules.approval_required:
        applied.append(RULE_APPROVAL)
    if not rules.offers_allowed:
        applied.append(RULE_NO_OFFERS)
    if not rules.publishable:
        applied.append(RULE_NO_PUBLICATION)
    if rules.preview_masked:
        applied.append(RULE_MASKED_PREVIEW)
    return EffectivePolicy(
        level=level,
        modes=frozenset(modes) & rules.modes,
        approval_required=approval_required or rules.approval_required,
        offers_allowed=rules.offers_allowed,
        publishable=rules.publishable,
        preview_masked=rules.preview_masked,
        rules=tuple(applied),
    )


def mask_value(column_type: ColumnType, value: Any) -> Any:
    """The masked form of one preview value (a valid preview value of `column_type`)."""
    if value is None:
        return None
    if column_type is ColumnType.STRING:
        return "***"
    if column_type is ColumnType.DATE:
        return value[:4] + "-01-01"
    if column_type is ColumnType.DATETIME:
        # YYYY-MM-DDTHH:MM:SS[.f+][Z|±HH:MM]: keep the year and the offset.
        offset = re.search(r"(Z|[+-]\d{2}:\d{2})$", value)
        return value[:4] + "-01-01T00:00:00" + (offset.group(1) if offset else "")
    return None  # integer, number, boolean


def mask_row(columns: Sequence[Column], row: Mapping[str, Any]) -> dict[str, Any]:
    return {c.name: mask_value(c.type, row[c.name]) for c in columns}
