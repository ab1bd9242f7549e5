"""End to end, with real processes on loopback ports: an authority, a provider, a consumer and a
regulator; once on SQLite and once on PostgreSQL. Every refusal of the node's faces is shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.nodes import DataSpace, NodeProcess, dataspace, product_spec
from trustspace.connector.auth import encode_credential
from trustspace.connector.httpsig import CREDENTIAL_HEADER, sign_request
from trustspace.crypto import SM2PrivateKey, SM2PublicKey, canonical_json, sm3_file
from trustspace.registry.credentials import issue_membership, verify_registration

pytestmark = pytest.mark.slow

CATALOG_REQUEST = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                   "@type": "CatalogRequestMessage", "filter": []}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def space(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[DataSpace]:
    root = tmp_path_factory.mktemp(f"space-{request.param}")
    with dataspace(root, request.param) as ds:
        provider = ds.add_member("hospital-a", "provider")
        ds.add_member("research-b", "consumer")
        ds.add_member("regulator-c", "regulator")
        spec = product_spec(root / "bp.csv")
        provider.ok("POST", "/api/products", spec)
        yield ds


def _identity(node: NodeProcess) -> tuple[SM2PrivateKey, dict[str, Any]]:
    key = SM2PrivateKey.from_pem((node.home / "node-key.pem").read_bytes())
    return key, node.ok("GET", "/api/node")["credential"]


def signed(method: str, url: str, body: Any, key: SM2PrivateKey,
           credential: dict[str, Any] | None, *, now: datetime | None = None,
           tamper: bytes | None = None) -> httpx.Response:
    content = canonical_json(body) if body is not None else b""
    headers = {"content-type": "application/json"}
    if credential is not None:
        headers[CREDENTIAL_HEADER] = encode_credential(credential)
    headers.update(sign_request(method, url, headers, content, key, now=now))
    return httpx.request(method, url, content=tamper if tamper is not None else content,
                         headers=headers, timeout=30)


def _error(response: httpx.Response) -> str:
    body = response.json()
    return str(body.get("code") or body.get("error"))


# ---- the story --------------------------------------------------------------------------------

def test_consumer_finds_the_product_through_the_authority(space: DataSpace) -> None:
    consumer = space.members["research-b"]
    found = consumer.ok("POST", "/api/catalog/search", {"keywords": ["blood"]})["results"]
    assert [(r["provider"], r["datasetId"]) for r in found] == \
        [("urn:trustspace:participant:hospital-a", "bp-stats")]
    assert found[0]["endpoint"] == space.members["hospital-a"].url
    for query, hits in (({"keywords": ["nothing-like-this"]}, 0), ({"level": "important"}, 0),
                        ({"mode": "homomorphic"}, 0), ({"mode": "sandbox"}, 1),
                        ({"provider": "urn:trustspace:participant:hospital-a"}, 1)):
        assert len(consumer.ok("POST", "/api/catalog/search", query)["results"]) == hits, query


def test_consumer_reads_the_providers_dsp_catalog(space: DataSpace) -> None:
    from tests.dsp_schemas import validator

    provider, consumer = space.members["hospital-a"], space.members["research-b"]
    catalog = consumer.ok("POST", "/api/catalog/remote", {"url": provider.url})
    validator("catalog/catalog-schema.json").validate(catalog)
    (dataset,) = catalog["dataset"]
    assert dataset["@id"] == "bp-stats" and dataset["ts:level"] == "general"
    assert "source" not in json.dumps(dataset) and "bp.csv" not in json.dumps(dataset)
    # The registration certificate the dataset names verifies offline with the trust anchor,
    # and binds the digest of the provider's actual data.
    shown = provider.ok("GET", "/api/products/bp-stats")
    assert dataset["ts:registration"] == shown["registrationDigest"]
    anchor = SM2PublicKey.from_pem((space.authority.home / "authority.pub.pem").read_bytes())
    cert = verify_registration(shown["registration"], anchor)
    data_digest = "sm3:" + sm3_file(space.root / "bp.csv").hex()
    assert cert.data_digest == dataset["ts:dataDigest"] == data_digest
    assert cert.provider_id == "urn:trustspace:participant:hospital-a"


def test_consumer_verifies_the_registration_through_the_cli(space: DataSpace) -> None:
    provider, consumer = space.members["hospital-a"], space.members["research-b"]
    result = consumer.cli("catalog", "verify", provider.url, "bp-stats")
    assert result.returncode == 0, result.stderr
    checked = json.loads(result.stdout)
    assert all(checked["checks"].values()) and checked["provider"].endswith("hospital-a")
    missing = consumer.cli("catalog", "verify", provider.url, "nope")
    assert missing.returncode == 2 and "unknown-dataset" in missing.stderr


def test_version_document_validates(space: DataSpace) -> None:
    from tests.dsp_schemas import validator

    answer = httpx.get(f"{space.members['hospital-a'].url}/.well-known/dspace-version")
    validator("common/protocol-version-schema.json").validate(answer.json())


def test_dataset_endpoint_and_spec_example_request(space: DataSpace) -> None:
    from tests.dsp_schemas import example, validator

    provider, consumer = space.members["hospital-a"], space.members["research-b"]
    key, credential = _identity(consumer)
    answer = signed("POST", f"{provider.url}/catalog/request",
                    example("catalog/example/catalog-request-message.json"), key, credential)
    assert answer.status_code == 200, answer.text
    one = signed("GET", f"{provider.url}/catalog/datasets/bp-stats", None, key, credential)
    assert one.status_code == 200
    validator("catalog/dataset-schema.json").validate(one.json())
    missing = signed("GET", f"{provider.url}/catalog/datasets/nope", None, key, credential)
    assert missing.status_code == 404 and _error(missing) == "unknown-dataset"
    validator("catalog/catalog-error-schema.json").validate(missing.json())


def test_demands_are_matched_and_shown_to_the_provider(space: DataSpace) -> None:
    consumer, provider = space.members["research-b"], space.members["hospital-a"]
    posted = consumer.ok("POST", "/api/demands", {
        "title": "systolic pressure by age", "purpose": "research", "mode": "federated",
        "keywords": ["cardiology"]})
    assert [m["datasetId"] for m in posted["matches"]] == ["bp-stats"]
    seen = provider.ok("GET", "/api/demands")["demands"]
    assert posted["demandId"] in {d["demandId"] for d in seen}
    no_match = consumer.ok("POST", "/api/demands", {
        "title": "tax records", "purpose": "scoring", "mode": "homomorphic",
        "keywords": ["tax"]})
    assert no_match["matches"] == []


def test_regulator_reads_the_audit_api(space: DataSpace) -> None:
    regulator, consumer = space.members["regulator-c"], space.members["research-b"]
    key, credential = _identity(regulator)
    summary = signed("GET", f"{space.authority.url}/audit/summary", None, key, credential)
    assert summary.status_code == 200 and summary.json()["members"]["approved"] >= 3
    key, credential = _identity(consumer)
    refused = signed("GET", f"{space.authority.url}/audit/summary", None, key, credential)
    assert refused.status_code == 403 and _error(refused) == "wrong-role"


# ---- protocol refusals ------------------------------------------------------------------------

def test_unsigned_and_wrongly_signed_requests(space: DataSpace) -> None:
    provider, consumer = space.members["hospital-a"], space.members["research-b"]
    url = f"{provider.url}/catalog/request"
    key, credential = _identity(consumer)
    bare = httpx.post(url, json=CATALOG_REQUEST)
    assert bare.status_code == 401 and _error(bare) == "missing-credential"
    no_sig = httpx.post(url, json=CATALOG_REQUEST,
                        headers={CREDENTIAL_HEADER: encode_credential(credential)})
    assert no_sig.status_code == 401 and _error(no_sig) == "missing-signature"
    other = signed("POST", url, CATALOG_REQUEST, SM2PrivateKey.generate(), credential)
    assert other.status_code == 401 and _error(other) == "unknown-key"
    tampered = signed("POST", url, CATALOG_REQUEST, key, credential,
                      tamper=canonical_json({**CATALOG_REQUEST, "filter": [1]}))
    assert tampered.status_code == 401 and _error(tampered) == "digest-mismatch"
    stale = signed("POST", url, CATALOG_REQUEST, key, credential,
                   now=datetime.now(UTC) - timedelta(hours=1))
    assert stale.status_code == 401 and _error(stale) == "stale"


def test_a_replayed_request_is_refused(space: DataSpace) -> None:
    provider, consumer = space.members["hospital-a"], space.members["research-b"]
    key, credential = _identity(consumer)
    url = f"{provider.url}/catalog/request"
    content = canonical_json(CATALOG_REQUEST)
    headers = {"content-type": "application/json",
               CREDENTIAL_HEADER: encode_credential(credential)}
    headers.update(sign_request("POST", url, headers, content, key))
    first = httpx.post(url, content=content, headers=headers)
    again = httpx.post(url, content=content, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 401 and _error(again) == "replayed-nonce"
    # Nonces live in memory: after a restart, anything signed before it is refused instead.
    provider.stop()
    provider.start(space.env)
    after_restart = httpx.post(url, content=content, headers=headers)
    assert after_restart.status_code == 401 and _error(after_restart) == "stale"
    fresh = signed("POST", url, CATALOG_REQUEST, key, credential)
    assert fresh.status_code == 200


def test_expired_forged_and_revoked_credentials(space: DataSpace) -> None:
    provider = space.members["hospital-a"]
    url = f"{provider.url}/catalog/request"
    authority_key = SM2PrivateKey.from_pem(
        (space.authority.home / "node-key.pem").read_bytes())
    holder = SM2PrivateKey.generate()
    now = datetime.now(UTC)

    def credential(issuer: SM2PrivateKey, start: datetime, end: datetime) -> dict[str, Any]:
        return issue_membership(
            issuer, "urn:trustspace:authority:authority",
            participant_id="urn:trustspace:participant:mallory", name="mallory",
            roles=["consumer"], public_key=holder.public_key, endpoint_url="http://127.0.0.1:9",
            valid_from=start, valid_until=end).to_json()

    expired = signed("POST", url, CATALOG_REQUEST, holder,
                     credential(authority_key, now - timedelta(days=2), now - timedelta(days=1)))
    assert expired.status_code == 401 and _error(expired) == "expired"
    early = signed("POST", url, CATALOG_REQUEST, holder,
                   credential(authority_key, now + timedelta(days=1), now + timedelta(days=2)))
    assert early.status_code == 401 and _error(early) == "not-yet-valid"
    forged = signed("POST", url, CATALOG_REQUEST, holder,
                    credential(SM2PrivateKey.generate(), now - timedelta(days=1),
                               now + timedelta(days=1)))
    assert forged.status_code == 401 and _error(forged) == "untrusted-issuer"

    leaving = space.add_member("leaving", "consumer")
    key, cred = _identity(leaving)
    assert signed("POST", url, CATALOG_REQUEST, key, cred).status_code == 200
    space.authority.ok("POST", "/api/members/revoke",
                       {"participant_id": cred["body"]["credentialSubject"]["id"]})
    revoked = signed("POST", url, CATALOG_REQUEST, key, cred)
    assert revoked.status_code == 401 and _error(revoked) == "revoked"


def test_wrong_role_and_oversized_body(space: DataSpace) -> None:
    consumer = space.members["research-b"]
    key, credential = _identity(consumer)
    registration = {"productId": "x", "version": 1, "dataDigest": "sm3:" + "0" * 64,
                    "level": "general", "category": "health"}
    refused = signed("POST", f"{space.authority.url}/registry/registrations", registration,
                     key, credential)
    assert refused.status_code == 403 and _error(refused) == "wrong-role"
    huge = {**CATALOG_REQUEST, "pad": "x" * 2_000_000}
    too_big = signed("POST", f"{space.members['hospital-a'].url}/catalog/request", huge, key,
                     credential)
    assert too_big.status_code == 413 and _error(too_big) == "body-too-large"


# ---- management refusals: clear 4xx, nothing half-written -------------------------------------

def test_operator_token_is_required(space: DataSpace) -> None:
    provider = space.members["hospital-a"]
    assert httpx.get(f"{provider.url}/api/products").status_code == 401
    wrong = httpx.get(f"{provider.url}/api/products", headers={"authorization": "Bearer x"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "bad-token"


def test_bad_products_are_refused_and_leave_nothing(space: DataSpace, tmp_path: Path) -> None:
    provider = space.members["hospital-a"]
    before = provider.ok("GET", "/api/products")
    good = product_spec(tmp_path / "data.csv", "other-product")
    cases: list[tuple[Any, int, str]] = [
        ({**good, "title": ""}, 400, "malformed"),
        ({k: v for k, v in good.items() if k != "columns"}, 400, "malformed"),
        ({**good, "columns": [{"name": "age", "type": "float128"}]}, 400,
         "unknown-column-type"),
        ({**good, "source": {"kind": "csv", "path": str(tmp_path / "none.csv")}}, 400,
         "source-missing"),
        ({**good, "columns": [{"name": "age", "type": "integer"}], "preview": []}, 400,
         "schema-mismatch"),
        ({**good, "level": "important"}, 400, "classification-forbids"),  # sandbox mode
        ({**good, "offers": [{"permission": [{"action": "use"}]}]}, 400, "policy-invalid"),
        ({**good, "offers": [{"permission": [{"action": "use", "constraint": [
            {"leftOperand": "spatial", "operator": "eq", "rightOperand": "EU"}]}]}]}, 400,
         "policy-invalid"),
        (product_spec(tmp_path / "bp.csv"), 409, "duplicate-id"),
        ([1, 2, 3], 400, "malformed"),
    ]
    for body, status, reason in cases:
        response = provider.api("POST", "/api/products", body)
        assert (response.status_code, response.json()["error"]) == (status, reason), body
    assert provider.ok("GET", "/api/products") == before


def test_core_data_is_registered_nowhere_and_never_listed(space: DataSpace,
                                                          tmp_path: Path) -> None:
    provider, consumer = space.members["hospital-a"], space.members["research-b"]
    core = product_spec(tmp_path / "core.csv", "core-registry", level="core",
                        modes=["federated"], offers=[])
    added = provider.ok("POST", "/api/products", core)
    assert added["status"] == "private" and added["registered"] is False
    catalog = consumer.ok("POST", "/api/catalog/remote", {"url": provider.url})
    assert "core-registry" not in json.dumps(catalog)
    offered = provider.api("POST", "/api/products", {
        **product_spec(tmp_path / "core2.csv", "core-offered", level="core",
                       modes=["federated"])})
    assert offered.status_code == 400 and offered.json()["error"] == "classification-forbids"
