"""Management API for a provider's data products: add (validate, digest the data, register with
the authority, publish), list, show, retire. The raw data is never served by any endpoint."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from trustspace.contracts.negotiation import NegotiationRefused, check_policy
from trustspace.crypto import SignedDocument
from trustspace.registry.catalog import dataset_view
from trustspace.registry.credentials import CredentialInvalid, iso, verify_registration
from trustspace.registry.products import (
    ProductInvalid,
    ProductSpec,
    check_publishable,
    effective_policy,
    inspect_source,
    public_preview,
)
from trustspace.registry.tables import Product, ProductVersion

from .auth import operator
from .client import NodeClient, RemoteError
from .errors import ApiError
from .management_api import remote_error
from .node import Node

router = APIRouter(prefix="/api/products", tags=["management: products"])
Operator = Annotated[Node, Depends(operator)]
log = logging.getLogger("trustspace.products")


def _invalid(exc: ProductInvalid) -> ApiError:
    field = f" at {exc.field}" if exc.field else ""
    return ApiError(400, exc.reason, f"{exc.detail}{field}")


async def _register(node: Node, spec: ProductSpec, version: int, digest: str
                    ) -> dict[str, Any]:
    """Ask the authority for a registration certificate and check what comes back."""
    membership = node.membership()
    if membership is None or "provider" not in membership.roles:
        raise ApiError(409, "not-a-provider",
                       "enrol with the provider role before publishing products")
    request = {"productId": spec.id, "version": version, "dataDigest": digest,
               "level": spec.level.value, "category": spec.category}
    async with NodeClient(node) as client:
        try:
            cert = await client.post(f"{node.settings.authority_url}/registry/registrations",
                                     request)
        except RemoteError as exc:
            raise remote_error(exc) from None
    try:
        registration = verify_registration(cert, node.authority_key)
    except CredentialInvalid as exc:
        raise ApiError(502, "bad-registration", str(exc)) from None
    if (registration.product_id, registration.version, registration.data_digest,
            registration.provider_id) != (spec.id, version, digest, membership.participant_id):
        raise ApiError(502, "bad-registration", "certificate does not match the product")
    return dict(cert)


async def _announce(node: Node) -> None:
    """Tell the authority the catalog changed; it crawls us. Best effort: a missed
    announcement is caught up by the authority's periodic crawl."""
    try:
        async with NodeClient(node) as client:
            await client.post(f"{node.settings.authority_url}/registry/catalog/changed", {})
    except (ApiError, RemoteError) as exc:
        log.warning("could not announce the catalog change: %s", exc)


def _summary(product: Product, version: ProductVersion) -> dict[str, Any]:
    spec = version.spec
    return {"id": product.product_id, "version": version.version, "status": product.status,
            "title": spec["title"], "level": spec["level"], "modes": spec["modes"],
            "dataDigest": version.data_digest, "rows": version.rows,
            "registered": version.registration is not None,
            "updatedAt": iso(product.updated_at)}


@router.post("", status_code=201)
async def add_product(node: Operator, body: Annotated[Any, Body()],
                      new_version: Annotated[bool, Query()] = False) -> dict[str, Any]:
    """Register a product (or, with new_version=true, a new version of one)."""
    try:
        spec = ProductSpec.from_json(body)
        policy = effective_policy(spec)
        info = await run_in_threadpool(inspect_source, spec)
    except ProductInvalid as exc:
        raise _invalid(exc) from None
    with node.db.read() as session:
        existing = session.get(Product, spec.id)
    if existing is not None and not new_version:
        raise ApiError(409, "duplicate-id", f"product {spec.id} exists; add a new version "
                                            "with new_version=true")
    if existing is not None and existing.status == "retired":
        raise ApiError(409, "retired", f"product {spec.id} is retired")
    if existing is None and new_version:
        raise ApiError(404, "unknown-product", spec.id)
    for i, offer in enumerate(spec.offers):
        try:
            check_policy(offer, spec.level, spec.modes)
        except NegotiationRefused as exc:
            raise ApiError(400, "policy-invalid", f"offers[{i}]: {exc.detail}") from None
    version = existing.current_version + 1 if existing else 1
    publish = policy.publishable
    registration = None
    if publish:
        try:
            check_publishable(spec)
            dataset_view(spec, version=version, data_digest=info.digest,
                         registration_digest=None, provider=None)
        except ProductInvalid as exc:
            raise _invalid(exc) from None
        except ValueError as exc:
            raise ApiError(400, "invalid-offer", str(exc)) from None
        # Registration before any local write: if the authority refuses or is down, nothing
        # is stored, and registering again is idempotent on the authority's side.
        registration = await _register(node, spec, version, info.digest)
    now = node.clock()
    with node.db.transaction() as session:
        product = session.get(Product, spec.id, with_for_update=True)
        if product is None:
            product = Product(product_id=spec.id, current_version=version, created_at=now,
                              updated_at=now, status="published" if publish else "private")
            session.add(product)
        elif product.current_version != version - 1:
            raise ApiError(409, "concurrent-update", "another version was added meanwhile")
        product.current_version = version
        product.updated_at = now
        product.status = "published" if publish else "private"
        row = ProductVersion(product_id=spec.id, version=version, spec=spec.to_json(),
                             data_digest=info.digest, rows=info.rows,
                             size_bytes=info.size_bytes, registration=registration,
                             created_at=now)
        session.add(row)
        session.flush()
        result = _summary(product, row)
    node.catalog_changed()
    if publish:
        await _announce(node)
    result["rules"] = list(policy.rules)
    return result


@router.get("")
def list_products(node: Operator) -> dict[str, Any]:
    with node.db.read() as session:
        rows = session.execute(select(Product, ProductVersion).join(ProductVersion, (
            ProductVersion.product_id == Product.product_id) & (
            ProductVersion.version == Product.current_version)).order_by(Product.product_id))
        return {"products": [_summary(p, v) for p, v in rows.tuples()]}


@router.get("/{product_id:path}")
def show_product(product_id: str, node: Operator) -> dict[str, Any]:
    with node.db.read() as session:
        product = session.get(Product, product_id)
        if product is None:
            raise ApiError(404, "unknown-product", product_id)
        versions = session.scalars(select(ProductVersion).where(
            ProductVersion.product_id == product_id).order_by(ProductVersion.version)).all()
        current = versions[-1]
        spec = ProductSpec.from_json(current.spec)
        return {**_summary(product, current), "spec": current.spec,
                "preview": public_preview(spec),
                "registration": current.registration,
                "registrationDigest": SignedDocument.from_json(current.registration).digest
                if current.registration else None,
                "versions": [{"version": v.version, "dataDigest": v.data_digest,
                              "rows": v.rows, "createdAt": iso(v.created_at)}
                             for v in versions]}


@router.post("/{product_id:path}/retire")
async def retire_product(product_id: str, node: Operator) -> dict[str, Any]:
    with node.db.transaction() as session:
        product = session.get(Product, product_id, with_for_update=True)
        if product is None:
            raise ApiError(404, "unknown-product", product_id)
        if product.status == "retired":
            raise ApiError(409, "retired", f"product {product_id} is already retired")
        was_published = product.status == "published"
        product.status = "retired"
        product.updated_at = node.clock()
    node.catalog_changed()
    if was_published:
        await _announce(node)
    return {"id": product_id, "status": "retired"}
