"""pytest fixtures for the EVM ledger: real Anvil nodes (tests/anvil.py), funded chain keys and a
deployed `ReceiptLedger`. A test module loads them with ``pytest_plugins = ["tests.evm_fixtures"]``.

Every node started in the session is stopped at its end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.anvil import Anvil, StartAnvil
from trustspace.ledger.evm import EvmLedger, deploy


@pytest.fixture(scope="session")
def start_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartAnvil]:
    """Start a node of one's own; every one is stopped at the end of the session."""
    nodes: list[Anvil] = []

    def start(*, extra: tuple[str, ...] = ()) -> Anvil:
        node = Anvil(tmp_path_factory.mktemp("anvil"), extra=extra)
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="session")
def anvil(start_anvil: StartAnvil) -> Anvil:
    """The session's shared node (automine: each transaction gets a block at once)."""
    return start_anvil()


@pytest.fixture(scope="session")
def owner_key(anvil: Anvil) -> str:
    return anvil.funded_key()


@pytest.fixture(scope="session")
def ledger_address(anvil: Anvil, owner_key: str) -> str:
    return deploy(anvil.url, owner_key)


@pytest.fixture
def ledger(anvil: Anvil, ledger_address: str, owner_key: str) -> EvmLedger:
    """A client of the session's contract, writing as its owner."""
    return EvmLedger(anvil.url, ledger_address, owner_key)
