"""Database tables of the registry: members (authority), products and their versions (provider),
registrations, the federated catalog index and data demands (authority)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trustspace.db import Base, UTCDateTime


class Member(Base):
    """A participant's application to the data space and, once approved, its membership."""

    __tablename__ = "members"

    application_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    participant_id: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(JSON)
    endpoint_url: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending/approved/rejected/revoked
    credential_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    credential: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revocation_reason: Mapped[str | None] = mapped_column(Text)


class Product(Base):
    """A provider's data product; its versions live in `product_versions`."""

    __tablename__ = "products"

    product_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    current_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)  # draft/published/retired
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProductVersion(Base):
    __tablename__ = "product_versions"

    product_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("products.product_id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    data_digest: Mapped[str] = mapped_column(String(80))
    rows: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    registration: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Registration(Base):
    """The authority's record of a registered product version (数据资源登记)."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("provider_id", "product_id", "version"),)

    registration_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(200), index=True)
    product_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    data_digest: Mapped[str] = mapped_column(String(80))
    level: Mapped[str] = mapped_column(String(16))
    certificate: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CatalogEntry(Base):
    """One dataset in the authority's federated catalog, as last crawled from its provider."""

    __tablename__ = "catalog_entries"

    provider_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    search_text: Mapped[str] = mapped_column(Text)  # lower-cased title, description, keywords
    level: Mapped[str] = mapped_column(String(16), index=True)
    modes: Mapped[list[str]] = mapped_column(JSON)
    dataset: Mapped[dict[str, Any]] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Demand(Base):
    """A consumer's data demand (供需撮合), matched against the federated catalog."""

    __tablename__ = "demands"

    demand_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    keywords: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
