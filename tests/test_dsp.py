"""Dataspace Protocol 2025-1 catalog messages against the upstream JSON Schemas and examples."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft201909Validator

from tests.dsp_schemas import dsp_dir, errors, example
from trustspace.registry.dsp import (
    DSP_CONTEXT,
    STATUS,
    TS_CONTEXT,
    CatalogRequest,
    Column,
    ComputeMode,
    DatasetRequest,
    DatasetView,
    DspError,
    ErrorCode,
    Level,
    catalog,
    catalog_error,
    dataset,
    parse_catalog,
    parse_catalog_request,
    parse_dataset,
    parse_dataset_request,
    version_response,
)

CATALOG = "catalog/catalog-schema.json"
DATASET = "catalog/dataset-schema.json"
CATALOG_ERROR = "catalog/catalog-error-schema.json"
VERSION = "common/protocol-version-schema.json"

# Every upstream example and the schema it is an instance of.
EXAMPLES = {
    "catalog/example/catalog-error.json": CATALOG_ERROR,
    "catalog/example/catalog-request-message.json": "catalog/catalog-request-message-schema.json",
    "catalog/example/catalog.json": CATALOG,
    "catalog/example/dataset-request-message.json": "catalog/dataset-request-message-schema.json",
    "catalog/example/dataset.json": DATASET,
    "catalog/example/nested-catalog.json": CATALOG,
    "common/example/catalogservice-did-service.json": "common/did-service-schema.json",
    "common/example/protocol-version.json": VERSION,
    **{f"negotiation/example/{name}.json": f"negotiation/{schema}-schema.json" for name, schema in [
        ("contract-agreement-message-full", "contract-agreement-message"),
        ("contract-agreement-message", "contract-agreement-message"),
        ("contract-agreement-verification-message", "contract-agreement-verification-message"),
        ("contract-negotiation-error", "contract-negotiation-error"),
        ("contract-negotiation-event-message", "contract-negotiation-event-message"),
        ("contract-negotiation-termination-message", "contract-negotiation-termination-message"),
        ("contract-negotiation", "contract-negotiation"),
        ("contract-offer-message", "contract-offer-message"),
        ("contract-offer-message_initial", "contract-offer-message"),
        ("contract-request-message", "contract-request-message"),
        ("contract-request-message_initial", "contract-request-message"),
    ]},
    **{f"transfer/example/{name}.json": f"transfer/{name}-schema.json" for name in [
        "transfer-completion-message", "transfer-error", "transfer-process",
        "transfer-request-message", "transfer-start-message", "transfer-suspension-message",
        "transfer-termination-message",
    ]},
}
# Upstream mismatch (shared/dsp/README.md): its serviceEndpoint ends in
# /.well-known/dspace-version, the schema's pattern wants /catalog.
BROKEN_DID_EXAMPLE = "common/example/dataservice-did-service.json"

OFFER_USE = {
    "@id": "urn:trustspace:offer:research",
    "permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"}]}],
}
OFFER_LOGICAL = {
    "@id": "urn:trustspace:offer:cn-2026",
    "profile": "https://trustspace.dev/ns/v1/odrl",
    "permission": [{"action": "use", "constraint": [{"and": [
        {"leftOperand": "spatial", "operator": "eq", "rightOperand": "CN"},
        {"leftOperand": "dateTime", "operator": "lt",
         "rightOperand": {"@value": "2027-01-01", "@type": "xsd:date"}},
        {"or": [{"leftOperand": "count", "operator": "lteq", "rightOperand": "100"},
                {"leftOperand": "purpose", "operator": "isAnyOf",
                 "rightOperand": ["research", "audit"]}]},
    ]}]}],
    "obligation": [{"action": "compensate"}],
}
OFFER_PROHIBIT = {"@id": "urn:trustspace:offer:no-redistribution",
                  "prohibition": [{"action": "distribute"}]}

SERVICE = "urn:trustspace:service:node-a"
ENDPOINT = "https://node-a.example.cn/dsp"
PARTICIPANT = "did:web:node-a.example.cn"
DIGEST = "sm3:" + "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"

PLAIN = DatasetView(
    id="urn:trustspace:product:weather", title="Weather stations", keywords=("weather",),
    offers=(OFFER_PROHIBIT,), formats=("HttpData-PULL",),
)
EXTENDED = DatasetView(
    id="urn:trustspace:product:credit-2025",
    title="信用评分样本 2025",
    description="Anonymised credit scores; computation only, the rows never leave the node.",
    keywords=("credit", "金融"),
    offers=(OFFER_USE, OFFER_LOGICAL),
    formats=("Compute-Sandbox", "Compute-Federated"),
    level=Level.IMPORTANT,
    category="finance/credit",
    compute_modes=(ComputeMode.SANDBOX, ComputeMode.FEDERATED, ComputeMode.HOMOMORPHIC),
    registration=DIGEST,
    data_digest="sm3:" + "ab" * 32,
    schema=(Column("customer_id", "string"), Column("score", "int32")),
    provider=PARTICIPANT,
)


@pytest.fixture(scope="module")
def schemas() -> Path:
    return dsp_dir()


def assert_valid(schema: str, instance: Any) -> None:
    assert errors(schema, instance) == []


# --- the harness: the upstream examples against the upstream schemas ------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_every_upstream_example_validates(schemas: Path, path: str) -> None:
    assert_valid(EXAMPLES[path], example(path))


def test_the_known_broken_did_example_fails_only_on_its_endpoint(schemas: Path) -> None:
    assert errors("common/did-service-schema.json", example(BROKEN_DID_EXAMPLE)) == [
        "serviceEndpoint: 'https://bar.example.com/some/path/.well-known/dspace-version' "
        "does not match 'https?://.*?/catalog$'"]


def test_the_table_covers_every_example_and_the_schemas_are_sound(schemas: Path) -> None:
    on_disk = {str(p.relative_to(schemas)) for p in schemas.rglob("example/*.json")}
    assert on_disk == set(EXAMPLES) | {BROKEN_DID_EXAMPLE}
    for path in schemas.rglob("*-schema.json"):
        Draft201909Validator.check_schema(json.loads(path.read_text(encoding="utf-8")))


def test_the_harness_rejects(schemas: Path) -> None:
    bad = example("catalog/example/catalog.json")
    del bad["participantId"]
    bad["dataset"][0]["hasPolicy"][0]["target"] = "urn:x"
    assert len(errors(CATALOG, bad)) >= 2
    # Why the trustspace context is an IRI: an inline context object is refused.
    inline = example("catalog/example/catalog.json")
    inline["@context"].append({"ts": "https://trustspace.dev/ns/v1#"})
    assert errors(CATALOG, inline)


# --- what we produce -----------------------------------------------------------------------


def test_version_response(schemas: Path) -> None:
    body = version_response()
    assert body == {"protocolVersions": [{"version": "2025-1", "path": "/", "binding": "HTTPS"}]}
    assert_valid(VERSION, body)
    assert_valid(VERSION, version_response("/dsp/2025-1", service_id=SERVICE))
    with pytest.raises(ValueError, match="absolute"):
        version_response("dsp")


@pytest.mark.parametrize("views", [(), (PLAIN,), (EXTENDED,), (PLAIN, EXTENDED)],
                         ids=["empty", "plain", "extended", "both"])
def test_catalog_validates(schemas: Path, views: tuple[DatasetView, ...]) -> None:
    body = catalog(PARTICIPANT, SERVICE, ENDPOINT, views)
    assert_valid(CATALOG, body)
    assert body["@id"] == ENDPOINT + "/catalog"
    assert body["service"] == [{"@id": SERVICE, "@type": "DataService", "endpointURL": ENDPOINT}]
    assert ("dataset" in body) == bool(views)
    extended = EXTENDED in views
    assert body["@context"] == ([DSP_CONTEXT, TS_CONTEXT] if extended else [DSP_CONTEXT])
    assert any(k.startswith("ts:") for d in body.get("dataset", []) for k in d) == extended


@pytest.mark.parametrize("view", [PLAIN, EXTENDED], ids=["plain", "extended"])
@pytest.mark.parametrize("endpoint", [None, ENDPOINT], ids=["by-id", "embedded"])
def test_dataset_validates(schemas: Path, view: DatasetView, endpoint: str | None) -> None:
    body = dataset(view, SERVICE, endpoint_url=endpoint)
    assert_valid(DATASET, body)
    assert [o["@type"] for o in body["hasPolicy"]] == ["Offer"] * len(view.offers)
    assert len(body["distribution"]) == len(view.formats)
    access = body["distribution"][0]["accessService"]
    assert access == (SERVICE if endpoint is None else
                      {"@id": SERVICE, "@type": "DataService", "endpointURL": endpoint})


def test_extension_terms_as_written() -> None:
    body = dataset(EXTENDED, SERVICE)
    assert {k: v for k, v in body.items() if k.startswith("ts:")} == {
        "ts:provider": PARTICIPANT,
        "ts:level": "important",
        "ts:category": "finance/credit",
        "ts:computeModes": ["sandbox", "federated", "homomorphic"],
        "ts:registration": DIGEST,
        "ts:dataDigest": "sm3:" + "ab" * 32,
        "ts:schema": [{"name": "customer_id", "type": "string"},
                      {"name": "score", "type": "int32"}],
    }
    assert body["dct:title"] == EXTENDED.title and body["dcat:keyword"] == ["credit", "金融"]


def test_output_does_not_share_state_with_the_view() -> None:
    body = dataset(EXTENDED, SERVICE)
    body["hasPolicy"][0]["permission"][0]["action"] = "modify"
    assert EXTENDED.offers[0]["permission"][0]["action"] == "use"


def test_catalog_error_validates(schemas: Path) -> None:
    body = catalog_error(ErrorCode.UNKNOWN_DATASET, ["no dataset urn:x"])
    assert body == {"@context": [DSP_CONTEXT], "@type": "CatalogError",
                    "code": "unknown-dataset", "reason": ["no dataset urn:x"]}
    assert_valid(CATALOG_ERROR, body)
    assert_valid(CATALOG_ERROR, catalog_error("123-A", []))


def test_status_codes() -> None:
    assert {c: STATUS[c] for c in ErrorCode if STATUS[c] != 400} == {
        "unauthorized": 401, "forbidden": 403, "unknown-dataset": 404}
    assert DspError(ErrorCode.UNKNOWN_DATASET, ["x"]).status == 404
    assert DspError("my-code", ["x"], 409).status == 409
    with pytest.raises(ValueError, match="no default HTTP status"):
        DspError("my-code", ["x"])


# --- what we read --------------------------------------------------------------------------


def test_parse_the_spec_requests(schemas: Path) -> None:
    assert parse_catalog_request(example("catalog/example/catalog-request-message.json")) \
        == CatalogRequest(())
    assert parse_dataset_request(example("catalog/example/dataset-request-message.json")) \
        == DatasetRequest("urn:uuid:3afeadd8-ed2d-569e-d634-8394a8836d57")


def test_parse_the_spec_catalog(schemas: Path) -> None:
    view = parse_catalog(example("catalog/example/catalog.json"))
    assert view.participant_id == "urn:example:DataProviderA"
    assert [s.endpoint_url for s in view.services] == ["https://provider-a.com/connector"]
    [ds] = view.datasets
    assert ds.id == "urn:uuid:3dd1add8-4d2d-569e-d634-8394a8836a88"
    assert ds.formats == ("HttpData-PULL",)
    assert ds.access_service == "urn:uuid:4aa2dcc8-4d2d-569e-d634-8394a8834d77"
    assert ds.offers[0]["permission"][0]["constraint"][0]["rightOperand"] == "http://example.org/EU"
    assert "@type" not in ds.offers[0] and not ds.has_extensions and ds.title is None


def test_parse_the_spec_nested_catalog(schemas: Path) -> None:
    view = parse_catalog(example("catalog/example/nested-catalog.json"))
    assert view.datasets == () and view.services == ()
    [sub] = view.catalogs
    assert sub.participant_id is None
    assert [s.endpoint_url for s in sub.services] == ["https://provder-a.com/subcatalog"]
    assert list(view.all_datasets()) == []


def test_parse_the_spec_dataset(schemas: Path) -> None:
    view = parse_dataset(example("catalog/example/dataset.json"))
    assert view.id == "urn:uuid:3afeadd8-ed2d-569e-d634-8394a8836d57"
    assert view.access_service == "urn:uuid:4aa2dcc8-4d2d-569e-d634-8394a8834d77"
    assert [o["@id"] for o in view.offers] == \
        ["urn:uuid:2828282:3dd1add8-4d2d-569e-d634-8394a8836a88"]


@pytest.mark.parametrize("views", [(PLAIN,), (EXTENDED,), (PLAIN, EXTENDED)],
                         ids=["plain", "extended", "both"])
def test_catalog_round_trip(views: tuple[DatasetView, ...]) -> None:
    wire = json.loads(json.dumps(catalog(PARTICIPANT, SERVICE, ENDPOINT, views)))
    parsed = parse_catalog(wire)
    assert parsed.participant_id == PARTICIPANT
    assert parsed.datasets == tuple(replace(v, access_service=SERVICE) for v in views)
    # and the parsed views produce the same message again
    assert catalog(PARTICIPANT, SERVICE, ENDPOINT, parsed.datasets) == wire


@pytest.mark.parametrize("endpoint", [None, ENDPOINT])
def test_dataset_round_trip(endpoint: str | None) -> None:
    wire = json.loads(json.dumps(dataset(EXTENDED, SERVICE, endpoint_url=endpoint)))
    assert parse_dataset(wire) == replace(EXTENDED, access_service=SERVICE)


def test_ts_terms_count_only_under_the_trustspace_context() -> None:
    wire = dataset(EXTENDED, SERVICE)
    wire["@context"] = [DSP_CONTEXT]
    view = parse_dataset(wire)
    assert not view.has_extensions and view.title == EXTENDED.title


def test_dcat_literals_are_read_leniently() -> None:
    wire = dataset(PLAIN, SERVICE)
    wire["dct:title"] = [{"@value": "Wetterstationen", "@language": "de"}, "Weather"]
    wire["dct:description"] = {"@value": "Hourly", "@language": "en"}
    wire["dcat:keyword"] = ["weather", {"@value": "climate"}, 7]
    view = parse_dataset(wire)
    assert (view.title, view.description, view.keywords) == \
        ("Wetterstationen", "Hourly", ("weather", "climate"))


# --- malformed input -----------------------------------------------------------------------

REQUEST = {"@context": [DSP_CONTEXT], "@type": "CatalogRequestMessage", "filter": []}
DATASET_REQUEST = {"@context": [DSP_CONTEXT], "@type": "DatasetRequestMessage",
                   "dataset": "urn:x"}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of base with keys replaced; a value of ... deletes the key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        key = {"context": "@context", "type": "@type"}.get(key, key)
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return out


BAD_CATALOG_REQUESTS = [
    ([REQUEST], "not-an-object"),
    ("CatalogRequestMessage", "not-an-object"),
    (None, "not-an-object"),
    (_with(REQUEST, context=...), "missing-context"),
    (_with(REQUEST, context=DSP_CONTEXT), "wrong-context"),
    (_with(REQUEST, context=["https://w3id.org/dspace/2024/1/context.json"]), "wrong-context"),
    (_with(REQUEST, context=[DSP_CONTEXT, {"ts": "https://trustspace.dev/ns/v1#"}]),
     "wrong-context"),
    (_with(REQUEST, context=[]), "wrong-context"),
    (_with(REQUEST, type=...), "wrong-type"),
    (_with(REQUEST, type="DatasetRequestMessage"), "wrong-type"),
    (_with(REQUEST, type="dspace:CatalogRequestMessage"), "wrong-type"),
    (_with(REQUEST, filter={"q": "x"}), "invalid-property"),
    (_with(REQUEST, filter="x"), "invalid-property"),
    (_with(REQUEST, filter=None), "invalid-property"),
]
BAD_DATASET_REQUESTS = [
    (42, "not-an-object"),
    (_with(DATASET_REQUEST, context=...), "missing-context"),
    (_with(DATASET_REQUEST, type="CatalogRequestMessage"), "wrong-type"),
    (_with(DATASET_REQUEST, dataset=...), "missing-property"),
    (_with(DATASET_REQUEST, dataset=["urn:x"]), "invalid-property"),
    (_with(DATASET_REQUEST, dataset=""), "invalid-property"),
]


@pytest.mark.parametrize(("message", "code"), BAD_CATALOG_REQUESTS)
def test_malformed_catalog_requests(message: Any, code: str) -> None:
    with pytest.raises(DspError) as caught:
        parse_catalog_request(message)
    assert (caught.value.code, caught.value.status) == (code, 400)
    assert caught.value.reasons


@pytest.mark.parametrize(("message", "code"), BAD_DATASET_REQUESTS)
def test_malformed_dataset_requests(message: Any, code: str) -> None:
    with pytest.raises(DspError) as caught:
        parse_dataset_request(message)
    assert (caught.value.code, caught.value.status) == (code, 400)


def test_refusals_of_requests_agree_with_the_schemas(schemas: Path) -> None:
    for message, _ in BAD_CATALOG_REQUESTS:
        assert errors("catalog/catalog-request-message-schema.json", message)
    for message, _ in BAD_DATASET_REQUESTS[:-1]:  # the schema allows an empty dataset id
        assert errors("catalog/dataset-request-message-schema.json", message)
    with pytest.raises(DspError) as caught:
        parse_catalog_request(_with(REQUEST, type=...))
    assert_valid(CATALOG_ERROR, caught.value.body())


def _catalog_with(mutate: str) -> dict[str, Any]:
    body = catalog(PARTICIPANT, SERVICE, ENDPOINT, (PLAIN, EXTENDED))
    ds, offer = body["dataset"][1], body["dataset"][1]["hasPolicy"][0]
    match mutate:
        case "no participantId":
            del body["participantId"]
        case "catalog hasPolicy":
            body["hasPolicy"] = [dict(offer)]
        case "service without endpoint":
            del body["service"][0]["endpointURL"]
        case "no hasPolicy":
            del ds["hasPolicy"]
        case "empty hasPolicy":
            ds["hasPolicy"] = []
        case "offer with target":
            offer["target"] = ds["@id"]
        case "offer without @id":
            del offer["@id"]
        case "offer without rules":
            del offer["permission"]
        case "atomic and logical":
            offer["permission"][0]["constraint"][0]["or"] = []
        case "numeric rightOperand":
            offer["permission"][0]["constraint"][0]["rightOperand"] = 5
        case "unknown operator":
            offer["permission"][0]["constraint"][0]["operator"] = "matches"
        case "no distribution":
            del ds["distribution"]
        case "distribution without format":
            del ds["distribution"][0]["format"]
        case "accessService is a number":
            ds["distribution"][0]["accessService"] = 7
        # not in the schemas: the spec's text and our own extension
        case "offer in two datasets":
            body["dataset"][0]["hasPolicy"][0]["@id"] = offer["@id"]
        case "dataset @type":
            ds["@type"] = "Catalog"
        case "ts:level":
            ds["ts:level"] = "secret"
        case "ts:dataDigest":
            ds["ts:dataDigest"] = "sha256:" + "00" * 32
        case "ts:computeModes":
            ds["ts:computeModes"] = "sandbox"
        case "ts:schema":
            ds["ts:schema"] = [{"name": "x"}]
    return body


SCHEMA_REFUSES = [
    "no participantId", "catalog hasPolicy", "service without endpoint", "no hasPolicy",
    "empty hasPolicy", "offer with target", "offer without @id", "offer without rules",
    "atomic and logical", "numeric rightOperand", "unknown operator", "no distribution",
    "distribution without format", "accessService is a number",
]
SPEC_OR_TS_REFUSES = ["offer in two datasets", "dataset @type", "ts:level", "ts:dataDigest",
                      "ts:computeModes", "ts:schema"]


@pytest.mark.parametrize("mutate", SCHEMA_REFUSES + SPEC_OR_TS_REFUSES)
def test_malformed_catalogs(mutate: str) -> None:
    with pytest.raises(DspError) as caught:
        parse_catalog(_catalog_with(mutate))
    assert caught.value.code in {"missing-property", "invalid-property"}
    assert caught.value.reasons[0].startswith("Catalog")


def test_refusals_of_catalogs_agree_with_the_schemas(schemas: Path) -> None:
    assert_valid(CATALOG, _catalog_with("nothing"))
    for mutate in SCHEMA_REFUSES:
        assert errors(CATALOG, _catalog_with(mutate)), mutate
    for mutate in SPEC_OR_TS_REFUSES:
        assert_valid(CATALOG, _catalog_with(mutate))


@pytest.mark.parametrize(("changes", "match"), [
    ({"id": ""}, "@id"),
    ({"offers": ()}, "at least one offer"),
    ({"offers": (OFFER_USE, OFFER_USE)}, "unique"),
    ({"offers": ({**OFFER_USE, "target": "urn:x"},)}, "no target"),
    ({"offers": ({**OFFER_USE, "@type": "Agreement"},)}, "'Offer'"),
    ({"offers": ({"@id": "urn:o", "permission": []},)}, "non-empty array"),
    ({"offers": ({"@id": "urn:o", "permission": [{"constraint": []}]},)}, "string action"),
    ({"formats": ()}, "format"),
    ({"formats": "HttpData-PULL"}, "sequence"),
    ({"keywords": "weather"}, "sequence"),
    ({"compute_modes": "sandbox"}, "sequence"),
    ({"title": 5}, "title"),
    ({"level": "secret"}, "secret"),
    ({"compute_modes": ("cloud",)}, "cloud"),
    ({"registration": "sm3:ABC"}, "registration"),
    ({"data_digest": DIGEST.upper()}, "data_digest"),
    ({"provider": ""}, "provider"),
])
def test_views_check_their_fields(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(PLAIN, **changes)


def test_views_normalise_what_they_hold() -> None:
    view = replace(PLAIN, offers=[{**OFFER_USE, "@type": "Offer"}], level="core",  # type: ignore[arg-type]
                   compute_modes=["sandbox"])
    assert view.offers == (OFFER_USE,) and view.level is Level.CORE
    assert view.compute_modes == (ComputeMode.SANDBOX,)


def test_catalog_refuses_what_would_be_ambiguous() -> None:
    with pytest.raises(ValueError, match="twice"):
        catalog(PARTICIPANT, SERVICE, ENDPOINT, [PLAIN, PLAIN])
    with pytest.raises(ValueError, match="two datasets"):
        catalog(PARTICIPANT, SERVICE, ENDPOINT, [PLAIN, replace(EXTENDED, offers=PLAIN.offers)])
    with pytest.raises(ValueError, match="served by"):
        catalog(PARTICIPANT, SERVICE, ENDPOINT, [replace(PLAIN, access_service="urn:other")])


# --- any text at all -----------------------------------------------------------------------

ids = st.text(min_size=1, max_size=40)
views = st.builds(
    lambda id_, title, description, keywords, category, columns, extended: DatasetView(
        id=id_, title=title, description=description, keywords=tuple(keywords),
        offers=({**OFFER_USE, "@id": id_ + "#offer-0"},
                {**OFFER_PROHIBIT, "@id": id_ + "#offer-1"}),
        formats=("HttpData-PULL",),
        **({"category": category, "schema": tuple(Column(n, t) for n, t in columns),
            "level": Level.CORE, "provider": id_} if extended else {})),
    ids, st.none() | st.text(max_size=60), st.none() | st.text(max_size=60),
    st.lists(st.text(max_size=20), max_size=4), ids, st.lists(st.tuples(ids, ids), max_size=3),
    st.booleans(),
)


@given(participant=ids, service=ids, endpoint=ids,
       datasets=st.lists(views, max_size=4, unique_by=lambda v: v.id))
def test_any_text_makes_a_valid_catalog(schemas: Path, participant: str, service: str,
                                        endpoint: str, datasets: list[DatasetView]) -> None:
    body = catalog(participant, service, endpoint, datasets)
    assert_valid(CATALOG, body)
    wire = json.loads(json.dumps(body))
    assert parse_catalog(wire).datasets == tuple(replace(v, access_service=service)
                                                 for v in datasets)
    for view in datasets:
        assert_valid(DATASET, dataset(view, service))
