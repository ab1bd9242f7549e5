"""The Dataspace Protocol 2025-1 JSON Schemas and examples, read in place from shared/dsp.

The files are not copied into the repository: they sit beside it, at
``<repo>/../shared/dsp/2025-1`` (the same layout in CI), or where TRUSTSPACE_DSP_DIR points.
Without them the tests that need them skip, naming the path they looked at. See
shared/dsp/README.md for the source and the two upstream defects handled here.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft201909Validator
from referencing import Registry
from referencing.jsonschema import DRAFT201909

ENV_VAR = "TRUSTSPACE_DSP_DIR"


def dsp_dir() -> Path:
    """The 2025-1 folder, or skip the calling test."""
    configured = os.environ.get(ENV_VAR)
    path = Path(configured) if configured else \
        Path(__file__).resolve().parents[1].parent / "shared" / "dsp" / "2025-1"
    if not (path / "catalog" / "catalog-schema.json").is_file():
        pytest.skip(f"DSP 2025-1 schemas not found at {path} (set {ENV_VAR})")
    return path


def _load_schema(path: Path) -> Any:
    # Upstream defect: three transfer schemas write "#definitions/..." (no "/"), which
    # referencing rejects as an invalid anchor. Fixed in memory only.
    return json.loads(path.read_text(encoding="utf-8").replace("#definitions/", "#/definitions/"))


@functools.cache
def _registry(root: Path) -> Registry[Any]:
    resources = []
    for path in sorted(root.rglob("*-schema.json")):
        schema = _load_schema(path)
        resources.append((schema["$id"], DRAFT201909.create_resource(schema)))
    return Registry().with_resources(resources)


@functools.cache
def _validator(root: Path, schema_relpath: str) -> Draft201909Validator:
    schema = _load_schema(root / schema_relpath)
    return Draft201909Validator(schema, registry=_registry(root))


def validator(schema_relpath: str) -> Draft201909Validator:
    """A validator for e.g. "catalog/catalog-schema.json", resolving every cross-file $ref
    through a registry of all the *-schema.json files (nothing is fetched)."""
    return _validator(dsp_dir(), schema_relpath)


def example(relpath: str) -> Any:
    """An example message, e.g. "catalog/example/catalog.json"."""
    return json.loads((dsp_dir() / relpath).read_text(encoding="utf-8"))


def errors(schema_relpath: str, instance: Any) -> list[str]:
    """Every validation error, as "path: message" lines (empty when the instance is valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator(schema_relpath).iter_errors(instance)]
