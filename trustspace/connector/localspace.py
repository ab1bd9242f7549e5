"""A data space on this machine: an authority and its members, each `trustspace serve` in its
own process on a loopback port. Used by `trustspace demo`, the end-to-end tests and benches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Deterministic for demos and tests: check revocation on every request, crawl only on demand.
LOCAL_ENV = {"TRUSTSPACE_REVOCATION_TTL_SECONDS": "0", "TRUSTSPACE_CRAWL_INTERVAL_SECONDS": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str | Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    # Our own interpreter and CLI; arguments are passed as a list, never through a shell.
    return subprocess.run([sys.executable, "-m", "trustspace", *map(str, args)],  # noqa: S603
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, **(env or {})})


class LocalNodeError(RuntimeError):
    pass


@dataclass
class LocalNode:
    name: str
    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    token: str = field(default="")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "serve.log"

    def start(self, env: dict[str, str] | None = None, timeout: float = 60) -> None:
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI, argument list
                [sys.executable, "-m", "trustspace", "serve", "--home", str(self.home)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalNodeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/.well-known/dspace-version", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise LocalNodeError(f"{self.name} did not start: {self.log.read_text()[-2000:]}")

    def terminate(self) -> None:
        """Ask the node to stop (SIGTERM) without waiting for it; `stop` waits."""
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.terminate()
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
        if response.status_code >= 400:
            raise LocalNodeError(f"{self.name}: {method} {path}: {response.status_code} "
                                 f"{response.text}")
        return response.json()

    def cli(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--home", self.home)


@dataclass
class LocalDataSpace:
    """An authority and its members, all running; `database` makes each node's database URL
    (empty: SQLite in the node's home)."""

    root: Path
    authority: LocalNode
    database: Callable[[], str] = lambda: ""
    env: dict[str, str] = field(default_factory=lambda: dict(LOCAL_ENV))
    members: dict[str, LocalNode] = field(default_factory=dict)

    def init_node(self, name: str, *extra: str) -> LocalNode:
        node = LocalNode(name, self.root / name, free_port())
        args: list[str | Path] = ["init", node.home, "--name", name, "--public-url", node.url,
                                  "--port", str(node.port), *extra]
        db = self.database()
        if db:
            args += ["--database-url", db]
        result = run_cli(*args)
        if result.returncode != 0:
            raise LocalNodeError(f"init {name}: {result.stderr}")
        node.token = (node.home / "operator.token").read_text().strip()
        return node

    def add_member(self, name: str, roles: str, env: Mapping[str, str] | None = None
                   ) -> LocalNode:
        """Start a participant, apply with `roles` (comma-separated), approve, collect. `env`:
        this node's own settings, over the space's."""
        node = self.init_node(name, "--authority-url", self.authority.url, "--authority-key",
                              str(self.authority.home / "authority.pub.pem"))
        node.start({**self.env, **(env or {})})
        self.members[name] = node
        application = node.ok("POST", "/api/enrol", {"roles": roles.split(",")})
        self.authority.ok("POST", f"/api/members/{application['applicationId']}/approve")
        if node.ok("POST", "/api/enrol/refresh")["member"] is not True:
            raise LocalNodeError(f"{name} did not receive its credential")
        return node

    def add_members(self, wanted: Sequence[tuple[str, str]],
                    envs: Mapping[str, Mapping[str, str]] | None = None) -> list[LocalNode]:
        """`add_member` for each (name, roles), started side by side (a node's start is mostly
        its interpreter importing; the authority approves one at a time); `envs`: a member's
        own settings by name."""
        own = envs or {}
        with ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
            return list(pool.map(lambda w: self.add_member(w[0], w[1], own.get(w[0])), wanted))

    def stop(self) -> None:
        """Stop every node: all are asked at once, then each is waited for (a node takes a
        fraction of a second to shut down; one after the other, that adds up)."""
        nodes = [*self.members.values(), self.authority]
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.stop()


@contextmanager
def local_dataspace(root: Path, database: Callable[[], str] = lambda: "",
                    env: dict[str, str] | None = None) -> Iterator[LocalDataSpace]:
    space = LocalDataSpace(root, LocalNode("authority", root / "authority", 0), database,
                           env=dict(env if env is not None else LOCAL_ENV))
    try:
        space.authority = space.init_node("authority", "--authority")
        space.authority.start(space.env)
        yield space
    finally:
        space.stop()
