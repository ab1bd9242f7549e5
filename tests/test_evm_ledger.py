"""The `evm` ledger backend against a real Anvil node (installed from npm on first use)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.anvil import Anvil, StartAnvil
from trustspace.ledger.errors import ChainRejected, LedgerError, LedgerUnavailable
from trustspace.ledger.evm import (
    GAS,
    BatchEvent,
    ChainEntry,
    ChainTx,
    CheckpointEvent,
    EvmLedger,
    ReceiptEvent,
    deploy,
)

pytest_plugins = ["tests.evm_fixtures"]


def entry(kind: int = 1) -> ChainEntry:
    return ChainEntry(receipt_id=os.urandom(32), kind=kind, agreement=os.urandom(32),
                      digest=os.urandom(32), submitter=os.urandom(32))


def receipts(ledger: EvmLedger, from_block: int) -> list[ReceiptEvent]:
    return [e for e in ledger.events(from_block) if isinstance(e, ReceiptEvent)]


def test_each_receipt_is_a_transaction_and_reads_back_exactly(ledger: EvmLedger) -> None:
    entries = [entry(kind) for kind in (1, 2, 5)]
    txs = ledger.record(entries)

    assert len({tx.tx_hash for tx in txs}) == 3
    blocks = [tx.block_number for tx in txs]
    assert all(b is not None for b in blocks) and blocks == sorted(blocks)
    assert all(tx.gas_used is not None and tx.gas_used < GAS["record"] * 0.75 for tx in txs)
    start = blocks[0]
    assert start is not None
    events = receipts(ledger, start)
    assert [(e.receipt_id, e.kind, e.agreement, e.digest, e.submitter) for e in events] == [
        (x.receipt_id, x.kind, x.agreement, x.digest, x.submitter) for x in entries]
    assert all(e.sender == ledger.address for e in events)
    assert [e.tx for e in events] == [ChainTx(t.tx_hash, t.block_number) for t in txs]


def test_a_receipt_id_is_recorded_once_and_find_tells_where(ledger: EvmLedger) -> None:
    first = entry()
    (tx,) = ledger.record([first])
    assert ledger.find(first.receipt_id) == ChainTx(tx.tx_hash, tx.block_number)
    assert ledger.find(os.urandom(32)) is None

    with pytest.raises(ChainRejected) as refused:
        ledger.record([first])
    assert refused.value.reason == "already-recorded"
    assert refused.value.fields == {"receiptId": first.receipt_id,
                                    "blockNumber": tx.block_number}

    # The same id twice in one pipeline: the first is written, the second refused.
    twice = entry()
    with pytest.raises(ChainRejected, match=r"transaction 2 of 2") as refused:
        ledger.record([twice, twice])
    assert refused.value.reason == "already-recorded"
    found = ledger.find(twice.receipt_id)
    assert found is not None and found.block_number is not None
    assert [e.receipt_id for e in receipts(ledger, found.block_number)] == [twice.receipt_id]


def test_record_sends_a_window_at_a_time_and_stops_at_a_refusal(ledger: EvmLedger) -> None:
    ledger.window = 2
    done = entry()
    ledger.record([done])
    batch = [entry(), entry(), entry(), done, entry(), entry()]
    with pytest.raises(ChainRejected, match=r"transaction 4 of 6") as refused:
        ledger.record(batch)
    assert refused.value.reason == "already-recorded"
    assert [ledger.find(e.receipt_id) is not None for e in batch] == [
        True, True, True, True, False, False]  # the third window was not sent


def test_a_batch_root_is_anchored_once(ledger: EvmLedger) -> None:
    root, first, last = os.urandom(32), os.urandom(32), os.urandom(32)
    tx = ledger.record_batch(root, 10_000, first, last)
    assert tx.gas_used is not None and tx.gas_used < GAS["recordBatch"] * 0.75
    assert ledger.find_batch(root) == ChainTx(tx.tx_hash, tx.block_number)
    assert ledger.find_batch(os.urandom(32)) is None
    assert tx.block_number is not None
    (event,) = ledger.events(tx.block_number)
    assert event == BatchEvent(root, 10_000, first, last, ledger.address,
                               ChainTx(tx.tx_hash, tx.block_number), 0)

    with pytest.raises(ChainRejected) as refused:
        ledger.record_batch(root, 10_000, first, last)
    assert refused.value.reason == "batch-already-anchored"
    with pytest.raises(ChainRejected) as refused:
        ledger.record_batch(os.urandom(32), 0, first, last)
    assert refused.value.reason == "empty-batch"


def test_checkpoint_sizes_only_grow(ledger: EvmLedger) -> None:
    origin = os.urandom(32)
    assert ledger.checkpoint_of(origin) == (0, bytes(32))
    root5, root9 = os.urandom(32), os.urandom(32)
    first = ledger.anchor(origin, 5, root5, b"\x05" * 32)
    second = ledger.anchor(origin, 9, root9, b"\x09" * 32)
    assert second.gas_used is not None and second.gas_used < GAS["anchor"] * 0.75
    assert ledger.checkpoint_of(origin) == (9, root9)

    for size, root, reason in [(7, os.urandom(32), "checkpoint-not-newer"),
                               (9, root9, "checkpoint-not-newer"),
                               (9, os.urandom(32), "checkpoint-conflict"),
                               (0, bytes(32), "checkpoint-not-newer")]:
        with pytest.raises(ChainRejected) as refused:
            ledger.anchor(origin, size, root, os.urandom(32))
        assert refused.value.reason == reason
        assert refused.value.fields["origin"] == origin
    assert ledger.checkpoint_of(origin) == (9, root9)

    assert first.block_number is not None
    anchored = [e for e in ledger.events(first.block_number) if isinstance(e, CheckpointEvent)]
    assert [(e.origin, e.size, e.root_hash, e.checkpoint_digest) for e in anchored] == [
        (origin, 5, root5, b"\x05" * 32), (origin, 9, root9, b"\x09" * 32)]


def test_only_accounts_the_owner_authorised_write(anvil: Anvil, ledger: EvmLedger) -> None:
    stranger = EvmLedger(anvil.url, ledger.contract_address, anvil.funded_key())
    assert not stranger.is_authorised(stranger.address)
    start = ledger.head()
    with pytest.raises(ChainRejected) as refused:
        stranger.record([entry()])
    assert refused.value.reason == "not-authorised"
    with pytest.raises(ChainRejected) as refused:
        stranger.anchor(os.urandom(32), 1, os.urandom(32), os.urandom(32))
    assert refused.value.reason == "not-authorised"
    with pytest.raises(ChainRejected) as refused:
        stranger.authorise(stranger.address)
    assert refused.value.reason == "not-owner"
    assert ledger.events(start + 1) == []

    allowed = ledger.authorise(stranger.address)
    assert allowed.gas_used is not None and allowed.gas_used < GAS["authorise"] * 0.75
    assert stranger.is_authorised(stranger.address)
    (tx,) = stranger.record([entry()])
    assert tx.block_number is not None
    assert [e.sender for e in receipts(ledger, tx.block_number)] == [stranger.address]
    ledger.revoke(stranger.address)
    with pytest.raises(ChainRejected) as refused:
        stranger.record([entry()])
    assert refused.value.reason == "not-authorised"


def test_wait_returns_once_the_transaction_is_confirmations_deep(
        start_anvil: StartAnvil) -> None:
    node = start_anvil()
    key = node.funded_key()
    address = deploy(node.url, key)
    node.rpc("evm_setAutomine", False)  # from here on, blocks come only from node.mine()
    ledger = EvmLedger(node.url, address, key, confirmations=3, timeout=0.3)
    (sent,) = ledger.submit([entry()])
    assert sent.block_number is None
    with pytest.raises(LedgerUnavailable) as late:
        ledger.wait(sent)  # not mined: a worker would come back later
    assert late.value.reason == "timeout"

    ledger.timeout = 30.0
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(ledger.wait, sent)
        for _ in range(2):
            node.mine()
            time.sleep(0.1)
            assert not waiting.done()
        node.mine()
        mined = waiting.result(timeout=10)
    assert mined.tx_hash == sent.tx_hash
    assert mined.block_number == node.block_number() - 2


def test_a_stopped_node_is_unavailable_and_nothing_is_written_twice_after_restart(
        start_anvil: StartAnvil) -> None:
    node = start_anvil()
    key = node.funded_key()
    address = deploy(node.url, key)
    ledger = EvmLedger(node.url, address, key)
    before = [entry(), entry()]
    written = ledger.record(before)
    # A worker sends, and crashes before it learns the outcome.
    lost = entry()
    (sent,) = ledger.submit([lost])
    node.mine()  # automine is asynchronous: be sure its block exists before the node stops

    node.stop()
    later = entry()
    with pytest.raises(LedgerUnavailable) as down:
        ledger.record([later])
    assert down.value.reason == "unreachable"
    with pytest.raises(LedgerUnavailable):
        ledger.find(later.receipt_id)
    node.start()  # same port, same chain (--state)

    restarted = EvmLedger(node.url, address, key)  # a new worker: nonce from the chain
    assert [restarted.find(e.receipt_id) for e in before] == [
        ChainTx(t.tx_hash, t.block_number) for t in written]
    found = restarted.find(lost.receipt_id)  # so it is not sent again
    assert found is not None and found.tx_hash == sent.tx_hash
    assert restarted.find(later.receipt_id) is None
    ledger.record([later])  # the first client goes on: it counts its nonce again
    with pytest.raises(ChainRejected) as refused:
        restarted.record([before[0]])
    assert refused.value.reason == "already-recorded"

    ids = [e.receipt_id for e in receipts(restarted, 0)]
    assert len(ids) == len(set(ids)) == 4
    assert set(ids) == {before[0].receipt_id, before[1].receipt_id, lost.receipt_id,
                        later.receipt_id}


def test_no_contract_at_the_address(anvil: Anvil, owner_key: str) -> None:
    nowhere = EvmLedger(anvil.url, "0x" + os.urandom(20).hex(), owner_key)
    with pytest.raises(LedgerError) as error:
        nowhere.find(os.urandom(32))
    assert error.value.reason == "no-contract"


def test_entries_are_32_byte_values() -> None:
    with pytest.raises(ValueError, match="receipt_id"):
        ChainEntry(b"short", 1, bytes(32), bytes(32), bytes(32))
    with pytest.raises(ValueError, match="kind"):
        ChainEntry(bytes(32), 256, bytes(32), bytes(32), bytes(32))
