"""Dataspace Protocol 2025-1 catalog messages as plain JSON (compacted JSON-LD).

Implements, from the Eclipse Dataspace Protocol 2025-1 (erratum 1):

- Common Requirements, "Exposure of Versions" (HTTPS Binding): the body of
  `/.well-known/dspace-version` (`version_response`).
- Catalog Protocol, "Message Types": the Catalog Request Message and the Dataset Request Message
  (`parse_catalog_request`, `parse_dataset_request`).
- Catalog Protocol, "Response Types": ACK - Catalog (`catalog`, `parse_catalog`), ACK - Dataset
  (`dataset`, `parse_dataset`) and ERROR - Catalog Error (`catalog_error`, `DspError`).
- Catalog HTTPS Binding: the HTTP status of each error (table below).

What is produced here validates against the 2025-1 JSON Schemas (tests/test_dsp.py checks it
against the upstream files). The parsers check what the schemas require plus what the spec's text
adds (an Offer inside a Dataset has an ``@id`` and no ``target``), and ignore properties they do
not know ("Servers MAY process properties that are not part of the schemas").

The trustspace extension
------------------------
DSP has no terms for what our data products need (classification level, compute modes, the
registration certificate and data digests). They live in the namespace `TS_NAMESPACE` under the
prefix ``ts``, defined by a second JSON-LD context, `TS_CONTEXT`::

    "@context": ["https://w3id.org/dspace/2025/1/context.jsonld",
                 "https://trustspace.dev/ns/v1/context.jsonld"]

It must be an IRI, not an inline ``{"ts": ...}`` object: the schemas' ``context-schema.json``
allows only an array of strings (containing the DSP context). Extra properties are allowed on a
Dataset (no schema sets ``additionalProperties``), so ``ts:level`` and friends validate. The
context document (`TS_CONTEXT_DOCUMENT`) makes the terms ``@protected``, as Common Requirements,
"Schemas & Contexts" advises profiles to do; the connector serves it and JSON-LD processors
preload it as they preload the DSP context. The second context is only added to a message that
uses a ``ts:`` term, so a catalog without extensions is plain DSP. When reading, ``ts:`` keys
count only if the message's ``@context`` names `TS_CONTEXT` (otherwise ``ts:`` is somebody
else's prefix, or none); titles and descriptions use ``dct:``/``dcat:``, which DSP's own context
defines.

Errors and HTTP status codes (Catalog HTTPS Binding, "Catalog Error": "an appropriate HTTP code
and a Catalog Error in the response body"):

==================  ======  ===================================================================
code                status  when
==================  ======  ===================================================================
not-an-object       400     the body is not a JSON object
missing-context     400     no ``@context``
wrong-context       400     ``@context`` is not an array of strings naming `DSP_CONTEXT`
wrong-type          400     ``@type`` is missing or is not the expected message type
missing-property    400     a property the schema requires is absent
invalid-property    400     a property has the wrong shape or value
unsupported-filter  400     the binding: "If a filter expression is not supported ... HTTP 400"
unauthorized        401     no valid ``Authorization`` token (Common Requirements, Authorization)
forbidden           403     authenticated, but the catalog is not provisioned for this requester
unknown-dataset     404     no such dataset, or one this requester may not see (the same answer,
                            so that hidden datasets are not revealed)
==================  ======  ===================================================================

For a consumer reading another node's Catalog or Dataset, `DspError.status` is what that node
should have answered; only ``code`` and ``reasons`` matter there.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .classification import ComputeMode, Level

DSP_CONTEXT: Final = "https://w3id.org/dspace/2025/1/context.jsonld"
DSP_VERSION: Final = "2025-1"

TS_NAMESPACE: Final = "https://trustspace.dev/ns/v1#"
TS_CONTEXT: Final = "https://trustspace.dev/ns/v1/context.jsonld"
# The JSON-LD context published at TS_CONTEXT (JSON-LD 1.1: a compact-IRI term is allowed when it
# expands to its own @id). ts:schema is a JSON literal: column objects are data, not nodes.
TS_CONTEXT_DOCUMENT: Final[Mapping[str, Any]] = {
    "@context": {
        "@version": 1.1,
        "@protected": True,
        "ts": TS_NAMESPACE,
        "ts:level": {"@id": "ts:level"},
        "ts:category": {"@id": "ts:category"},
        "ts:computeModes": {"@id": "ts:computeModes", "@container": "@set"},
        "ts:registration": {"@id": "ts:registration"},
        "ts:dataDigest": {"@id": "ts:dataDigest"},
        "ts:schema": {"@id": "ts:schema", "@type": "@json"},
        "ts:provider": {"@id": "ts:provider", "@type": "@id"},
    }
}

_SM3_DIGEST = re.compile(r"sm3:[0-9a-f]{64}")
# contract-schema.json, definitions/Operator
_OPERATORS = frozenset({
    "eq", "gt", "gteq", "lteq", "hasPart", "isA", "isAllOf", "isAnyOf", "isNoneOf", "isPartOf",
    "lt", "term-lteq", "neq",
})
_LOGICAL = ("and", "andSequence", "or", "xone")
_ATOMIC = ("leftOperand", "operator", "rightOperand")


class ErrorCode(StrEnum):
    """The ``code`` of a CatalogError we send; `STATUS` gives each its HTTP status."""

    NOT_AN_OBJECT = "not-an-object"
    MISSING_CONTEXT = "missing-context"
    WRONG_CONTEXT = "wrong-context"
    WRONG_TYPE = "wrong-type"
    MISSING_PROPERTY = "missing-property"
    INVALID_PROPERTY = "invalid-property"
    UNSUPPORTED_FILTER = "unsupported-filter"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_DATASET = "unknown-dataset"


STATUS: Final[Mapping[str, int]] = {
    **{code: 400 for code in ErrorCode},
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNKNOWN_DATASET: 404,
}


class DspError(Exception):
    """A catalog request or response that cannot be served or read (ERROR - Catalog Error)."""

    def __init__(self, code: str, reasons: Sequence[str], status: int | None = None) -> None:
        if status is None:
            if code not in STATUS:
                raise ValueError(f"no default HTTP status for code {code!r}; pass one")
            status = STATUS[code]
        super().__init__(f"{code}: {'; '.join(reasons)}")
        self.code = str(code)
        self.reasons = list(reasons)
        self.status = status

    def body(self) -> dict[str, Any]:
        """The CatalogError to send with `status`."""
        return catalog_error(self.code, self.reasons)


def catalog_error(code: str, reasons: Sequence[str]) -> dict[str, Any]:
    """A CatalogError body (Catalog Protocol, "ERROR - Catalog Error")."""
    return {"@context": [DSP_CONTEXT], "@type": "CatalogError", "code": str(code),
            "reason": list(reasons)}


def version_response(path: str = "/", *, service_id: str | None = None) -> dict[str, Any]:
    """The `/.well-known/dspace-version` body (Common Requirements, "Exposure of Versions").

    In the HTTPS binding ``path`` is the absolute URL path appended to the connector's root to
    give ``<base>``, the prefix of every 2025-1 endpoint (``<base>/catalog/request``, ...).
    """
    if not path.startswith("/"):
        raise ValueError(f"path must be an absolute URL path, got {path!r}")
    version = {"version": DSP_VERSION, "path": path, "binding": "HTTPS"}
    if service_id is not None:
        version["serviceId"] = service_id
    return {"protocolVersions": [version]}


# --- the data model ------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a dataset's ``ts:schema``."""

    name: str
    type: str

    def __post_init__(self) -> None:
        if not _nonempty(self.name) or not _nonempty(self.type):
            raise ValueError("a column has a non-empty string name and type")


@dataclass(frozen=True, kw_only=True)
class DatasetView:
    """A Dataset as DSP shows it (Catalog Protocol, "ACK - Dataset"), with our extension terms.

    ``offers`` are ODRL Offers (contract-schema.json, definitions/Offer): each has an ``@id``
    and a ``permission`` or ``prohibition``, and no ``target`` (the dataset is the target). They
    are kept without ``"@type": "Offer"``, which `dataset` adds. Each format becomes one
    Distribution served by ``access_service``, the DataService ``@id``: the parsers fill it in
    (from the first distribution); `dataset` and `catalog` take it from their ``service_id``
    (and refuse a view that names a different one).

    The constructor checks every field (so a view that exists is valid) and copies the offers
    in; they are JSON objects, so a view compares by value but is not hashable.
    """

    id: str
    offers: tuple[Mapping[str, Any], ...]
    formats: tuple[str, ...]
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()
    access_service: str | None = None
    # trustspace extension (ts:), see the module docstring
    level: Level | None = None
    category: str | None = None
    compute_modes: tuple[ComputeMode, ...] = ()
    registration: str | None = None  # ts:registration, "sm3:<hex>" of the registration cert
    data_digest: str | None = None  # ts:dataDigest, "sm3:<hex>" of the data
    schema: tuple[Column, ...] = ()
    provider: str | None = None  # ts:provider, the providing participant's id

    def __post_init__(self) -> None:
        def fix(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if not _nonempty(self.id):
            raise ValueError("a dataset has a non-empty string @id")
        for name in ("title", "description"):
            if not isinstance(getattr(self, name), str | None):
                raise ValueError(f"{name} must be a string")
        for name in ("keywords", "formats", "offers", "compute_modes", "schema"):
            if isinstance(getattr(self, name), str | Mapping):
                raise ValueError(f"{name} must be a sequence, not a single value")
        fix("keywords", tuple(self.keywords))
        if not all(isinstance(k, str) for k in self.keywords):
            raise ValueError("keywords must be strings")
        fix("offers", tuple(_offer(o, f"hasPolicy[{i}]") for i, o in enumerate(self.offers)))
        if not self.offers:
            raise ValueError("a dataset has at least one offer (hasPolicy)")
        if len({o["@id"] for o in self.offers}) != len(self.offers):
            raise ValueError("offer @ids must be unique")
        fix("formats", tuple(self.formats))
        if not self.formats or not all(_nonempty(f) for f in self.formats):
            raise ValueError("a dataset has at least one distribution format, each a string")
        for name in ("access_service", "category", "provider"):
            if getattr(self, name) is not None and not _nonempty(getattr(self, name)):
                raise ValueError(f"{name} must be a non-empty string")
        if self.level is not None:
            fix("level", Level(self.level))
        fix("compute_modes", tuple(ComputeMode(m) for m in self.compute_modes))
        for name in ("registration", "data_digest"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _SM3_DIGEST.fullmatch(value)):
                raise ValueError(f"{name} must be 'sm3:' + 64 lowercase hex digits")
        fix("schema", tuple(self.schema))
        if not all(isinstance(c, Column) for c in self.schema):
            raise ValueError("schema must be Columns")

    @property
    def has_extensions(self) -> bool:
        """Whether the dataset carries any ``ts:`` term."""
        return bool(self._ts_terms())

    def _ts_terms(self) -> dict[str, Any]:
        terms: dict[str, Any] = {
            "ts:provider": self.provider,
            "ts:level": None if self.level is None else self.level.value,
            "ts:category": self.category,
            "ts:computeModes": [m.value for m in self.compute_modes] or None,
            "ts:registration": self.registration,
            "ts:dataDigest": self.data_digest,
            "ts:schema": [{"name": c.name, "type": c.type} for c in self.schema] or None,
        }
        return {k: v for k, v in terms.items() if v is not None}


@dataclass(frozen=True)
class DataService:
    """A DataService: where negotiations and transfers for the datasets take place."""

    id: str
    endpoint_url: str


@dataclass(frozen=True)
class CatalogView:
    """A Catalog as read by `parse_catalog`; ``participant_id`` is set on the root only."""

    id: str
    participant_id: str | None
    services: tuple[DataService, ...]
    datasets: tuple[DatasetView, ...]
    catalogs: tuple[CatalogView, ...] = ()

    def all_datasets(self) -> Iterator[DatasetView]:
        """The datasets of this catalog and, depth first, of its nested catalogs."""
        yield from self.datasets
        for sub in self.catalogs:
            yield from sub.all_datasets()


@dataclass(frozen=True)
class CatalogRequest:
    """A Catalog Request Message; ``filter`` is implementation-specific, empty when absent."""

    filter: tuple[Any, ...] = ()


@dataclass(frozen=True)
class DatasetRequest:
    """A Dataset Request Message."""

    dataset: str


# --- producing -----------------------------------------------------------------------------


def dataset(view: DatasetView, service_id: str, *, endpoint_url: str | None = None
            ) -> dict[str, Any]:
    """The ACK - Dataset body (dataset-schema.json, RootDataset).

    With ``endpoint_url`` each distribution embeds the DataService (as the spec's dataset.json
    does), so a consumer holding only this response knows where to negotiate.
    """
    node = _dataset_node(view, service_id, endpoint_url)
    return {"@context": _context(view.has_extensions), **node}


def catalog(participant_id: str, service_id: str, endpoint_url: str,
            datasets: Sequence[DatasetView], *, catalog_id: str | None = None
            ) -> dict[str, Any]:
    """The ACK - Catalog body (catalog-schema.json, RootCatalog) with one DataService.

    ``endpoint_url`` is the DataService's ``endpointURL`` (``<base>`` of the HTTPS binding). The
    catalog's ``@id`` defaults to ``<endpoint_url>/catalog``. A catalog with no dataset omits
    ``dataset`` (the schema wants one or more when present; the spec allows zero).
    """
    for name, value in (("participant_id", participant_id), ("service_id", service_id),
                        ("endpoint_url", endpoint_url)):
        if not _nonempty(value):
            raise ValueError(f"{name} must be a non-empty string")
    problem = _duplicates(datasets)
    if problem:
        raise ValueError(problem)
    body: dict[str, Any] = {
        "@context": _context(any(v.has_extensions for v in datasets)),
        "@id": catalog_id if catalog_id is not None else endpoint_url.rstrip("/") + "/catalog",
        "@type": "Catalog",
        "participantId": participant_id,
        "service": [_service_node(service_id, endpoint_url)],
    }
    if datasets:
        body["dataset"] = [_dataset_node(v, service_id, None) for v in datasets]
    return body


def _context(with_ts: bool) -> list[str]:
    return [DSP_CONTEXT, TS_CONTEXT] if with_ts else [DSP_CONTEXT]


def _service_node(service_id: str, endpoint_url: str) -> dict[str, Any]:
    return {"@id": service_id, "@type": "DataService", "endpointURL": endpoint_url}


def _dataset_node(view: DatasetView, service_id: str, endpoint_url: str | None
                  ) -> dict[str, Any]:
    if view.access_service is not None and view.access_service != service_id:
        raise ValueError(f"dataset {view.id!r} is served by {view.access_service!r}, "
                         f"not {service_id!r}")
    node: dict[str, Any] = {"@id": view.id, "@type": "Dataset"}
    if view.title is not None:
        node["dct:title"] = view.title
    if view.description is not None:
        node["dct:description"] = view.description
    if view.keywords:
        node["dcat:keyword"] = list(view.keywords)
    node["hasPolicy"] = [{"@id": o["@id"], "@type": "Offer", **copy.deepcopy(dict(o))}
                         for o in view.offers]
    node["distribution"] = [
        {"@type": "Distribution", "format": fmt,
         "accessService": service_id if endpoint_url is None
         else _service_node(service_id, endpoint_url)}
        for fmt in view.formats
    ]
    node.update(view._ts_terms())
    return node


def _duplicates(datasets: Sequence[DatasetView]) -> str | None:
    """Dataset ids, and Offer ids across datasets, must be unique within one catalog: "An Offer
    MUST be unique to a Dataset since the target of the Offer is derived from its enclosing
    context" (Catalog Protocol, "ACK - Dataset")."""
    dataset_ids: set[str] = set()
    offer_ids: set[str] = set()
    for view in datasets:
        if view.id in dataset_ids:
            return f"dataset {view.id!r} appears twice"
        dataset_ids.add(view.id)
        for offer in view.offers:
            if offer["@id"] in offer_ids:
                return f"offer {offer['@id']!r} is used by two datasets"
            offer_ids.add(offer["@id"])
    return None


# --- checking ODRL Offers (contract-schema.json) --------------------------------------------


def _offer(offer: object, where: str) -> dict[str, Any]:
    """Check an Offer inside a Dataset; return a copy without ``@type``. Raises ValueError."""
    if not isinstance(offer, Mapping):
        raise ValueError(f"{where}: an Offer is a JSON object")
    if not _nonempty(offer.get("@id")):
        raise ValueError(f"{where}: an Offer has a non-empty string @id")
    if offer.get("@type", "Offer") != "Offer":
        raise ValueError(f"{where}: @type must be 'Offer', got {offer['@type']!r}")
    if "target" in offer:
        raise ValueError(f"{where}: an Offer inside a Dataset has no target (the Dataset is it)")
    if "permission" not in offer and "prohibition" not in offer:
        raise ValueError(f"{where}: an Offer has a permission or a prohibition")
    if "profile" in offer and not (isinstance(offer["profile"], str) or _strings(offer["profile"])):
        raise ValueError(f"{where}: profile is a string or an array of strings")
    for key in ("permission", "prohibition", "obligation"):
        if key in offer:
            rules = offer[key]
            if not isinstance(rules, list) or not rules:
                raise ValueError(f"{where}.{key}: must be a non-empty array")
            for i, rule in enumerate(rules):
                _check_rule(rule, f"{where}.{key}[{i}]")
    return {k: copy.deepcopy(v) for k, v in offer.items() if k != "@type"}


def _check_rule(rule: object, where: str) -> None:
    if not isinstance(rule, Mapping) or not isinstance(rule.get("action"), str):
        raise ValueError(f"{where}: a rule is an object with a string action")
    if "constraint" in rule:
        _check_constraints(rule["constraint"], f"{where}.constraint")


def _check_constraints(items: object, where: str) -> None:
    if not isinstance(items, list):
        raise ValueError(f"{where}: must be an array")
    for i, item in enumerate(items):
        _check_constraint(item, f"{where}[{i}]")


def _check_constraint(item: object, where: str) -> None:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: a constraint is a JSON object")
    logical = [k for k in _LOGICAL if k in item]
    atomic = all(k in item for k in _ATOMIC)
    if logical:
        if len(logical) > 1 or atomic:
            raise ValueError(f"{where}: a logical constraint has exactly one of {_LOGICAL} "
                             "and is not also atomic")
        _check_constraints(item[logical[0]], f"{where}.{logical[0]}")
    elif atomic:
        if not isinstance(item["leftOperand"], str):
            raise ValueError(f"{where}: leftOperand must be a string")
        if not (isinstance(item["operator"], str) and item["operator"] in _OPERATORS):
            raise ValueError(f"{where}: operator {item['operator']!r} is not an ODRL operator")
        if not isinstance(item["rightOperand"], str | dict | list):
            raise ValueError(f"{where}: rightOperand must be a string, object or array "
                             "(a number goes in a string or an @value object)")
    else:
        raise ValueError(f"{where}: a constraint has leftOperand, operator and rightOperand, "
                         f"or one of {_LOGICAL}")


# --- parsing -------------------------------------------------------------------------------


def parse_catalog_request(obj: object) -> CatalogRequest:
    """Read a Catalog Request Message (catalog-request-message-schema.json)."""
    msg = _message(obj, "CatalogRequestMessage")
    flt = msg.get("filter", [])
    if not isinstance(flt, list):
        raise DspError(ErrorCode.INVALID_PROPERTY, [f"filter must be an array, got {flt!r}"])
    return CatalogRequest(tuple(copy.deepcopy(flt)))


def parse_dataset_request(obj: object) -> DatasetRequest:
    """Read a Dataset Request Message (dataset-request-message-schema.json)."""
    msg = _message(obj, "DatasetRequestMessage")
    if "dataset" not in msg:
        raise DspError(ErrorCode.MISSING_PROPERTY, ["dataset (the dataset's @id) is required"])
    if not _nonempty(msg["dataset"]):
        raise DspError(ErrorCode.INVALID_PROPERTY,
                       [f"dataset must be a non-empty string, got {msg['dataset']!r}"])
    return DatasetRequest(msg["dataset"])


def parse_catalog(obj: object) -> CatalogView:
    """Read an ACK - Catalog (catalog-schema.json, RootCatalog), nested catalogs included."""
    msg = _message(obj, "Catalog")
    participant = _string(msg, "participantId", "Catalog")
    return _catalog_node(msg, "Catalog", TS_CONTEXT in msg["@context"], participant)


def parse_dataset(obj: object) -> DatasetView:
    """Read an ACK - Dataset (dataset-schema.json, RootDataset; ``@type`` is optional)."""
    msg = _message(obj, "Dataset", type_required=False)
    return _dataset_view(msg, "Dataset", TS_CONTEXT in msg["@context"])


def _message(obj: object, msg_type: str, *, type_required: bool = True) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise DspError(ErrorCode.NOT_AN_OBJECT,
                       [f"a {msg_type} is a JSON object, not {type(obj).__name__}"])
    if "@context" not in obj:
        raise DspError(ErrorCode.MISSING_CONTEXT, [f"@context is required ({DSP_CONTEXT!r})"])
    context = obj["@context"]
    if not _strings(context) or DSP_CONTEXT not in context:
        raise DspError(ErrorCode.WRONG_CONTEXT,
                       [f"@context must be an array of strings containing {DSP_CONTEXT!r} "
                        f"(DSP {DSP_VERSION}), got {context!r}"])
    if (type_required or "@type" in obj) and obj.get("@type") != msg_type:
        raise DspError(ErrorCode.WRONG_TYPE,
                       [f"@type must be {msg_type!r}, got {obj.get('@type')!r}"])
    return obj


def _invalid(where: str, reason: str) -> DspError:
    return DspError(ErrorCode.INVALID_PROPERTY, [f"{where}: {reason}"])


def _string(node: Mapping[str, Any], key: str, where: str) -> str:
    if key not in node:
        raise DspError(ErrorCode.MISSING_PROPERTY, [f"{where}: {key} is required"])
    if not isinstance(node[key], str):
        raise _invalid(where, f"{key} must be a string")
    value: str = node[key]
    return value


def _array(node: Mapping[str, Any], key: str, where: str, *, required: bool) -> list[Any]:
    """A DSP array property: the schemas want a non-empty array when it is present."""
    if key not in node:
        if required:
            raise DspError(ErrorCode.MISSING_PROPERTY, [f"{where}: {key} is required"])
        return []
    value = node[key]
    if not isinstance(value, list) or not value:
        raise _invalid(where, f"{key} must be a non-empty array")
    return value


def _object(item: object, where: str, msg_type: str, *, type_required: bool) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise _invalid(where, f"a {msg_type} is a JSON object")
    if (type_required or "@type" in item) and item.get("@type") != msg_type:
        raise _invalid(where, f"@type must be {msg_type!r}, got {item.get('@type')!r}")
    return item


def _catalog_node(node: Mapping[str, Any], where: str, ts: bool, participant_id: str | None
                  ) -> CatalogView:
    node = _object(node, where, "Catalog", type_required=True)
    catalog_id = _string(node, "@id", where)
    if "hasPolicy" in node:
        raise _invalid(where, "a Catalog has no hasPolicy (offers belong to datasets)")
    for i, dist in enumerate(_array(node, "distribution", where, required=False)):
        _distribution(dist, f"{where}.distribution[{i}]")
    services = tuple(_service(s, f"{where}.service[{i}]")
                     for i, s in enumerate(_array(node, "service", where, required=False)))
    datasets = tuple(_dataset_view(d, f"{where}.dataset[{i}]", ts)
                     for i, d in enumerate(_array(node, "dataset", where, required=False)))
    problem = _duplicates(datasets)
    if problem:
        raise _invalid(where, problem)
    catalogs = tuple(_catalog_node(c, f"{where}.catalog[{i}]", ts, None)
                     for i, c in enumerate(_array(node, "catalog", where, required=False)))
    return CatalogView(catalog_id, participant_id, services, datasets, catalogs)


def _service(node: object, where: str) -> DataService:
    node = _object(node, where, "DataService", type_required=True)
    return DataService(_string(node, "@id", where), _string(node, "endpointURL", where))


def _distribution(node: object, where: str) -> tuple[str, str]:
    """(format, DataService @id) of a Distribution; its own offers are checked, not kept."""
    node = _object(node, where, "Distribution", type_required=False)
    fmt = _string(node, "format", where)
    if "accessService" not in node:
        raise DspError(ErrorCode.MISSING_PROPERTY, [f"{where}: accessService is required"])
    access = node["accessService"]
    service = access if isinstance(access, str) else _service(access, f"{where}.accessService").id
    for i, offer in enumerate(_array(node, "hasPolicy", where, required=False)):
        try:
            _offer(offer, f"{where}.hasPolicy[{i}]")
        except ValueError as exc:
            raise DspError(ErrorCode.INVALID_PROPERTY, [str(exc)]) from None
    return fmt, service


def _dataset_view(node: object, where: str, ts: bool) -> DatasetView:
    node = _object(node, where, "Dataset", type_required=False)
    dataset_id = _string(node, "@id", where)
    offers = _array(node, "hasPolicy", where, required=True)
    dists = [_distribution(d, f"{where}.distribution[{i}]")
             for i, d in enumerate(_array(node, "distribution", where, required=True))]
    ext: dict[str, Any] = {}
    if ts:
        ext = {name: node[term] for name, term in _TS_FIELDS.items() if term in node}
        for name in ("compute_modes", "schema"):
            if name in ext:
                ext[name] = _ts_list(ext[name], where, name)
        if "schema" in ext:
            ext["schema"] = tuple(_column(c, f"{where}.ts:schema") for c in ext["schema"])
    try:
        return DatasetView(
            id=dataset_id, offers=tuple(offers), formats=tuple(f for f, _ in dists),
            access_service=dists[0][1], title=_text(node, "dct:title"),
            description=_text(node, "dct:description"), keywords=_keywords(node), **ext)
    except ValueError as exc:
        raise _invalid(where, str(exc)) from None


_TS_FIELDS: Final = {
    "level": "ts:level", "category": "ts:category", "compute_modes": "ts:computeModes",
    "registration": "ts:registration", "data_digest": "ts:dataDigest", "schema": "ts:schema",
    "provider": "ts:provider",
}


def _ts_list(value: object, where: str, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(where, f"{_TS_FIELDS[name]} must be an array")
    return value


def _column(item: object, where: str) -> Column:
    if not (isinstance(item, Mapping) and _nonempty(item.get("name"))
            and _nonempty(item.get("type"))):
        raise _invalid(where, f"a column is {{'name': str, 'type': str}}, got {item!r}")
    return Column(item["name"], item["type"])


def _text(node: Mapping[str, Any], key: str) -> str | None:
    """A DCAT literal (not in the schemas, so read leniently): a string, an ``@value`` object,
    or an array of them (the first wins: several languages of one title)."""
    value = node.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("@value")
    return value if isinstance(value, str) else None


def _keywords(node: Mapping[str, Any]) -> tuple[str, ...]:
    value = node.get("dcat:keyword", [])
    items = value if isinstance(value, list) else [value]
    words = (item.get("@value") if isinstance(item, Mapping) else item for item in items)
    return tuple(w for w in words if isinstance(w, str))


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
