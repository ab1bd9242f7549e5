"""The Dataspace Protocol 2025-1 catalog endpoints other nodes call (signed requests)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from trustspace.crypto import SignedDocument
from trustspace.registry import dsp
from trustspace.registry.catalog import dataset_view
from trustspace.registry.products import ProductSpec
from trustspace.registry.tables import Product, ProductVersion

from .auth import Caller, member, node_of
from .node import Node

router = APIRouter(tags=["protocol: catalog"])
AnyMember = Annotated[Caller, Depends(member())]


def service_id(node: Node) -> str:
    return f"urn:trustspace:service:{node.settings.name}"


def participant_id(node: Node) -> str:
    membership = node.membership()
    return membership.participant_id if membership else f"urn:trustspace:node:{node.settings.name}"


def published_views(node: Node, product_id: str | None = None) -> list[dsp.DatasetView]:
    """The datasets this node offers: published (not retired, never core) current versions.

    Rendered once per catalog generation (bumped after every product change and when the
    node's membership changes), not on every request."""
    generation = node.catalog_generation
    cached = node.catalog_cache.get("views")
    if cached is None or cached[0] != generation:
        cached = (generation, _load_views(node))
        node.catalog_cache["views"] = cached
    views: list[dsp.DatasetView] = cached[1]
    return [v for v in views if product_id is None or v.id == product_id]


def _load_views(node: Node) -> list[dsp.DatasetView]:
    provider = participant_id(node)
    query = select(Product, ProductVersion).join(ProductVersion, (
        ProductVersion.product_id == Product.product_id) & (
        ProductVersion.version == Product.current_version)).where(Product.status == "published")
    views = []
    with node.db.read() as session:
        for _product, version in session.execute(query.order_by(Product.product_id)).tuples():
            spec = ProductSpec.from_json(version.spec)
            registration = SignedDocument.from_json(version.registration).digest \
                if version.registration else None
            views.append(dataset_view(spec, version=version.version,
                                      data_digest=version.data_digest,
                                      registration_digest=registration, provider=provider))
    return views


def _dsp_error(exc: dsp.DspError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@router.post("/catalog/request")
def catalog_request(caller: AnyMember, node: Annotated[Node, Depends(node_of)]) -> Any:
    """Catalog Protocol: a CatalogRequestMessage, answered by this node's Catalog."""
    try:
        request = dsp.parse_catalog_request(json.loads(caller.body or b"null"))
        if request.filter:
            raise dsp.DspError(dsp.ErrorCode.UNSUPPORTED_FILTER,
                               ["filters are not supported; send an empty filter"])
    except ValueError as exc:
        return _dsp_error(dsp.DspError(dsp.ErrorCode.NOT_AN_OBJECT, [f"not JSON: {exc}"]))
    except dsp.DspError as exc:
        return _dsp_error(exc)
    generation = node.catalog_generation
    cached = node.catalog_cache.get("catalog")
    if cached is None or cached[0] != generation:
        body = dsp.catalog(participant_id(node), service_id(node), node.settings.public_url,
                           published_views(node))
        cached = (generation, JSONResponse(body).body)
        node.catalog_cache["catalog"] = cached
    return Response(cached[1], media_type="application/json")


@router.get("/catalog/datasets/{dataset_id:path}")
def dataset(dataset_id: str, caller: AnyMember, request: Request) -> Any:
    """Catalog Protocol: one Dataset (404 unknown-dataset, also for ones not offered)."""
    node = node_of(request)
    views = published_views(node, dataset_id)
    if not views:
        return _dsp_error(dsp.DspError(dsp.ErrorCode.UNKNOWN_DATASET,
                                       [f"no dataset {dataset_id} is offered here"]))
    return dsp.dataset(views[0], service_id(node), endpoint_url=node.settings.public_url)
