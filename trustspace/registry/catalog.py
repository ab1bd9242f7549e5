"""A published product version as the catalog shows it: a DSP Dataset with trustspace's
extension terms. Nothing of the source (paths, database URLs) and no raw data appears."""

from __future__ import annotations

from typing import Any

from . import dsp
from .products import ProductSpec


def offer_id(product_id: str, version: int, index: int) -> str:
    return f"{product_id}:v{version}:offer:{index}"


def dataset_view(spec: ProductSpec, *, version: int, data_digest: str,
                 registration_digest: str | None, provider: str | None) -> dsp.DatasetView:
    """Raises ValueError when an offer is not a valid DSP Offer (callers check this before
    they store a product, so a stored product always renders)."""
    offers: list[dict[str, Any]] = []
    for i, offer in enumerate(spec.offers):
        offers.append({"@id": offer.get("@id") or offer_id(spec.id, version, i), **{
            k: v for k, v in offer.items() if k != "@id"}})
    return dsp.DatasetView(
        id=spec.id, offers=tuple(offers), formats=tuple(f"trustspace:{m.value}"
                                                         for m in spec.modes),
        title=spec.title, description=spec.description or None, keywords=spec.keywords,
        level=spec.level, category=spec.category, compute_modes=spec.modes,
        registration=registration_digest, data_digest=data_digest,
        schema=tuple(dsp.Column(c.name, c.type.value) for c in spec.columns),
        provider=provider,
    )
