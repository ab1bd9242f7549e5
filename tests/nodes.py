"""End-to-end test helpers: a local data space (trustspace.connector.localspace) on SQLite or on
fresh PostgreSQL databases that are dropped afterwards, and a small product spec."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trustspace.connector.localspace import (
    LOCAL_ENV,
    LocalDataSpace,
    LocalNode,
    free_port,
    local_dataspace,
    run_cli,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

NodeProcess = LocalNode
NODE_ENV = LOCAL_ENV
cli = run_cli
__all__ = ["NODE_ENV", "DataSpace", "NodeProcess", "PostgresDatabases", "cli", "dataspace",
           "free_port", "product_spec"]


class PostgresDatabases:
    """Creates uniquely named databases and drops them all at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self) -> str:
        import psycopg

        name = f"ts_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.clear()


DataSpace = LocalDataSpace


@contextmanager
def dataspace(root: Path, backend: str) -> Iterator[LocalDataSpace]:
    pg = PostgresDatabases() if backend == "postgresql" else None
    try:
        with local_dataspace(root, pg.create if pg else (lambda: "")) as space:
            yield space
    finally:
        if pg:
            pg.drop_all()


def research_offer(modes: list[str], **extra: Any) -> dict[str, Any]:
    """An offer for research use in the given compute modes (the classification floor wants
    the modes constrained explicitly, and a purpose needs a declared vocabulary)."""
    return {"ts:purposes": ["research", "credit-scoring"], **extra, "permission": [
        {"action": "use", "constraint": [
            {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "research"},
            {"leftOperand": "ts:computeMode", "operator": "isAnyOf", "rightOperand": modes}]}]}


def product_spec(path: Path, product_id: str = "bp-stats", **overrides: Any) -> dict[str, Any]:
    """A small general-level product over a CSV file the test writes."""
    path.write_text("age,sex,sbp\n45,F,130\n61,M,142\n38,F,118\n")
    spec: dict[str, Any] = {
        "id": product_id, "title": "Blood pressure statistics",
        "description": "Outpatient systolic blood pressure by age and sex",
        "keywords": ["blood-pressure", "cardiology"], "category": "health/outpatient",
        "level": "general",
        "columns": [{"name": "age", "type": "integer"}, {"name": "sex", "type": "string"},
                    {"name": "sbp", "type": "integer"}],
        "preview": [{"age": 50, "sex": "F", "sbp": 120}],
        "source": {"kind": "csv", "path": str(path)},
        "modes": ["sandbox", "federated"],
        "offers": [research_offer(["sandbox", "federated"])],
    }
    spec.update(overrides)
    return spec


def wait_for(check: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"  # noqa: S101 - a test helper
        time.sleep(every)


def agree(consumer: NodeProcess, provider: NodeProcess, dataset: str,
          offer: str | None = None) -> str:
    """Negotiate `offer` (the dataset's only one when None) and wait for the agreement id."""
    body: dict[str, Any] = {"provider_url": provider.url, "dataset": dataset}
    if offer:
        body["offer"] = offer
    started = consumer.ok("POST", "/api/negotiations", body)

    def done() -> str | None:
        shown = consumer.ok("GET", f"/api/negotiations/{started['pid']}")
        assert shown["state"] != "TERMINATED", shown
        return shown["agreementId"] if shown["state"] == "FINALIZED" else None

    return str(wait_for(done))
