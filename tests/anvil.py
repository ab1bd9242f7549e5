"""A real Anvil node (Foundry's local Ethereum node) for the EVM ledger tests.

Anvil comes from the npm registry, pinned: `@foundry-rs/anvil` pulls the binary for this
platform in as an optional dependency (`@foundry-rs/anvil-<os>-<arch>`). It is installed once
into ${TRUSTSPACE_NPM_CACHE:-~/.cache/trustspace/npm}/anvil-<version> (the cache
scripts/compile-contract uses for solc), with node and npm as the only prerequisites.

We start the binary itself, not npm's `.bin/anvil` (a Node wrapper that runs it as a child), so
that one PID is the node: `stop()` sends SIGTERM and waits for that PID to be gone (Anvil takes
over a second to exit), and `--state FILE` makes Anvil write its chain to FILE on the way out
and load it again on `start()`, on the same port.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account

from tests.nodes import free_port

ANVIL_VERSION = "1.7.1"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def npm_cache() -> Path:
    default = Path.home() / ".cache" / "trustspace" / "npm"
    return Path(os.environ.get("TRUSTSPACE_NPM_CACHE") or default)


def npm_package(package: str, version: str, *, cache_name: str | None = None) -> Path:
    """The folder of an npm package at `version`, installed into the npm cache on first use
    (read in place: nothing of it is copied into the repository). Installed beside the target
    and renamed, so concurrent sessions never see half an install; --ignore-scripts: packages
    here ship what they need (Anvil's binary comes as an optional dependency)."""
    name = cache_name or f"{package.replace('/', '-').lstrip('@')}-{version}"
    prefix = npm_cache() / name
    folder = prefix / "node_modules" / package
    if (folder / "package.json").is_file():
        return folder
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix.name}.", dir=prefix.parent))
    try:
        npm = subprocess.run(["npm", "install", "--prefix", str(tmp), "--no-audit",
                              "--no-fund", "--ignore-scripts", "--save-exact",
                              "--loglevel=error", f"{package}@{version}"],
                             capture_output=True, text=True, timeout=600)
        if npm.returncode != 0:
            raise RuntimeError(f"npm install {package}@{version} failed:\n" + npm.stderr[-3000:])
        try:
            tmp.rename(prefix)
        except OSError:
            if not (folder / "package.json").is_file():  # not a concurrent install that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def anvil_binary() -> Path:
    """The pinned Anvil binary for this platform, installed from npm on first use."""
    system = sys.platform  # linux, darwin, win32: the names npm packages use
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    wrapper = npm_package("@foundry-rs/anvil", ANVIL_VERSION, cache_name=f"anvil-{ANVIL_VERSION}")
    binary = (wrapper.parent / f"anvil-{system}-{arch}" / "bin"
              / ("anvil.exe" if system == "win32" else "anvil"))
    if not binary.is_file():
        raise RuntimeError(f"npm installed no Anvil binary for {system}-{arch} at {binary}")
    return binary


def _die_with_us() -> None:
    """In the child, before exec: on Linux, SIGKILL it when the test process dies, however."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Anvil:
    """One Anvil process on 127.0.0.1; its chain survives stop()/start() through `state`."""

    def __init__(self, workdir: Path, *, extra: tuple[str, ...] = ()) -> None:
        self.binary = anvil_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = workdir / f"anvil-{self.port}.state.json"
        self.log = workdir / f"anvil-{self.port}.log"
        self.args = [
            str(self.binary), "--host", "127.0.0.1", "--port", str(self.port),
            "--state", str(self.state), "--accounts", "1", "--silent", *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        assert self.process is None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=_die_with_us)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.rpc("eth_chainId")
                return
            except (OSError, urllib.error.URLError):
                if self.process.poll() is not None:
                    raise RuntimeError(f"anvil exited ({self.process.returncode}): "
                                       + self.log.read_text(errors="replace")[-2000:]) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Anvil then writes its state) and wait until the PID is gone."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def rpc(self, method: str, *params: Any) -> Any:
        """A raw JSON-RPC call (Anvil's own methods: anvil_setBalance, evm_mine, ...)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        request = urllib.request.Request(self.url, data=body.encode(),  # noqa: S310 (http:)
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            answer = json.load(response)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def fund(self, address: str, wei: int = 10**21) -> None:
        self.rpc("anvil_setBalance", address, hex(wei))

    def funded_key(self) -> str:
        """A fresh secp256k1 chain key whose account holds 1,000 ether here."""
        account = Account.create()
        self.fund(account.address)
        return "0x" + bytes(account.key).hex()

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)


StartAnvil = Callable[..., Anvil]
"""The `start_anvil` fixture (tests/evm_fixtures.py): start a node of one's own."""
