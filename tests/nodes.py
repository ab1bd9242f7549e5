"""Real trustspace nodes for end-to-end tests: each `trustspace serve` runs as its own process on
a loopback port, with its home in a temporary folder and its database in SQLite or PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trustspace", *map(str, args)],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, **(env or {})})


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


@dataclass
class NodeProcess:
    name: str
    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    token: str = field(default="")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log = self.home / "serve.log"
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trustspace", "serve", "--home", str(self.home)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/.well-known/dspace-version", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", json=body, params=params or None,
                             headers={"authorization": f"Bearer {self.token}"}, timeout=60)

    def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.api(method, path, body, **params)
        assert response.status_code < 400, f"{method} {path}: {response.status_code} " \
                                           f"{response.text}"
        return response.json()

    def cli(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--home", self.home)


NODE_ENV = {"TRUSTSPACE_REVOCATION_TTL_SECONDS": "0", "TRUSTSPACE_CRAWL_INTERVAL_SECONDS": "0"}


@dataclass
class DataSpace:
    """An authority and its members, all running."""

    root: Path
    backend: str
    authority: NodeProcess
    members: dict[str, NodeProcess] = field(default_factory=dict)
    pg: PostgresDatabases | None = None

    def _db(self) -> str:
        return self.pg.create() if self.pg else ""

    def _init(self, name: str, *extra: str) -> NodeProcess:
        node = NodeProcess(name, self.root / name, free_port())
        args = ["init", node.home, "--name", name, "--public-url", node.url,
                "--port", str(node.port), *extra]
        db = self._db()
        if db:
            args += ["--database-url", db]
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        node.token = (node.home / "operator.token").read_text().strip()
        return node

    def add_member(self, name: str, roles: str) -> NodeProcess:
        node = self._init(name, "--authority-url", self.authority.url, "--authority-key",
                          self.authority.home / "authority.pub.pem")
        node.start(NODE_ENV)
        self.members[name] = node
        application = node.ok("POST", "/api/enrol", {"roles": roles.split(",")})
        self.authority.ok("POST", f"/api/members/{application['applicationId']}/approve")
        assert node.ok("POST", "/api/enrol/refresh")["member"] is True
        return node

    def stop(self) -> None:
        for node in [*self.members.values(), self.authority]:
            node.stop()
        if self.pg:
            self.pg.drop_all()


@contextmanager
def dataspace(root: Path, backend: str) -> Iterator[DataSpace]:
    pg = PostgresDatabases() if backend == "postgresql" else None
    space = DataSpace(root, backend, NodeProcess("authority", root / "authority", 0), pg=pg)
    try:
        space.authority = space._init("authority", "--authority")
        space.authority.start(NODE_ENV)
        yield space
    finally:
        space.stop()


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
        "offers": [{"permission": [{"action": "use", "constraint": [
            {"leftOperand": "odrl:purpose", "operator": "eq", "rightOperand": "research"}]}]}],
    }
    spec.update(overrides)
    return spec


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1)
