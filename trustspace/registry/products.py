"""Data products as a provider registers them: `ProductSpec`, its validation, and the functions
that apply the source and classification rules to a spec.

    spec = ProductSpec.from_json(obj)   # validates; raises ProductInvalid
    info = inspect_source(spec)          # reads the source: SourceInfo(digest, rows, size_bytes)
    effective_policy(spec)               # what the level allows (EffectivePolicy)
    public_preview(spec)                 # preview rows, masked where the level says so
    check_publishable(spec)              # raises for core data

`from_json` does no I/O; `inspect_source` reads the source, and a product version records the
digest, row count and size it returns (the raw data is never returned by anything here).

The spec (a JSON object; no other member is allowed, strings are never coerced)::

    {"id": "urn:ts:product:grid-load" | "grid-load",
     "title": "...",                   # 1..200 characters, not blank
     "description": "...",             # optional, at most 5000 characters
     "keywords": ["..."],              # optional, at most 32, unique, 1..64 characters each
     "category": "energy/grid-load",   # classification.DOMAINS domain [+ "/" free text]
     "level": "general" | "important" | "core",
     "columns": [{"name": "...", "type": "string|integer|number|boolean|date|datetime"}],
     "preview": [{"<column>": <value>, ...}],          # optional, at most 20 synthetic rows
     "source": {"kind": "csv" | "parquet", "path": "/abs/file"}
             | {"kind": "sql", "url": "postgresql+psycopg://...", "table": "..."},
     "modes": ["sandbox" | "federated" | "homomorphic", ...],   # non-empty, no repeats
     "offers": [{"@id"?: "...", "permission"?: [...], "prohibition"?: [...],
                 "obligation"?: [...], ...}],        # optional, at most 64 ODRL policies
     "approval_required": true | false,  # optional; false for general data, true otherwise
     "homomorphic": {"programs": ["column_sums", ...],  # optional: the homomorphic catalog
                     "columns": ["..."],                # programs and numeric columns the
                     "per_row": false,                  # operator enables; per-row results
                     "noise_std": 0.0}}                 # and noise on released aggregates

- ``id``: a slug (``[a-z0-9]+(-[a-z0-9]+)*``, at most 64 characters) or a URN (RFC 8141
  ``urn:<nid>:<nss>`` with a lowercase NID, no ``?``/``#`` components, at most 200 characters).
  Ids are compared as strings, so the canonical (lowercase) spellings are required.
- ``columns``: 1..500, unique names; see `datasource` for the types and how a source matches.
- ``preview``: each row has exactly the declared columns; a value is null or, by type: string:
  a JSON string; integer: a JSON integer with ``|v| <= 2**53 - 1`` (I-JSON); number: such an
  integer or a finite JSON number; boolean: true/false; date: ``"YYYY-MM-DD"``; datetime:
  ``"YYYY-MM-DDTHH:MM:SS[.ffffff][Z|±HH:MM]"``. Preview rows are meant to be synthetic: nothing
  here can check that, so they are masked anyway for important and core data.
- ``modes`` are kept in the order sandbox, federated, homomorphic whatever the input order, so
  the JSON form (`to_json`) of a spec is deterministic.
- ``offers`` are ODRL policies, checked for their shape only: an object with at least one of
  ``permission``/``prohibition``/``obligation``, each a list of objects, an optional non-empty
  string ``@id`` (unique among the offers), and a canonical JSON form (RFC 8785).
- ``homomorphic``: without it a homomorphic job is refused whatever the agreement says (fail
  closed). Programs must be in `trustspace.homomorphic.CATALOG`, columns declared ``integer`` or
  ``number`` columns; per-row programs (scores, row selections) need ``per_row``.
- ``federated``: ``{"max_rounds": 10, "min_clients": 2, "dp_min_noise_multiplier": null,
  "dp_max_clipping_norm": null, "secagg": false, "approved_apps": ["sm3:..."],
  "release": {"metrics": ["eval-accuracy", ...],
              "membership_inference": {"holdout": 0.2, "max_auc": 0.65}}}``, every field
  optional; without it a federated job is refused. ``release`` (docs/federated.md, "Releasing
  the model"): ``metrics`` (absent: not restricted) are the per-round metrics the app may
  report, and with ``membership_inference`` a ``holdout`` share of the rows (0.05..0.5) stays
  out of training and the final model is withheld if sacroml's worst-case attack's mean AUC
  exceeds ``max_auc`` (0..1).
- ``approval_required``: when it is absent the level's default applies (true for important and
  core data, `classification.RULES`); an explicit false on such data is refused.

Every failure is a `ProductInvalid` with a machine-readable ``reason`` (`REASONS`), the
``field`` it concerns as a JSON Pointer (RFC 6901) into the input (``""`` for the whole object,
e.g. ``/columns/2/type``), a ``detail`` and, for ``classification-forbids``, the ``rule``. When
several things are wrong, the first (in the order of the fields above) is reported.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ..crypto import canonical_json
from . import classification
from .classification import (
    RULES,
    CategoryInvalid,
    ClassificationForbids,
    ComputeMode,
    EffectivePolicy,
    Level,
)
from .datasource import (
    SOURCE_KINDS,
    Column,
    ColumnType,
    CsvSource,
    ParquetSource,
    Source,
    SourceError,
    SourceInfo,
    SqlSource,
    scan_source,
)

__all__ = [
    "REASONS",
    "Column",
    "ColumnType",
    "ComputeMode",
    "CsvSource",
    "EffectivePolicy",
    "Level",
    "ParquetSource",
    "ProductInvalid",
    "ProductSpec",
    "SourceInfo",
    "SqlSource",
    "check_classification",
    "check_publishable",
    "effective_policy",
    "inspect_source",
    "public_preview",
]

REASONS: Final = frozenset({
    "malformed",  # not JSON, a missing/unknown member, a wrong type, a limit exceeded
    "unknown-column-type",  # a column type outside datasource.ColumnType
    "unknown-category",  # a category domain outside classification.DOMAINS
    "duplicate-column",  # two columns with the same name
    "preview-mismatch",  # a preview row does not match the columns and their types
    "classification-forbids",  # the level refuses what the spec asks (see `rule`)
    "source-missing",  # inspect_source: no such file, database or table
    "source-unreadable",  # inspect_source: the source cannot be read or parsed
    "schema-mismatch",  # inspect_source: the source's columns differ from the declared ones
})

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
_URN = re.compile(rf"urn:[a-z0-9][a-z0-9-]{{0,30}}[a-z0-9]:{_PCHAR}(?:{_PCHAR}|/)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?")
_MAX_SAFE_INTEGER = 2**53 - 1
_RULE_LISTS = ("permission", "prohibition", "obligation")


class ProductInvalid(Exception):
    """A product spec is refused: ``reason`` (one of `REASONS`), ``field`` (a JSON Pointer into
    the spec, ``""`` for the whole), ``detail`` and, for ``classification-forbids``, ``rule``."""

    def __init__(self, reason: str, field: str, detail: str, rule: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.detail = detail
        self.rule = rule
        super().__init__(f"{reason} at {field or '/'}: {detail}")


def _error(reason: str, message: str, at: tuple[int | str, ...] = (),
           rule: str | None = None) -> PydanticCustomError:
    """A validation error whose type is our reason; `at` extends the field path. The message
    goes last in the context, so pydantic's template substitution never rewrites it."""
    return PydanticCustomError(reason, "{message}", {"at": at, "rule": rule, "message": message})


def _text(value: str, what: str, max_length: int) -> str:
    if not value.strip() or len(value) > max_length or _CONTROL.search(value):
        raise _error("malformed", f"{what} must be 1..{max_length} characters, not blank, "
                                  "without control characters")
    return value


def _preview_problem(column_type: ColumnType, value: JsonValue) -> str | None:
    """Why `value` is not a valid preview value of `column_type`, or None."""
    if value is None or _is_preview_value(column_type, value):
        return None
    return f"{json.dumps(value)[:40]} is not a valid {column_type} value"


def _is_preview_value(column_type: ColumnType, value: JsonValue) -> bool:
    if column_type is ColumnType.STRING:
        return isinstance(value, str)
    if column_type is ColumnType.BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, int) and not isinstance(value, bool):
        return column_type in (ColumnType.INTEGER, ColumnType.NUMBER) \
            and abs(value) <= _MAX_SAFE_INTEGER
    if isinstance(value, float):
        return column_type is ColumnType.NUMBER and math.isfinite(value)
    if isinstance(value, str) and column_type is ColumnType.DATE:
        return bool(_DATE.fullmatch(value)) and _parses(date.fromisoformat, value)
    if isinstance(value, str) and column_type is ColumnType.DATETIME:
        return bool(_DATETIME.fullmatch(value)) and _parses(datetime.fromisoformat, value)
    return False


def _parses(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


class ProductSpec(BaseModel):
    """A data product's definition (see the module docstring for the JSON form and its rules).

    Build it with `from_json`; a spec is immutable and always satisfies its level's rules.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    id: str
    title: str
    description: str = Field(default="", max_length=5000)
    keywords: tuple[str, ...] = Field(default=(), max_length=32)
    category: str
    level: Level
    columns: tuple[Column, ...] = Field(min_length=1, max_length=500)
    preview: tuple[dict[str, JsonValue], ...] = Field(default=(), max_length=20)
    source: Source
    modes: tuple[ComputeMode, ...] = Field(min_length=1)
    offers: tuple[dict[str, JsonValue], ...] = Field(default=(), max_length=64)
    approval_required: bool = Field(default=False, validate_default=True)
    homomorphic: HomomorphicOffer | None = None
    federated: FederatedOffer | None = None

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """Validate a parsed JSON value (e.g. from `json.loads`) as a product spec.

        Raises `ProductInvalid`; nothing else escapes. When ``approval_required`` is absent,
        the level's default is filled in (true for important and core data).
        """
        problem = _not_json(obj, ())
        if problem is not None:
            raise ProductInvalid("malformed", _pointer(problem[0]), problem[1])
        if isinstance(obj, dict) and "approval_required" not in obj:
            level = obj.get("level")
            if isinstance(level, str) and level in Level.__members__.values() \
                    and RULES[Level(level)].approval_required:
                obj = {**obj, "approval_required": True}
        try:
            # Through JSON, so pydantic's strict mode applies its JSON rules (arrays for
            # tuples, strings for enums and paths) and coerces nothing else.
            return cls.model_validate_json(json.dumps(obj, ensure_ascii=False))
        except ValidationError as exc:
            raise _invalid(exc) from None

    def to_json(self) -> dict[str, Any]:
        """The JSON form; ``ProductSpec.from_json(spec.to_json()) == spec``. It includes the
        source (and a SQL source's URL): it is the provider's, not for the public catalog."""
        shown = self.model_dump(mode="json")
        for section in ("homomorphic", "federated"):  # absent, as in specs from before them
            if shown[section] is None:
                del shown[section]
        return shown

    # ---- field rules -----------------------------------------------------------------------

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if (len(value) <= 64 and _SLUG.fullmatch(value)) or (
                len(value) <= 200 and _URN.fullmatch(value)):
            return value
        raise _error("malformed", "an id is a slug ([a-z0-9]+(-[a-z0-9]+)*, at most 64 "
                                  "characters) or a URN (urn:<nid>:<nss>, at most 200)")

    @field_validator("title")
    @classmethod
    def _check_title(cls, value: str) -> str:
        return _text(value, "the title", 200)

    @field_validator("keywords")
    @classmethod
    def _check_keywords(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for i, keyword in enumerate(value):
            if not keyword.strip() or len(keyword) > 64 or _CONTROL.search(keyword):
                raise _error("malformed", "a keyword must be 1..64 characters, not blank, "
                                          "without control characters", (i,))
            if keyword in seen:
                raise _error("malformed", f"keyword {keyword!r} is repeated", (i,))
            seen.add(keyword)
        return value

    @field_validator("category")
    @classmethod
    def _check_category(cls, value: str) -> str:
        try:
            classification.check_category(value)
        except CategoryInvalid as exc:
            raise _error(exc.reason, exc.detail) from None
        return value

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, value: tuple[Column, ...]) -> tuple[Column, ...]:
        seen: set[str] = set()
        for i, column in enumerate(value):
            if column.name in seen:
                raise _error("duplicate-column", f"column {column.name!r} is declared twice",
                             (i, "name"))
            seen.add(column.name)
        return value

    @field_validator("preview")
    @classmethod
    def _check_preview(cls, rows: tuple[dict[str, JsonValue], ...],
                       info: ValidationInfo) -> tuple[dict[str, JsonValue], ...]:
        columns: tuple[Column, ...] | None = info.data.get("columns")
        if columns is None:  # the columns are invalid: that is the error reported
            return rows
        declared = {c.name for c in columns}
        for i, row in enumerate(rows):
            for name in row:
                if name not in declared:
                    raise _error("preview-mismatch", f"{name!r} is not a column", (i, name))
            for column in columns:
                if column.name not in row:
                    raise _error("preview-mismatch", f"column {column.name!r} is missing",
                                 (i, column.name))
                problem = _preview_problem(column.type, row[column.name])
                if problem:
                    raise _error("preview-mismatch", problem, (i, column.name))
        return rows

    @field_validator("modes")
    @classmethod
    def _check_modes(cls, modes: tuple[ComputeMode, ...],
                     info: ValidationInfo) -> tuple[ComputeMode, ...]:
        for i, mode in enumerate(modes):
            if mode in modes[:i]:
                raise _error("malformed", f"mode {mode} is repeated", (i,))
        level: Level | None = info.data.get("level")
        if level is not None:
            try:
                classification.check_modes(level, modes)
            except ClassificationForbids as exc:
                raise _error("classification-forbids", exc.detail, exc.at, exc.rule) from None
        return tuple(m for m in ComputeMode if m in modes)

    @field_validator("offers")
    @classmethod
    def _check_offers(cls, offers: tuple[dict[str, JsonValue], ...],
                      info: ValidationInfo) -> tuple[dict[str, JsonValue], ...]:
        ids: set[str] = set()
        for i, offer in enumerate(offers):
            _check_offer_shape(offer, i, ids)
        level: Level | None = info.data.get("level")
        if level is not None:
            try:
                classification.check_offers(level, offers)
            except ClassificationForbids as exc:
                raise _error("classification-forbids", exc.detail, exc.at, exc.rule) from None
        return offers

    @field_validator("homomorphic")
    @classmethod
    def _check_homomorphic(cls, offer: HomomorphicOffer | None,
                           info: ValidationInfo) -> HomomorphicOffer | None:
        if offer is None:
            return offer
        from trustspace.homomorphic.programs import CATALOG  # only for specs that need it

        for i, name in enumerate(offer.programs):
            if name not in CATALOG:
                raise _error("malformed", f"unknown homomorphic program {name!r} (known: "
                                          f"{', '.join(sorted(CATALOG))})", ("programs", i))
        columns: tuple[Column, ...] = info.data.get("columns") or ()
        numeric = {c.name for c in columns if c.type in (ColumnType.INTEGER, ColumnType.NUMBER)}
        for i, name in enumerate(offer.columns):
            if name not in numeric:
                raise _error("malformed", f"{name!r} is not an integer or number column",
                             ("columns", i))
        return offer

    @field_validator("approval_required")
    @classmethod
    def _check_approval(cls, value: bool, info: ValidationInfo) -> bool:
        level: Level | None = info.data.get("level")
        if level is not None:
            try:
                classification.check_approval(level, value)
            except ClassificationForbids as exc:
                raise _error("classification-forbids", exc.detail, exc.at, exc.rule) from None
        return value


class HomomorphicOffer(BaseModel):
    """What the provider's operator enables of the homomorphic catalog for this product."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    programs: tuple[str, ...] = Field(min_length=1, max_length=32)
    columns: tuple[str, ...] = Field(min_length=1, max_length=500)
    per_row: bool = False
    noise_std: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)


_METRIC = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # a Flower metric name


class MembershipInference(BaseModel):
    """The model-release check (trustspace.federated.disclosure): `holdout` of the rows never
    train; the model is released if the attack's mean AUC is at most `max_auc`."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    holdout: float = Field(default=0.2, ge=0.05, le=0.5, allow_inf_nan=False)
    max_auc: float = Field(default=0.65, ge=0.0, le=1.0, allow_inf_nan=False)


class FederatedRelease(BaseModel):
    """What the consumer may take away of a federated run on this product."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # The per-round metrics the app may report (besides FedAvg's weight, num-examples); None:
    # not restricted.
    metrics: tuple[Annotated[str, StringConstraints(pattern=_METRIC)], ...] | None = Field(
        default=None, max_length=64)
    membership_inference: MembershipInference | None = None


class FederatedOffer(BaseModel):
    """The provider's limits for federated training on this product (trustspace.federated)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    max_rounds: int = Field(default=10, ge=1, le=1000)
    min_clients: int = Field(default=2, ge=1, le=1000)
    dp_min_noise_multiplier: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    dp_max_clipping_norm: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    secagg: bool = False
    # Apps (SM3 digests, trustspace.federated.app_digest) run without asking; any other app
    # waits for the operator's approval, its digest shown.
    approved_apps: tuple[str, ...] = Field(default=(), max_length=64)
    release: FederatedRelease | None = None


def _check_offer_shape(offer: dict[str, JsonValue], i: int, ids: set[str]) -> None:
    present = [key for key in _RULE_LISTS if key in offer]
    if not present:
        raise _error("malformed", "an offer is an ODRL policy with at least one of "
                                  "permission, prohibition, obligation", (i,))
    for key in present:
        rules = offer[key]
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            raise _error("malformed", f"{key} must be a list of rule objects", (i, key))
    if "@id" in offer:
        offer_id = offer["@id"]
        if not isinstance(offer_id, str) or not offer_id.strip() or _CONTROL.search(offer_id):
            raise _error("malformed", "@id must be a non-empty string", (i, "@id"))
        if offer_id in ids:
            raise _error("malformed", f"offer @id {offer_id!r} is repeated", (i, "@id"))
        ids.add(offer_id)
    try:
        canonical_json(offer)
    except ValueError as exc:
        raise _error("malformed", str(exc), (i,)) from None


# ---- errors --------------------------------------------------------------------------------

def _pointer(path: tuple[int | str, ...]) -> str:
    """RFC 6901 JSON Pointer of `path`."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _not_json(value: object, path: tuple[int | str, ...]) -> tuple[tuple[int | str, ...],
                                                                   str] | None:
    """The first place where `value` is not a JSON value (what json.loads returns), or None.
    Strings must be Unicode text (no lone surrogates, RFC 7493 §2.1)."""
    if isinstance(value, str):
        return (path, "a string holds a lone surrogate") if _SURROGATE.search(value) else None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "a JSON number must be finite")
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _not_json(item, (*path, i))
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"a JSON object's keys are strings, not {type(key).__name__}"
            if _SURROGATE.search(key):
                return path, "a key holds a lone surrogate"
            found = _not_json(item, (*path, key))
            if found:
                return found
        return None
    return path, f"a {type(value).__name__} is not a JSON value"


def _invalid(exc: ValidationError) -> ProductInvalid:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    ctx = first.get("ctx") or {}
    reason = first["type"] if first["type"] in REASONS else "malformed"
    loc = tuple(first["loc"])
    if len(loc) > 1 and loc[0] == "source" and loc[1] in SOURCE_KINDS:
        loc = (loc[0], *loc[2:])  # pydantic names the union member it tried; the input does not
    loc = (*loc, *ctx.get("at", ()))
    detail = first["msg"]
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return ProductInvalid(reason, _pointer(loc), detail, ctx.get("rule"))


def _forbidden(exc: ClassificationForbids, field: str) -> ProductInvalid:
    return ProductInvalid("classification-forbids",
                          field + _pointer(exc.at), exc.detail, exc.rule)


# ---- what the rules make of a spec ---------------------------------------------------------

def inspect_source(spec: ProductSpec) -> SourceInfo:
    """Read `spec`'s source: check it is there, readable and matches the declared columns, and
    compute its digest (``"sm3:<hex>"``), row count and size (see `datasource`).

    Raises `ProductInvalid` (``source-missing``, ``source-unreadable``, ``schema-mismatch``;
    field ``/source``)."""
    try:
        return scan_source(spec.source, spec.columns)
    except SourceError as exc:
        raise ProductInvalid(exc.reason, "/source", exc.detail) from None


def check_classification(spec: ProductSpec) -> None:
    """Apply the level's rules to `spec` (modes, offers, approval); raises `ProductInvalid`
    with reason ``classification-forbids`` naming the rule. A spec from `from_json` passes
    (it was checked there); this is for specs from elsewhere (e.g. `model_construct`)."""
    field = "/modes"
    try:
        classification.check_modes(spec.level, spec.modes)
        field = "/offers"
        classification.check_offers(spec.level, spec.offers)
        field = "/approval_required"
        classification.check_approval(spec.level, spec.approval_required)
    except ClassificationForbids as exc:
        raise _forbidden(exc, field) from None


def check_publishable(spec: ProductSpec) -> None:
    """Refuse to publish (list in a catalog) a product whose level forbids it (core data)."""
    check_classification(spec)
    try:
        classification.check_publishable(spec.level)
    except ClassificationForbids as exc:
        raise _forbidden(exc, "/level") from None


def effective_policy(spec: ProductSpec) -> EffectivePolicy:
    """What the product's level makes of its spec: allowed modes, whether each job needs the
    operator's approval, whether it may be offered or published, whether its preview is masked,
    and the names of the rules that applied."""
    check_classification(spec)
    return classification.policy_for(spec.level, spec.modes, spec.approval_required)


def public_preview(spec: ProductSpec) -> list[dict[str, Any]]:
    """The preview rows to show outside the provider's node: as declared for general data,
    masked (`classification.mask_value`) for important and core data. Same columns either way."""
    if RULES[spec.level].preview_masked:
        return [classification.mask_row(spec.columns, row) for row in spec.preview]
    return [{c.name: row[c.name] for c in spec.columns} for row in spec.preview]
